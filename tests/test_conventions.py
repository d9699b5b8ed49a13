"""The API's conventions, checked on every route /openapi.json lists, so that a new route that breaks one
fails here: lists are `{"items": [...], "next_cursor": ...}` (paginated with `limit` and `cursor`, or
declared a one-page list below), a resource's own id is `id`, every timestamp carries its zone, and
every error is JSON with a `detail`. The docs pages work with no network."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import pytest

# GET routes whose last path segment is plural but whose answer is one object, not a list.
NOT_LISTS = {"settings", "changes"}
# Lists that are short and fixed by the platform: one page, next_cursor null (no limit/cursor to take).
ONE_PAGE = {
    "/api/models",
    "/api/techniques",
    "/api/providers",
    "/api/knowledge/embedders",
    "/api/projects/{project_id}/templates",
}
# Known lists: the detector below must find each of them (so that it cannot silently find none).
KNOWN_LISTS = {
    "/api/keys",
    "/api/templates",
    "/api/instances",
    "/api/projects",
    "/api/tasks",
    "/api/events",
    "/api/snippets",
    "/api/projects/{project_id}/specs",
    "/api/projects/{project_id}/artifacts",
    "/api/knowledge/{project_id}",
} | ONE_PAGE
CURSORS = {"cursor", "after"}  # after: the event log pages by its own seq numbers (next_cursor is a seq)
NOT_JSON = {"/api/events/stream", "/api/projects/{project_id}/artifacts.zip"}  # SSE, a zip
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


@pytest.fixture(scope="module")
async def schema(api) -> dict[str, Any]:
    resp = await api.get("/openapi.json")
    assert resp.status_code == 200, resp.text
    return resp.json()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _operations(schema: dict):
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def _json_2xx(schema: dict, op: dict):
    """(status, resolved schema) of each 2xx JSON answer the operation documents."""
    for code, response in op.get("responses", {}).items():
        body = response.get("content", {}).get("application/json", {}).get("schema")
        if code.startswith("2") and body:
            yield code, _resolve(schema, body)


def _is_list(path: str, method: str, op: dict, schema: dict) -> bool:
    if method != "get" or path in NOT_JSON:
        return False
    last = [s for s in path.split("/") if s and not s.startswith("{")][-1]
    plural = last.endswith("s") and last not in NOT_LISTS and not path.endswith("}")
    bare = any(s.get("type") == "array" for _, s in _json_2xx(schema, op))
    return plural or bare or "list" in op.get("operationId", "")


def _query_params(op: dict) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


def _words(name: str) -> set[str]:
    """A schema's or a path segment's nouns, singular: `ApiKeyCreated` -> {api, key, created}."""
    return {w.lower().removesuffix("s") for w in re.findall(r"[A-Z][a-z]*|[a-z]+", name)}


async def test_every_list_is_items_and_next_cursor(schema):
    lists = {path for path, method, op in _operations(schema) if _is_list(path, method, op, schema)}
    assert KNOWN_LISTS <= lists, f"the detector misses {KNOWN_LISTS - lists}"
    for path, method, op in _operations(schema):
        if path not in lists or method != "get":
            continue
        answers = list(_json_2xx(schema, op))
        assert answers, f"GET {path}: a list documents no JSON answer"
        for code, body in answers:
            props = body.get("properties", {})
            assert body.get("type") == "object", f"GET {path} {code}: a bare {body.get('type')}, not a page"
            assert {"items", "next_cursor"} <= set(props), f"GET {path} {code}: has {sorted(props)}"
            assert props["items"].get("type") == "array", f"GET {path}: items is not an array"
        if path not in ONE_PAGE:
            query = _query_params(op)
            assert "limit" in query and query & CURSORS, f"GET {path} can grow: it takes limit and cursor"


async def test_no_answer_names_a_list_results(schema):
    """Every collection in an answer is `items` (POST /api/similar too), never `results` or `data`."""
    for path, method, op in _operations(schema):
        for code, body in _json_2xx(schema, op):
            props = set(body.get("properties", {}))
            assert not props & {"results", "data", "rows"}, f"{method.upper()} {path} {code}: {sorted(props)}"


async def test_a_resource_is_identified_by_id(schema):
    """No answer calls its own resource's id `<resource>_id` (POST /api/keys once answered `key_id`), and
    every 201 carries the new resource's `id`."""
    for path, method, op in _operations(schema):
        resource = _words(next((s for s in reversed(path.split("/")) if s and "{" not in s), ""))
        for code, body in _json_2xx(schema, op):
            props = set(body.get("properties", {}))
            own = resource | _words(body.get("title", ""))
            wrong = {p for p in props if p.endswith("_id") and p.removesuffix("_id") in own}
            assert not wrong or "id" in props, f"{method.upper()} {path} {code}: {sorted(wrong)} where `id` is meant"
            if code == "201":
                assert "id" in props, f"{method.upper()} {path}: the 201 has no `id` ({sorted(props)})"


