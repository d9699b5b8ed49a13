"""Tenants' own provider API keys: write-only through the API, only a hint ever comes back."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field

from models.common import Public, Strict, UtcDatetime


class Provider(str, Enum):
    openai = "openai"
    anthropic = "anthropic"
    vllm = "vllm"


# The seed models each provider's key serves.
PROVIDER_MODELS: dict[Provider, tuple[str, ...]] = {
    Provider.openai: ("openai_api",),
    Provider.anthropic: ("anthropic_api",),
    Provider.vllm: ("deepseek_8b",),
}


class ProviderKeySet(Strict):
    api_key: str = Field(
        ...,
        min_length=8,
        max_length=512,
        pattern=r"^[\x21-\x7e]+$",
        description="The provider's API key (printable ASCII, no spaces). Stored encrypted; never returned.",
        json_schema_extra={"writeOnly": True},
    )


class ProviderKeyPublic(Public):
    provider: Provider
    key_hint: str = Field(description="The key's last 4 characters.")
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ProviderInfo(BaseModel):
    provider: Provider
    models: list[str] = Field(description="The models this provider's key serves.")
    tenant_key: ProviderKeyPublic | None = Field(None, description="The tenant's own key (hint only), if stored.")
    platform_key: bool = Field(description="Whether the platform has a key of its own for this provider.")
