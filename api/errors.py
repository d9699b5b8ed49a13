"""Every error leaves as JSON with a `detail`; no stack trace ever reaches a client."""

from __future__ import annotations

import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.openapi_links import add_links
from api.security.auth import AuthError
from knowledge.errors import EmbedderUnavailable, VectorStoreUnavailable
from store.errors import Busy, Conflict, DomainError, Forbidden, Gone, Invalid, NotFound

log = logging.getLogger("specmill.api")

_STATUS = {NotFound: 404, Conflict: 409, Invalid: 422, Forbidden: 403, Busy: 429, Gone: 410}


class ServiceUnavailable(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


# Every 422 is `{"detail": ...}`: FastAPI's request validation gives a list of {loc, msg, type}; a
# domain error (Invalid) a sentence, sometimes with more fields (errors, problems). The OpenAPI says so.
UNPROCESSABLE = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail"],
    "additionalProperties": True,
    "properties": {
        "detail": {
            "title": "Detail",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}],
        }
    },
}


def document_errors(app: FastAPI) -> None:
    """app.openapi() with the 422 shape the handlers below really produce, and links between operations."""
    generate = app.openapi

    def openapi() -> dict:
        schema = app.openapi_schema
        if schema is None:
            schema = generate()  # kept as app.openapi_schema: changed in place, once
            schemas = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = UNPROCESSABLE
            add_links(schema)
        return schema

    app.openapi = openapi


def install(app: FastAPI) -> None:
    document_errors(app)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, err: DomainError) -> JSONResponse:
        headers = {"Retry-After": "30"} if isinstance(err, Busy) else None
        return JSONResponse(
            {"detail": err.message, **err.extra}, status_code=_STATUS.get(type(err), 400), headers=headers
        )

    @app.exception_handler(AuthError)
    async def _auth(_: Request, err: AuthError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(_: Request, err: ServiceUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"{err.what} is unavailable, try again shortly"}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(VectorStoreUnavailable)
    async def _vectors_down(request: Request, err: VectorStoreUnavailable) -> JSONResponse:
        log.warning("vector store unavailable on %s %s: %s", request.method, request.url.path, err)
        return await _unavailable(request, ServiceUnavailable("the vector store (Qdrant)"))

    @app.exception_handler(EmbedderUnavailable)
    async def _embedder_down(_: Request, err: EmbedderUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503, headers={"Retry-After": "30"})

    @app.exception_handler(OSError)
    @app.exception_handler(asyncpg.CannotConnectNowError)
    @app.exception_handler(asyncpg.TooManyConnectionsError)
    @app.exception_handler(asyncpg.ConnectionDoesNotExistError)
    async def _database_down(request: Request, err: Exception) -> JSONResponse:
        log.warning("database unreachable on %s %s: %s", request.method, request.url.path, err)
        return await _unavailable(request, ServiceUnavailable("the database"))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in err.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)
