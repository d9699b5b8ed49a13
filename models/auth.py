"""Who is calling: the principal the gateway derives from a JWT or an API key."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

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