async def test_every_documented_error_answer_has_a_detail(schema):
    for path, method, op in _operations(schema):
        for code, response in op.get("responses", {}).items():
            body = response.get("content", {}).get("application/json", {}).get("schema")
            if code[0] in "45" and body:
                assert "detail" in _resolve(schema, body).get("properties", {}), f"{method.upper()} {path} {code}"


async def test_the_knowledge_routes_are_documented(schema):
    paths = set(schema["paths"])
    for path in ("/api/snippets", "/api/snippets/{snippet_id}", "/api/similar", "/api/knowledge/embedders"):
        assert path in paths, path
    assert {"/api/knowledge/{project_id}", "/health/knowledge"} <= paths


# --- real answers: every timestamp has a zone, every error a detail -----------------------------------


async def _world(api, tenant) -> dict[str, str]:
    """One of each resource in a fresh tenant (a revoked key, a finished generation), by path parameter."""
    h = tenant.headers

    async def made(method: str, path: str, body: dict, code: int = 201) -> dict:
        resp = await api.request(method, path, json=body, headers=h)
        assert resp.status_code == code, (path, resp.text)
        return resp.json()

    key = await made("POST", "/api/keys", {"role": "viewer", "name": "revoked"})
    assert (await api.delete(f"/api/keys/{key['id']}", headers=h)).status_code == 200
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    template = await made(
        "POST", "/api/templates", {"name": f"conv-{uuid.uuid4().hex[:6]}", "version": "1", "schema": schema}
    )
    project = await made("POST", "/api/projects", {"name": "conventions"})
    instance = await made(
        "POST", "/api/instances", {"template_id": template["id"], "project_id": project["id"], "values": {"n": 1}}
    )
    task = await made("POST", "/api/tasks", {"project_id": project["id"], "service": "spec_registry", "task_type": "t"})
    snippet = await made("POST", "/api/snippets", {"language": "python", "content": "x = 1"})
    await made("POST", f"/api/knowledge/{project['id']}", {"key": "style", "value": {"indent": 4}})
    values = {"function_name": "inc", "description": "Add one.", "tests": ["assert inc(1) == 2"]}
    generation = await made(
        "POST", "/api/generate", {"template": {"name": "python-function"}, "values": values, "max_new_tokens": 4}, 200
    )
    return {
        "project_id": project["id"],
        "template_id": template["id"],
        "instance_id": instance["id"],
        "task_id": task["id"],
        "snippet_id": snippet["id"],
        "generation_id": generation["id"],
    }


