"""/api/providers: a tenant's own provider API keys (admins). Write-only: only a hint comes back.

The generation worker uses a tenant's key for that tenant's requests ahead of the platform's.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from api.deps import PoolDep, PrincipalDep, SettingsDep
from models.common import Page
from models.providers import PROVIDER_MODELS, Provider, ProviderInfo, ProviderKeyPublic, ProviderKeySet
from models.settings import Settings
from store import provider_keys

router = APIRouter(tags=["providers"])

_PLATFORM_KEY = {
    Provider.openai: "openai_api_key",
    Provider.anthropic: "anthropic_api_key",
    Provider.vllm: "vllm_api_key",
}


def _secret(settings: Settings) -> str:
    if not settings.provider_keys_secret:
        raise HTTPException(503, "tenant provider keys are disabled: PROVIDER_KEYS_SECRET is not set on the server")
    return settings.provider_keys_secret


@router.get("/providers", response_model=Page[ProviderInfo], summary="Providers and the tenant's keys (hints only)")
async def list_providers(pool: PoolDep, settings: SettingsDep, p: PrincipalDep):
    """Every provider, in one page (next_cursor is null): its models and whether a key is set."""
    stored = {k.provider: k for k in await provider_keys.list_keys(pool, tenant_id=p.tenant_id)}
    items = [
        ProviderInfo(
            provider=prov,
            models=list(PROVIDER_MODELS[prov]),
            tenant_key=stored.get(prov),
            platform_key=bool(getattr(settings, _PLATFORM_KEY[prov])),
        )
        for prov in Provider
    ]
    return Page(items=items)


@router.put(
    "/providers/{provider}/key",
    response_model=ProviderKeyPublic,
    summary="Store or replace the tenant's key (write-only)",
)
async def set_provider_key(
    provider: Provider, body: ProviderKeySet, pool: PoolDep, settings: SettingsDep, p: PrincipalDep
):
    return await provider_keys.set_key(
        pool, tenant_id=p.tenant_id, provider=provider, api_key=body.api_key, secret=_secret(settings)
    )


@router.delete("/providers/{provider}/key", status_code=204, summary="Forget the tenant's key")
async def delete_provider_key(provider: Provider, pool: PoolDep, p: PrincipalDep) -> Response:
    await provider_keys.delete_key(pool, tenant_id=p.tenant_id, provider=provider)
    return Response(status_code=204)
