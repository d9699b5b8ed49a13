"""Who is calling: the principal the gateway derives from a JWT or an API key."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, SecretStr

from models.common import Public, Role, Strict, UtcDatetime


class Principal(BaseModel):
    tenant_id: UUID
    user_id: UUID
    role: Role
    auth: Literal["api_key", "jwt", "supabase", "internal"]
    key_id: UUID | None = None

    @property
    def rate_key(self) -> str:
        return f"{self.tenant_id}:{self.key_id or self.user_id}"


class TokenRequest(Strict):
    api_key: str | None = Field(None, description="Or send the key in X-API-Key.")


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class TenantCreated(BaseModel):
    tenant_id: UUID
    user_id: UUID
    api_key: str
    key_id: UUID | None = None


class ApiKeyCreated(BaseModel):
    id: UUID = Field(description="The new key's id (DELETE /api/keys/{key_id} revokes it)")
    tenant_id: UUID
    user_id: UUID
    role: Role
    api_key: str


class ApiKeyPublic(Public):
    id: UUID
    tenant_id: UUID
    user_id: UUID
    name: str
    prefix: str
    role: Role
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None


class UserPublic(Public):
    id: UUID
    tenant_id: UUID
    name: str
    role: Role
    supabase_sub: str | None = None
    created_at: UtcDatetime


# --- sign-up and sign-in through Supabase Auth (api/routes/signin.py) -------------------------------

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"


class SignInRequest(Strict):
    """POST /auth/login and /auth/signup: Supabase Auth checks the email and password; specmill then finds
    (or, on a first sign-in, makes) the caller's tenants."""

    email: str = Field(min_length=3, max_length=320, pattern=EMAIL_PATTERN)
    password: SecretStr = Field(min_length=1, max_length=1024, description="Supabase Auth judges its strength.")
    invitation: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="An invitation's token (POST /api/invitations): join its tenant with its role.",
    )
    tenant_name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A first sign-in without an invitation makes a tenant of this name (default: the "
        "email's local part); ignored otherwise.",
    )


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=1, max_length=2048)


class LogoutRequest(Strict):
    scope: Literal["local", "global", "others"] = Field(
        default="local",
        description="local: this session's refresh token; global: every session of the user; others: every "
        "session but this one. Access tokens already issued work until they expire.",
    )


class Membership(BaseModel):
    """A tenant a Supabase subject is linked to, as its user of that tenant (store/users.py)."""

    tenant_id: UUID
    user_id: UUID
    role: Role


class TenantRole(BaseModel):
    id: UUID = Field(description="The tenant's id: send it as X-Tenant-ID when the user is in several tenants.")
    role: Role = Field(description="The user's role there (read from the database on every request).")


class SignInResponse(BaseModel):
    """POST /auth/login, /auth/signup (when Supabase answers with a session) and /auth/refresh.

    `access_token` is Supabase's own access token: send it as `Authorization: Bearer ...` (with
    `X-Tenant-ID` when `tenants` has more than one); `refresh_token` goes to POST /auth/refresh before
    `expires_in` seconds have passed. `tenants` are every tenant this user is in, with its role there.
    """

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    tenants: list[TenantRole]


# --- invitations (api/routes/invitations.py) -------------------------------------------------------

MAX_INVITATION_SECONDS = 30 * 86400


class InvitationCreate(Strict):
    role: Role
    expires_in_seconds: int = Field(
        7 * 86400, ge=60, le=MAX_INVITATION_SECONDS, description="How long it may be used: 60 s to 30 days."
    )
    email: str | None = Field(
        None,
        min_length=3,
        max_length=320,
        pattern=EMAIL_PATTERN,
        description="Only a Supabase user of this address may use it (compared case-insensitively).",
    )


class InvitationPublic(Public):
    id: UUID
    tenant_id: UUID
    role: Role
    email: str | None
    prefix: str
    created_by: UUID
    created_at: UtcDatetime
    expires_at: UtcDatetime
    used_at: UtcDatetime | None
    used_by: UUID | None = Field(description="The user it made.")
    revoked_at: UtcDatetime | None


class InvitationCreated(InvitationPublic):
    token: str = Field(description="Shown once: POST /auth/signup or /auth/login with it as `invitation`.")
