"""The baselines of bench/gateway.py: a bare FastAPI app, no authentication, no limits, no middleware.

- GET /bare answers the JSON body read from --body (the bench passes the body the gateway returned for
  GET /api/templates), serialised on every request as FastAPI does for a plain dict: a floor that runs
  no query at all.
- GET /bare/templates runs the gateway's query: `store.templates.list_templates` for the tenant given
  by --tenant, on a pool made by `store.db.create_pool` from DATABASE_URL, with the same query
  parameters as GET /api/templates, answering the page as pydantic serialises it. Everything the
  gateway does beyond this is its own cost: authentication, rate limits, middleware, routing among its
  routes, the access log.

Served by uvicorn with the same options as `specmill serve gateway` (workers/cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from uuid import UUID

import uvicorn
from fastapi import FastAPI, Query, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.common import Page  # noqa: E402
from models.settings import Settings  # noqa: E402
from store.db import create_pool  # noqa: E402
from store.paging import MAX_LIMIT  # noqa: E402
from store.templates import list_templates  # noqa: E402


def create_app(body: dict, tenant_id: UUID | None = None, settings: Settings | None = None) -> FastAPI:
    pools = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if tenant_id is not None:
            pools.append(await create_pool(settings or Settings()))
        try:
            yield
        finally:
            for pool in pools:
                await pool.close()

    app = FastAPI(title="bare", lifespan=lifespan)

    @app.get("/bare")
    async def bare() -> dict:
        return body

    @app.get("/bare/templates")
    async def templates(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        name: str | None = None,
        version: str | None = None,
        builtin: bool | None = None,
    ) -> Response:
        assert tenant_id is not None, "start with --tenant"
        items, nxt = await list_templates(
            pools[0], tenant_id=tenant_id, name=name, version=version, limit=limit, cursor=cursor, builtin=builtin
        )
        return Response(
            Page(items=items, next_cursor=nxt).model_dump_json(by_alias=True), media_type="application/json"
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", required=True, help="a JSON file: the body GET /bare answers with")
    parser.add_argument("--tenant", type=UUID, help="the tenant GET /bare/templates lists (DATABASE_URL)")
    args = parser.parse_args()
    with open(args.body, encoding="utf-8") as f:
        body = json.load(f)
    # Keep these options identical to workers/cli.py `serve`.
    uvicorn.run(
        create_app(body, args.tenant),
        host=args.host,
        port=args.port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