def _stamps(value: Any, where: str = "$"):
    """(where, text) of every string in a JSON value that reads as a date and time."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _stamps(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _stamps(v, f"{where}[{i}]")
    elif isinstance(value, str) and STAMP.match(value):
        yield where, value


def _filled(path: str, ids: dict[str, str]) -> str | None:
    names = re.findall(r"\{(\w+)\}", path)
    return None if any(n not in ids for n in names) else path.format(**{n: ids[n] for n in names})


async def test_every_timestamp_an_answer_carries_has_a_zone(api, schema, new_tenant):
    tenant = await new_tenant("conv")
    ids = await _world(api, tenant)
    seen = 0
    for path, method, _ in _operations(schema):
        url = _filled(path, ids)
        if method != "get" or url is None or path in NOT_JSON:
            continue
        resp = await api.get(url, headers=tenant.headers)
        assert resp.status_code == 200, (url, resp.text)
        for where, text in _stamps(resp.json()):
            stamp = datetime.fromisoformat(text)
            assert stamp.tzinfo is not None and stamp.utcoffset() is not None, f"GET {path} {where}: {text}"
            seen += 1
    assert seen >= 10  # revoked_at, created_at and updated_at of keys, projects, generations, ...


async def test_every_error_is_json_with_a_detail(api, schema, new_tenant):
    """Each operation, without credentials, then with ids that do not exist and a body it cannot take:
    every 4xx and 5xx is JSON with a `detail`."""
    tenant = await new_tenant("conv-err")
    missing = {"provider": "openai", "key": "nope"}
    answers = []
    for path, method, op in _operations(schema):
        if path in NOT_JSON:
            continue
        names = re.findall(r"\{(\w+)\}", path)
        url = path.format(**{n: missing.get(n, str(uuid.uuid4())) for n in names})
        body = {"__not_a_field__": 1} if "requestBody" in op else None
        answers.append(await api.request(method, url, json=body))
        answers.append(await api.request(method, url, json=body, headers=tenant.headers))
    answers += [await api.get("/api/nowhere", headers=tenant.headers), await api.patch("/api/projects")]
    errors = [r for r in answers if r.status_code >= 400]
    assert len(errors) > len(answers) / 2  # most of these must fail: the check is not vacuous
    for resp in errors:
        where = f"{resp.request.method} {resp.request.url.path} {resp.status_code}"
        assert resp.headers["content-type"].startswith("application/json"), where
        assert "detail" in resp.json(), f"{where}: {resp.text[:200]}"
        assert resp.status_code < 500, f"{where}: {resp.text[:200]}"


# --- the docs, with no network ---------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_load_everything_from_this_server(api, page):
    resp = await api.get(page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert not re.findall(r"https?://", resp.text), "the page names another host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', resp.text)
    assert any(a.endswith(".js") for a in assets), assets
    if page == "/docs":
        assert any(a.endswith(".css") for a in assets), assets
    for asset in assets:
        got = await api.get(asset)
        assert got.status_code == 200 and len(got.content) > 1000, (asset, got.status_code)
    assert "/openapi.json" in resp.text


async def test_the_docs_can_authorize_every_protected_operation(schema, api, tenant):
    """The OpenAPI declares both credentials as security schemes (so /docs offers Authorize, and "Try it
    out" sends the key), and every /api operation references both, either one serving."""
    schemes = schema["components"]["securitySchemes"]
    assert {k: v for k, v in schemes["ApiKey"].items() if k != "description"} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    operations = [(path, method, op) for path, method, op in _operations(schema) if path.startswith("/api/")]
    assert len(operations) > 50
    for path, method, op in operations:
        assert op.get("security") == [{"ApiKey": []}, {"Bearer": []}], (method, path)
        assert not any(p["name"].lower() in ("x-api-key", "authorization") for p in op.get("parameters", []))
    public = [(path, method) for path, method, op in _operations(schema) if path.startswith("/auth/signup")]
    assert public and all("security" not in schema["paths"][p][m] for p, m in public)
    # what "Try it out" sends once authorized: the header the scheme names
    assert (await api.get("/api/templates", headers={"X-API-Key": tenant.api_key})).status_code == 200
