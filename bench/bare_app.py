"""The baseline for bench/gateway.py: a bare FastAPI app, one unauthenticated endpoint.

It answers GET /bare with the JSON body read from --body (the bench passes the body the gateway
returned for GET /api/templates), serialised on every request as FastAPI does for a plain dict.
Served by uvicorn with the same options as `specmill serve gateway` (workers/cli.py), so the
difference in the figures is the gateway's own work: auth lookup, RLS transaction, query,
rate limiting, response model validation and middleware.
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI


def create_app(body: dict) -> FastAPI:
    app = FastAPI(title="bare")

    @app.get("/bare")
    async def bare() -> dict:
        return body

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", required=True, help="a JSON file: the body to answer with")
    args = parser.parse_args()
    with open(args.body, encoding="utf-8") as f:
        body = json.load(f)
    # Keep these options identical to workers/cli.py `serve`.
    uvicorn.run(
        create_app(body),
        host=args.host,
        port=args.port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
