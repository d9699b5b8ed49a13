"""What a tenant's own tree checkpoint is trained on: its Python snippets and the generated code that passed
its tests (codegen/tree/build.py: build_tenant)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from store.db import tenant_tx

MAX_BYTES = 20_000  # a longer file is left out: training wants functions, not modules of thousands of lines


async def tenant_code(pool: asyncpg.Pool, *, tenant_id: UUID, limit: int = 5000) -> list[str]:
    """The tenant's Python snippets and passing generated files, newest first, at most `limit`."""
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            """select content from (
                   select content, created_at from code_snippets
                    where tenant_id = $1 and lower(language) = 'python' and octet_length(content) <= $2
                   union all
                   select content, created_at from artifacts
                    where tenant_id = $1 and test_status = 'passed' and path like '%.py'
                      and octet_length(content) <= $2
               ) code order by created_at desc limit $3""",
            tenant_id,
            MAX_BYTES,
            limit,
        )
    return [r["content"] for r in rows]
