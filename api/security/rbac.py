"""Role-based access: one table says which role a method on a path needs.

viewer reads; editor writes instances, projects (their settings too) and tasks (and snippets, knowledge,
generation); admin manages templates, API keys, invitations, the tenant's pipeline settings (/api/settings) and
trains its technique models (/api/techniques/.../train);
owner manages admins (checked where keys are made) and invites owners (api/routes/invitations.py).
The same table guards in-process routes and the gateway's forwarding to separate services.
"""

from __future__ import annotations

from models.common import Role

READ_METHODS = {"GET", "HEAD", "OPTIONS"}

# First matching prefix wins; the role is what a write (POST/PUT/PATCH/DELETE) needs.
WRITE_ROLES: list[tuple[str, Role]] = [
    ("/api/templates", Role.admin),
    ("/api/keys", Role.admin),
    ("/api/invitations", Role.admin),  # an invitation grants at most its creator's role
    ("/api/providers", Role.admin),  # tenants' provider API keys
    ("/api/settings", Role.admin),  # the tenant's pipeline defaults (a project's own: editor, below)
    ("/api/similar", Role.viewer),  # a search, sent as POST
    ("/api/instances", Role.editor),
    ("/api/projects", Role.editor),
    ("/api/tasks", Role.editor),
    ("/api/snippets", Role.editor),
    ("/api/knowledge", Role.editor),
    ("/api/generate", Role.editor),
    ("/api/techniques", Role.admin),  # training a technique's model for the tenant (CPU-heavy)
]


# Reads are open to viewers, except these.
READ_ROLES: list[tuple[str, Role]] = [
    ("/metrics", Role.admin),  # the process's Prometheus metrics
    ("/api/usage", Role.admin),  # what the tenant used: an admin's business, like its keys
    ("/api/keys", Role.admin),  # who holds which key is an admin's business
    ("/api/invitations", Role.admin),  # and who was invited
    ("/api/providers", Role.admin),  # so is which provider keys the tenant stores (hints only)
]


def _match(table: list[tuple[str, Role]], path: str) -> Role | None:
    for prefix, role in table:
        if path == prefix or path.startswith(prefix + "/"):
            return role
    return None


def required_role(method: str, path: str) -> Role:
    if method.upper() in READ_METHODS:
        return _match(READ_ROLES, path) or Role.viewer
    return _match(WRITE_ROLES, path) or Role.owner  # a write the table does not know: least privilege
