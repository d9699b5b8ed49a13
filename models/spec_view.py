"""The parts of a spec instance the generator uses, by role, read from the schema's `x-specmill` hints.

Template-level hint: {"language": ..., "path": "{function_name}.py"}. Property roles: `name`,
`description`, `signature`, `tests`, `items` (a list of {kind, name, signature, description}),
`context`, `imports` (import lines the module must have) and `setup` (lines the tests run after).
Properties without a role still reach the prompt as requirements, so a tenant's own template works
without any template-specific code. Pure: the API, the workers and the eval share it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from models import spec_paths
from models.spec_paths import object_at

ROLES = ("name", "description", "signature", "tests", "items", "context", "imports", "setup")


class SpecView(BaseModel):
    """The parts of a spec instance the generator uses, by role: read once per generation (the job's
    `view`, models/generation.py: generation_job) and carried to the activities that need it."""

    language: str = "python"
    path: str = "main.py"
    name: str | None = None
    description: str | None = None
    signatures: list[str] = Field(default_factory=list)
    tests: list[str] = Field(default_factory=list)
    items: list[dict[str, Any]] = Field(default_factory=list)
    context: list[str] = Field(default_factory=list)
    requirements: list[str] = Field(default_factory=list)
    imports: list[str] = Field(default_factory=list)  # import lines the module must have
    setup: list[str] = Field(default_factory=list)  # lines run before the tests, in their namespace

    def query(self) -> str:
        """What retrieval searches with: the description and the signatures."""
        return "\n".join(filter(None, [self.description, *self.signatures]))


def spec_view(schema: dict[str, Any], values: dict[str, Any]) -> SpecView:
    hints = object_at(schema, "x-specmill")
    view = SpecView(language=str(hints.get("language", "python")))
    props = object_at(schema, "properties")
    for key, value in values.items():
        prop = props.get(key)
        prop_hints = prop.get("x-specmill") if isinstance(prop, dict) else None  # a property may be `true`
        role = prop_hints.get("role") if isinstance(prop_hints, dict) else None
        if role == "name":
            view.name = str(value)
        elif role == "description":
            view.description = str(value)
        elif role == "signature":
            view.signatures += [str(v) for v in (value if isinstance(value, list) else [value])]
        elif role == "tests":
            view.tests += [str(v) for v in (value if isinstance(value, list) else [value])]
        elif role == "items" and isinstance(value, list):
            view.items += [v for v in value if isinstance(v, dict)]
        elif role in ("imports", "setup"):
            getattr(view, role).extend(str(v) for v in (value if isinstance(value, list) else [value]))
        elif role == "context":
            view.context.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        else:
            view.requirements.append(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")
    # The path hint is checked when the template is saved and the rendered path when the instance is
    # (models.spec_paths); one that still leaves the project's tree falls back to main.<ext> here.
    view.path = spec_paths.file_path(schema, values, view.name)
    return view
