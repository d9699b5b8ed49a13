"""Tenants' provider API keys, encrypted at rest with Fernet keyed from PROVIDER_KEYS_SECRET.

The ciphertext also seals the tenant and the provider, so a row copied to another tenant or
provider does not decrypt. Only `get_plaintext` (for the generation worker) returns a key.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from uuid import UUID

import asyncpg
from cryptography.fernet import Fernet, InvalidToken

from models.providers import Provider, ProviderKeyPublic
from store.db import returned, tenant_tx
from store.errors import DomainError, NotFound

_COLS = "provider, key_hint, created_at, updated_at"
HINT_CHARS = 4


class ProviderKeyUnreadable(DomainError):
    """A stored key does not decrypt: PROVIDER_KEYS_SECRET changed, or the row was tampered with."""


@lru_cache(maxsize=8)
def _fernet(secret: str) -> Fernet:
    if not secret:
        raise ValueError("PROVIDER_KEYS_SECRET is not set")
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


def _sealed(tenant_id: UUID, provider: Provider, api_key: str) -> bytes:
    return f"{tenant_id}|{provider.value}|{api_key}".encode()


def encrypt(secret: str, *, tenant_id: UUID, provider: Provider, api_key: str) -> str:
    return _fernet(secret).encrypt(_sealed(tenant_id, provider, api_key)).decode()


def decrypt(secret: str, *, tenant_id: UUID, provider: Provider, ciphertext: str) -> str:
    try:
        plain = _fernet(secret).decrypt(ciphertext.encode()).decode()
    except (InvalidToken, UnicodeDecodeError) as err:
        raise ProviderKeyUnreadable(
            f"the tenant's {provider.value} key cannot be decrypted (was PROVIDER_KEYS_SECRET changed?); store it again"
        ) from err
    owner, _, rest = plain.partition("|")
    sealed_provider, _, api_key = rest.partition("|")
    if owner != str(tenant_id) or sealed_provider != provider.value:
        raise ProviderKeyUnreadable(f"the stored {provider.value} key belongs to another tenant or provider")
    return api_key


def _model(row: asyncpg.Record) -> ProviderKeyPublic:
    return ProviderKeyPublic.model_validate(dict(row))


async def set_key(
    pool: asyncpg.Pool, *, tenant_id: UUID, provider: Provider, api_key: str, secret: str
) -> ProviderKeyPublic:
    """Store (or replace) the tenant's key for `provider`; answers the hint and timestamps only."""
    ciphertext = encrypt(secret, tenant_id=tenant_id, provider=provider, api_key=api_key)
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""insert into tenant_provider_keys (tenant_id, provider, ciphertext, key_hint)
                values ($1, $2, $3, $4)
                on conflict (tenant_id, provider) do update
                  set ciphertext = excluded.ciphertext, key_hint = excluded.key_hint,
                      updated_at = now() at time zone 'utc'
                returning {_COLS}""",
            tenant_id,
            provider.value,
            ciphertext,
            api_key[-HINT_CHARS:],
        )
    return _model(returned(row))


async def delete_key(pool: asyncpg.Pool, *, tenant_id: UUID, provider: Provider) -> None:
    async with tenant_tx(pool, tenant_id) as conn:
        deleted = await conn.fetchval(
            "delete from tenant_provider_keys where tenant_id = $1 and provider = $2 returning provider",
            tenant_id,
            provider.value,
        )
    if deleted is None:
        raise NotFound(f"no {provider.value} key is stored for this tenant")


async def list_keys(pool: asyncpg.Pool, *, tenant_id: UUID) -> list[ProviderKeyPublic]:
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"select {_COLS} from tenant_provider_keys where tenant_id = $1 order by provider", tenant_id
        )
    return [_model(r) for r in rows]


async def get_plaintext(
    pool: asyncpg.Pool, *, tenant_id: UUID, provider: Provider | str, secret: str | None
) -> str | None:
    """The tenant's own key for `provider` (None: it has none, use the platform's).
    For the generation worker only; raises ProviderKeyUnreadable if it does not decrypt."""
    provider = Provider(provider)
    async with tenant_tx(pool, tenant_id) as conn:
        ciphertext = await conn.fetchval(
            "select ciphertext from tenant_provider_keys where tenant_id = $1 and provider = $2",
            tenant_id,
            provider.value,
        )
    if ciphertext is None:
        return None
    if not secret:
        raise ProviderKeyUnreadable(f"the tenant's {provider.value} key is stored but PROVIDER_KEYS_SECRET is not set")
    return decrypt(secret, tenant_id=tenant_id, provider=provider, ciphertext=ciphertext)
