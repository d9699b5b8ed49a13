"""Spec registry: templates and instances through the gateway, on a real Postgres and Temporal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from typing import Any

import pytest

from tests.conftest import page_ids

# --- helpers -------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3},
        "priority": {"enum": ["low", "medium", "high"]},
        "count": {"type": "integer", "minimum": 1},
        "due": {"type": "string", "format": "date"},
        "tests": {"type": "array", "maxItems": 5, "items": {"type": "string", "pattern": "^test_"}},
        "owner": {
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"}},
            "required": ["email"],
        },
    },
    "required": ["name", "owner"],
    "additionalProperties": False,
}
GOOD_VALUES: dict[str, Any] = {
    "name": "checkout",
    "priority": "high",
    "count": 2,
    "due": "2026-12-01",
    "tests": ["test_a", "test_b"],
    "owner": {"email": "dev@example.com"},
}


async def make_project(api, t, name: str = "p") -> str:
    resp = await api.post("/api/projects", json={"name": name}, headers=t.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


async def make_template(
    api, t, name: str = "svc", version: str = "1", schema: dict | None = None, description: str | None = None
) -> dict:
    body: dict[str, Any] = {"name": name, "version": version, "schema": SPEC_SCHEMA if schema is None else schema}
    if description is not None:
        body["description"] = description
    resp = await api.post("/api/templates", json=body, headers=t.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def make_instance(api, t, template_id: str, project_id: str, values: dict | None = None) -> dict:
    body = {"template_id": template_id, "project_id": project_id, "values": GOOD_VALUES if values is None else values}
    resp = await api.post("/api/instances", json=body, headers=t.headers)
    assert resp.status_code == 201, resp.text
    return resource(resp.json())


def resource(body: dict) -> dict:
    """A written instance as GET shows it: the answer's `applies_to` and `note` (which run it reaches) aside."""
    assert body.pop("applies_to") in ("this run", "next run") and body.pop("note"), body
    return body


OWN = {"builtin": "false"}


async def walk(api, t, path: str, limit: int, **params) -> list[list[dict]]:
    """Every page of a list endpoint, following next_cursor."""
    pages, cursor = [], None
    if path == "/api/templates":  # the tenant's own templates, not the built-in ones every tenant sees
        params = {"builtin": "false", **params}
    for _ in range(1000):
        q = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        resp = await api.get(path, params=q, headers=t.headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("next_cursor never ran out")


async def all_items(api, t, path: str, **params) -> list[dict]:
    return [item for page in await walk(api, t, path, 100, **params) for item in page]


async def events(api, t, *types: str) -> list[dict]:
    """The tenant's events of these types, walking GET /api/events with its integer cursor."""
    found, after = [], 0
    for _ in range(1000):
        resp = await api.get(
            "/api/events", params={"after": after, "limit": 100, "type": list(types)}, headers=t.headers
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        found += body["items"]
        if not body["items"]:
            assert body["next_cursor"] == after
            return found
        assert body["next_cursor"] == body["items"][-1]["seq"]
        after = body["next_cursor"]
    raise AssertionError("events never ran out")


def assert_json_error(resp, status: int | None = None) -> dict:
    """A 4xx (never a 500) whose body is JSON with a `detail`."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    if status is not None:
        assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert body.get("detail"), body
    return body


def cursor_of(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def canonical_hash(values: Any) -> str:
    return hashlib.sha256(
        json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# --- templates: success paths -------------------------------------------------------------


async def test_template_crud_round_trip(api, tenant):
    created = await make_template(api, tenant, name="checkout service", version="1.0.0", description="first")
    assert created["name"] == "checkout service" and created["version"] == "1.0.0"
    assert created["description"] == "first" and created["schema"] == SPEC_SCHEMA
    assert created["tenant_id"] == str(tenant.tenant_id)
    uuid.UUID(created["id"])
    assert created["created_at"] == created["updated_at"] and created["created_at"].endswith("+00:00")

    got = await api.get(f"/api/templates/{created['id']}", headers=tenant.headers)
    assert got.status_code == 200 and got.json() == created

    listed = await api.get("/api/templates", params=OWN, headers=tenant.headers)
    assert listed.status_code == 200 and listed.json() == {"items": [created], "next_cursor": None}

    new_schema = {**SPEC_SCHEMA, "properties": {**SPEC_SCHEMA["properties"], "notes": {"type": "string"}}}
    put = await api.put(
        f"/api/templates/{created['id']}", json={"description": "second", "schema": new_schema}, headers=tenant.headers
    )
    assert put.status_code == 200, put.text
    updated = put.json()
    assert updated["description"] == "second" and updated["schema"] == new_schema
    assert updated["name"] == created["name"] and updated["version"] == created["version"]
    assert updated["created_at"] == created["created_at"] and updated["updated_at"] > created["updated_at"]

    # a partial update leaves the other fields alone; null clears the description
    put = await api.put(f"/api/templates/{created['id']}", json={"description": None}, headers=tenant.headers)
    assert put.status_code == 200 and put.json()["description"] is None and put.json()["schema"] == new_schema
    assert (await api.get(f"/api/templates/{created['id']}", headers=tenant.headers)).json() == put.json()

    deleted = await api.delete(f"/api/templates/{created['id']}", headers=tenant.headers)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_json_error(await api.get(f"/api/templates/{created['id']}", headers=tenant.headers), 404)
    assert_json_error(await api.delete(f"/api/templates/{created['id']}", headers=tenant.headers), 404)
    assert_json_error(
        await api.put(f"/api/templates/{created['id']}", json={"description": "x"}, headers=tenant.headers), 404
    )
    assert (await api.get("/api/templates", params=OWN, headers=tenant.headers)).json()["items"] == []


async def test_unknown_ids_are_404(api, tenant):
    missing = uuid.uuid4()
    for method, path in [
        ("GET", f"/api/templates/{missing}"),
        ("DELETE", f"/api/templates/{missing}"),
        ("GET", f"/api/instances/{missing}"),
        ("DELETE", f"/api/instances/{missing}"),
        ("GET", f"/api/projects/{missing}/specs"),
    ]:
        assert_json_error(await api.request(method, path, headers=tenant.headers), 404)
    assert_json_error(await api.put(f"/api/instances/{missing}", json={"values": {}}, headers=tenant.headers), 404)


# --- template schema validation -----------------------------------------------------------


async def test_invalid_schema_is_422_with_every_problem(api, tenant):
    bad = {"type": "objekt", "properties": {"a": {"type": "string", "minLength": -1}}, "required": "a"}
    resp = await api.post("/api/templates", json={"name": "bad", "version": "1", "schema": bad}, headers=tenant.headers)
    body = assert_json_error(resp, 422)
    assert isinstance(body["detail"], str)
    assert all(set(e) >= {"path", "message"} and e["message"] for e in body["errors"]), body
    paths = {e["path"] for e in body["errors"]}
    assert {"$.type", "$.properties.a.minLength", "$.required"} <= paths, body
    assert (await api.get("/api/templates", params=OWN, headers=tenant.headers)).json()["items"] == []


@pytest.mark.parametrize(
    "schema, path",
    [
        ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}, "$.$schema"),
        ({"type": "string", "pattern": "("}, "$.pattern"),
        ({"type": "object", "patternProperties": {"[a-": {"type": "string"}}}, "$.patternProperties"),
        ({"type": "array", "items": {"maxItems": "three"}}, "$.items.maxItems"),
        ({"properties": []}, "$.properties"),
    ],
)
async def test_schema_that_is_not_draft_2020_12_is_422(api, tenant, schema, path):
    resp = await api.post(
        "/api/templates", json={"name": "bad", "version": "1", "schema": schema}, headers=tenant.headers
    )
    body = assert_json_error(resp, 422)
    assert path in {e["path"] for e in body["errors"]}, body
    assert (await api.get("/api/templates", params=OWN, headers=tenant.headers)).json()["items"] == []


async def test_put_with_invalid_schema_is_422_and_changes_nothing(api, tenant):
    tpl = await make_template(api, tenant)
    resp = await api.put(
        f"/api/templates/{tpl['id']}", json={"schema": {"type": "string", "pattern": "(("}}, headers=tenant.headers
    )
    body = assert_json_error(resp, 422)
    assert "$.pattern" in {e["path"] for e in body["errors"]}
    assert_json_error(await api.put(f"/api/templates/{tpl['id']}", json={"schema": None}, headers=tenant.headers), 422)
    assert (await api.get(f"/api/templates/{tpl['id']}", headers=tenant.headers)).json() == tpl
    assert len(await events(api, tenant, "template.updated")) == 0


async def test_schema_reference_cycles_and_dangling_refs_never_500(api, tenant):
    project = await make_project(api, tenant)
    schemas = [
        {"$ref": "#"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
        {"$ref": "#/$defs/nowhere"},
        {"$ref": "http://127.0.0.1:9/remote-schema.json"},
    ]
    for i, schema in enumerate(schemas):
        resp = await api.post(
            "/api/templates", json={"name": "refs", "version": str(i), "schema": schema}, headers=tenant.headers
        )
        if resp.status_code == 422:  # rejected up front: fine, as long as it says why
            assert assert_json_error(resp)["errors"]
            continue
        assert resp.status_code == 201, resp.text
        inst = await api.post(
            "/api/instances",
            json={"template_id": resp.json()["id"], "project_id": project, "values": {"a": 1}},
            headers=tenant.headers,
        )
        body = assert_json_error(inst, 422)
        assert body["errors"] and all(e["path"] and e["message"] for e in body["errors"])
    assert await all_items(api, tenant, "/api/instances") == []


# --- instance values validation -----------------------------------------------------------


async def test_values_breaking_several_constraints_list_every_violation(api, tenant):
    tpl = await make_template(api, tenant)
    project = await make_project(api, tenant)
    values = {
        "name": "ab",  # minLength
        "priority": "urgent",  # enum
        "count": 0,  # minimum
        "due": "next tuesday",  # format: date
        "tests": ["test_ok", 7, "test_ok2", "check_x"],  # [1] type, [3] pattern
        "owner": {"email": "not-an-email"},  # nested format
        "extra": True,  # additionalProperties
    }
    resp = await api.post(
        "/api/instances",
        json={"template_id": tpl["id"], "project_id": project, "values": values},
        headers=tenant.headers,
    )
    body = assert_json_error(resp, 422)
    errors = body["errors"]
    assert all(set(e) >= {"path", "message"} for e in errors)
    by_path: dict[str, list[str]] = {}
    for e in errors:
        by_path.setdefault(e["path"], []).append(e["message"])
    assert set(by_path) == {
        "$.name",
        "$.priority",
        "$.count",
        "$.due",
        "$.tests[1]",
        "$.tests[3]",
        "$.owner.email",
        "$",
    }, errors
    assert len(errors) == 8, errors
    assert "7 is not of type 'string'" in by_path["$.tests[1]"]
    assert any("does not match" in m for m in by_path["$.tests[3]"])
    assert any("extra" in m for m in by_path["$"])

    # a missing required property and a too-long array, on top of a bad type
    values = {"name": 42, "tests": ["test_1"] * 6}
    resp = await api.post(
        "/api/instances",
        json={"template_id": tpl["id"], "project_id": project, "values": values},
        headers=tenant.headers,
    )
    errors = assert_json_error(resp, 422)["errors"]
    assert sorted(e["path"] for e in errors) == ["$", "$.name", "$.tests"], errors
    assert any("'owner' is a required property" == e["message"] for e in errors)

    assert await all_items(api, tenant, "/api/instances") == []
    assert await events(api, tenant, "instance.created") == []


async def test_put_of_values_breaking_the_schema_is_422_and_changes_nothing(api, tenant):
    tpl = await make_template(api, tenant)
    project = await make_project(api, tenant)
    inst = await make_instance(api, tenant, tpl["id"], project)
    resp = await api.put(
        f"/api/instances/{inst['id']}",
        json={"values": {**GOOD_VALUES, "tests": ["test_a", "nope", "test_c", None]}},
        headers=tenant.headers,
    )
    errors = assert_json_error(resp, 422)["errors"]
    assert sorted(e["path"] for e in errors) == ["$.tests[1]", "$.tests[3]"], errors
    assert (await api.get(f"/api/instances/{inst['id']}", headers=tenant.headers)).json() == inst
    assert await events(api, tenant, "instance.updated") == []


# --- instances: success paths and project specs -------------------------------------------


async def test_instance_crud_and_project_specs(api, tenant):
    v1 = await make_template(api, tenant, name="svc", version="1")
    v2 = await make_template(
        api, tenant, name="svc", version="2", schema={"type": "object", "properties": {"name": {"type": "string"}}}
    )
    project, other_project = await make_project(api, tenant, "a"), await make_project(api, tenant, "b")

    inst = await make_instance(api, tenant, v1["id"], project)
    assert inst["template_id"] == v1["id"] and inst["project_id"] == project
    assert inst["user_id"] == str(tenant.user_id) and inst["tenant_id"] == str(tenant.tenant_id)
    assert inst["values"] == GOOD_VALUES and inst["created_at"] == inst["updated_at"]

    got = await api.get(f"/api/instances/{inst['id']}", headers=tenant.headers)
    assert got.status_code == 200 and got.json() == inst
    listed = await api.get("/api/instances", headers=tenant.headers)
    assert listed.json() == {"items": [inst], "next_cursor": None}

    new_values = {**GOOD_VALUES, "count": 5, "tests": ["test_x"]}
    put = await api.put(f"/api/instances/{inst['id']}", json={"values": new_values}, headers=tenant.headers)
    assert put.status_code == 200, put.text
    assert put.json()["values"] == new_values and put.json()["template_id"] == v1["id"]
    assert put.json()["created_at"] == inst["created_at"] and put.json()["updated_at"] > inst["updated_at"]

    # move the instance to version 2 of the template, with values that fit it
    put = await api.put(
        f"/api/instances/{inst['id']}", json={"template_id": v2["id"], "values": {"name": "n"}}, headers=tenant.headers
    )
    assert put.status_code == 200, put.text
    moved = resource(put.json())
    assert moved["template_id"] == v2["id"] and moved["values"] == {"name": "n"}
    # values that v2 accepts but v1 would not: moving back without new values is refused
    back = await api.put(f"/api/instances/{inst['id']}", json={"template_id": v1["id"]}, headers=tenant.headers)
    assert "$" in {e["path"] for e in assert_json_error(back, 422)["errors"]}
    assert (await api.get(f"/api/instances/{inst['id']}", headers=tenant.headers)).json() == moved

    second = await make_instance(api, tenant, v1["id"], project, {"name": "abc", "owner": {"email": "a@b.c"}})
    elsewhere = await make_instance(api, tenant, v1["id"], other_project)

    specs = await api.get(f"/api/projects/{project}/specs", headers=tenant.headers)
    assert specs.status_code == 200, specs.text
    rows = specs.json()["items"]
    assert [r["id"] for r in rows] == [inst["id"], second["id"]]
    assert await page_ids(api, f"/api/projects/{project}/specs", tenant.headers, limit=1) == [
        [inst["id"]],
        [second["id"]],
    ]
    assert [(r["template_name"], r["template_version"]) for r in rows] == [("svc", "2"), ("svc", "1")]
    assert rows[0]["values"] == {"name": "n"} and rows[1]["project_id"] == project
    other_specs = (await api.get(f"/api/projects/{other_project}/specs", headers=tenant.headers)).json()["items"]
    assert [r["id"] for r in other_specs] == [elsewhere["id"]]

    assert (await api.delete(f"/api/instances/{inst['id']}", headers=tenant.headers)).status_code == 204
    assert_json_error(await api.get(f"/api/instances/{inst['id']}", headers=tenant.headers), 404)
    assert_json_error(await api.delete(f"/api/instances/{inst['id']}", headers=tenant.headers), 404)
    rows = (await api.get(f"/api/projects/{project}/specs", headers=tenant.headers)).json()["items"]
    assert [r["id"] for r in rows] == [second["id"]]

    empty_project = await make_project(api, tenant, "empty")
    empty = await api.get(f"/api/projects/{empty_project}/specs", headers=tenant.headers)
    assert empty.status_code == 200 and empty.json() == {"items": [], "next_cursor": None}


async def test_instance_update_nulls_are_rejected(api, tenant):
    tpl = await make_template(api, tenant)
    inst = await make_instance(api, tenant, tpl["id"], await make_project(api, tenant))
    for body in ({"values": None}, {"template_id": None}):
        assert_json_error(await api.put(f"/api/instances/{inst['id']}", json=body, headers=tenant.headers), 422)
    assert (await api.get(f"/api/instances/{inst['id']}", headers=tenant.headers)).json() == inst


# --- uniqueness ---------------------------------------------------------------------------


async def test_duplicate_name_and_version_is_409_but_fine_in_another_tenant(api, tenant, other_tenant):
    first = await make_template(api, tenant, name="dup", version="1.0")
    resp = await api.post(
        "/api/templates", json={"name": "dup", "version": "1.0", "schema": {"type": "object"}}, headers=tenant.headers
    )
    assert_json_error(resp, 409)
    # another version, another name: fine
    await make_template(api, tenant, name="dup", version="1.1")
    await make_template(api, tenant, name="dup2", version="1.0")
    # the same name and version in another tenant: fine
    theirs = await make_template(api, other_tenant, name="dup", version="1.0")
    assert theirs["id"] != first["id"] and theirs["tenant_id"] == str(other_tenant.tenant_id)

    mine = await all_items(api, tenant, "/api/templates", name="dup", version="1.0")
    assert [t["id"] for t in mine] == [first["id"]] and mine[0]["schema"] == SPEC_SCHEMA
    created = await events(api, tenant, "template.created")
    assert sorted(e["payload"]["name"] + "@" + e["payload"]["version"] for e in created) == [
        "dup2@1.0",
        "dup@1.0",
        "dup@1.1",
    ]


async def test_concurrent_duplicates_create_exactly_one(api, tenant):
    body = {"name": "race", "version": "1", "schema": {"type": "object"}}
    results = await asyncio.gather(*[api.post("/api/templates", json=body, headers=tenant.headers) for _ in range(6)])
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 409, 409, 409, 409, 409], [r.text for r in results]
    for r in results:
        if r.status_code == 409:
            assert_json_error(r, 409)
    assert len(await all_items(api, tenant, "/api/templates")) == 1
    assert len(await events(api, tenant, "template.created")) == 1


# --- deleting and changing templates that instances use -----------------------------------


async def test_template_with_instances_cannot_be_deleted(api, tenant):
    tpl = await make_template(api, tenant)
    project = await make_project(api, tenant)
    a = await make_instance(api, tenant, tpl["id"], project)
    b = await make_instance(api, tenant, tpl["id"], project)

    assert_json_error(await api.delete(f"/api/templates/{tpl['id']}", headers=tenant.headers), 409)
    assert (await api.get(f"/api/templates/{tpl['id']}", headers=tenant.headers)).json() == tpl

    assert (await api.delete(f"/api/instances/{a['id']}", headers=tenant.headers)).status_code == 204
    assert_json_error(await api.delete(f"/api/templates/{tpl['id']}", headers=tenant.headers), 409)
    assert (await api.get(f"/api/templates/{tpl['id']}", headers=tenant.headers)).status_code == 200

    assert (await api.delete(f"/api/instances/{b['id']}", headers=tenant.headers)).status_code == 204
    assert (await api.delete(f"/api/templates/{tpl['id']}", headers=tenant.headers)).status_code == 204
    assert_json_error(await api.get(f"/api/templates/{tpl['id']}", headers=tenant.headers), 404)


async def test_delete_racing_instance_create_never_leaves_an_orphan(api, tenant):
    project = await make_project(api, tenant)
    for i in range(5):
        tpl = await make_template(api, tenant, version=str(i))
        create, delete = await asyncio.gather(
            api.post(
                "/api/instances",
                json={"template_id": tpl["id"], "project_id": project, "values": GOOD_VALUES},
                headers=tenant.headers,
            ),
            api.delete(f"/api/templates/{tpl['id']}", headers=tenant.headers),
        )
        outcome = (create.status_code, delete.status_code)
        assert outcome in {(201, 409), (404, 204)}, (create.text, delete.text)
        tpl_exists = (await api.get(f"/api/templates/{tpl['id']}", headers=tenant.headers)).status_code == 200
        instances = await all_items(api, tenant, "/api/instances", template_id=tpl["id"])
        assert tpl_exists == (outcome == (201, 409)) and len(instances) == (1 if tpl_exists else 0)


async def test_schema_change_that_breaks_instances_is_409(api, tenant):
    tpl = await make_template(api, tenant)
    project = await make_project(api, tenant)
    inst = await make_instance(api, tenant, tpl["id"], project)

    stricter = {**SPEC_SCHEMA, "properties": {**SPEC_SCHEMA["properties"], "count": {"type": "integer", "minimum": 10}}}
    resp = await api.put(
        f"/api/templates/{tpl['id']}", json={"schema": stricter, "description": "changed"}, headers=tenant.headers
    )
    body = assert_json_error(resp, 409)
    assert [i["instance_id"] for i in body["instances"]] == [inst["id"]]
    assert [e["path"] for e in body["instances"][0]["errors"]] == ["$.count"]
    assert (await api.get(f"/api/templates/{tpl['id']}", headers=tenant.headers)).json() == tpl
    assert await events(api, tenant, "template.updated") == []

    # compatible: a new optional property and a looser bound
    looser = {
        **SPEC_SCHEMA,
        "properties": {
            **SPEC_SCHEMA["properties"],
            "count": {"type": "integer", "minimum": 0},
            "notes": {"type": "string"},
        },
    }
    resp = await api.put(f"/api/templates/{tpl['id']}", json={"schema": looser}, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["schema"] == looser
    assert (await api.get(f"/api/templates/{tpl['id']}", headers=tenant.headers)).json()["schema"] == looser
    # the new schema is the one instances are now checked against
    ok = await api.put(
        f"/api/instances/{inst['id']}",
        json={"values": {**GOOD_VALUES, "count": 0, "notes": "n"}},
        headers=tenant.headers,
    )
    assert ok.status_code == 200, ok.text
    bad = await api.post(
        "/api/instances",
        json={"template_id": tpl["id"], "project_id": project, "values": {**GOOD_VALUES, "notes": 5}},
        headers=tenant.headers,
    )
    assert [e["path"] for e in assert_json_error(bad, 422)["errors"]] == ["$.notes"]


# --- pagination and filters ---------------------------------------------------------------


async def test_template_pages_walk_everything_once(api, tenant):
    made = [
        await make_template(api, tenant, name=n, version=v) for n in ("alpha", "beta") for v in ("1", "2", "3", "4")
    ]
    made.append(await make_template(api, tenant, name="gamma", version="2"))

    pages = await walk(api, tenant, "/api/templates", 2)
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    ids = [t["id"] for p in pages for t in p]
    assert ids == [t["id"] for t in made] and len(set(ids)) == len(made)

    pages = await walk(api, tenant, "/api/templates", 3)
    assert [len(p) for p in pages] == [3, 3, 3]
    assert [t["id"] for p in pages for t in p] == [t["id"] for t in made]

    everything = await api.get("/api/templates", params={"limit": 100, **OWN}, headers=tenant.headers)
    assert everything.status_code == 200 and len(everything.json()["items"]) == 9
    assert everything.json()["next_cursor"] is None

    alpha = await walk(api, tenant, "/api/templates", 3, name="alpha")
    assert [len(p) for p in alpha] == [3, 1]
    assert [(t["name"], t["version"]) for p in alpha for t in p] == [("alpha", v) for v in "1234"]
    v2 = await all_items(api, tenant, "/api/templates", version="2")
    assert sorted(t["name"] for t in v2) == ["alpha", "beta", "gamma"]
    exact = await all_items(api, tenant, "/api/templates", name="beta", version="3")
    assert [(t["name"], t["version"]) for t in exact] == [("beta", "3")]
    assert await all_items(api, tenant, "/api/templates", name="delta") == []


async def test_instance_pages_and_filters(api, tenant):
    t1, t2 = await make_template(api, tenant, version="1"), await make_template(api, tenant, version="2")
    p1, p2 = await make_project(api, tenant, "p1"), await make_project(api, tenant, "p2")
    made = []
    for tpl, proj in [(t1, p1), (t2, p1), (t1, p2), (t1, p1), (t2, p2), (t1, p1), (t2, p1)]:
        made.append(await make_instance(api, tenant, tpl["id"], proj))

    pages = await walk(api, tenant, "/api/instances", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i["id"] for p in pages for i in p] == [i["id"] for i in made]

    def expect(**f):
        return [i["id"] for i in made if all(i[k] == v for k, v in f.items())]

    for filters in (
        {"project_id": p1},
        {"project_id": p2},
        {"template_id": t1["id"]},
        {"template_id": t2["id"]},
        {"project_id": p1, "template_id": t1["id"]},
        {"project_id": p2, "template_id": t2["id"]},
    ):
        got = [i["id"] for p in await walk(api, tenant, "/api/instances", 2, **filters) for i in p]
        assert got == expect(**filters), filters
    assert await all_items(api, tenant, "/api/instances", project_id=str(uuid.uuid4())) == []


@pytest.mark.parametrize("path", ["/api/templates", "/api/instances"])
@pytest.mark.parametrize("limit", ["0", "101", "-1", "1000", "ten", ""])
async def test_limit_out_of_range_is_422(api, tenant, path, limit):
    assert_json_error(await api.get(path, params={"limit": limit}, headers=tenant.headers), 422)


@pytest.mark.parametrize("path", ["/api/templates", "/api/instances"])
async def test_limit_bounds_are_accepted(api, tenant, path):
    own = OWN if path == "/api/templates" else {}
    for limit in ("1", "100"):
        resp = await api.get(path, params={"limit": limit, **own}, headers=tenant.headers)
        assert resp.status_code == 200 and resp.json() == {"items": [], "next_cursor": None}


GARBAGE_CURSORS = [
    "garbage",
    "!!!!",
    "é",
    "x" * 513,
    cursor_of({"a": 1}),
    cursor_of(5),
    cursor_of(["x", "y", "z"]),
    cursor_of([None, None]),
    cursor_of(["2026-01-01T00:00:00", 5]),
    cursor_of(["2026-01-01T00:00:00", "not-a-uuid"]),
    cursor_of(["yesterday", str(uuid.uuid4())]),
    cursor_of(["2026-01-01T00:00:00+05:00", str(uuid.uuid4())]),
    base64.urlsafe_b64encode(b"\xff\xfe[").decode(),
]


@pytest.mark.parametrize("path", ["/api/templates", "/api/instances"])
async def test_garbage_cursor_is_422(api, tenant, path):
    for cursor in GARBAGE_CURSORS:
        assert_json_error(await api.get(path, params={"cursor": cursor}, headers=tenant.headers), 422)


# --- server-set fields --------------------------------------------------------------------

SERVER_FIELDS = {
    "id": str(uuid.uuid4()),
    "tenant_id": str(uuid.uuid4()),
    "user_id": str(uuid.uuid4()),
    "created_at": "2020-01-01T00:00:00Z",
    "updated_at": "2020-01-01T00:00:00Z",
}


@pytest.mark.parametrize("field", sorted(SERVER_FIELDS))
async def test_server_set_fields_are_refused(api, tenant, field):
    tpl = await make_template(api, tenant)
    project = await make_project(api, tenant)
    inst = await make_instance(api, tenant, tpl["id"], project)
    extra = {field: SERVER_FIELDS[field]}

    resp = await api.post(
        "/api/templates", json={"name": "other", "version": "1", "schema": {}, **extra}, headers=tenant.headers
    )
    body = assert_json_error(resp, 422)
    assert any(d["loc"] == ["body", field] and d["type"] == "extra_forbidden" for d in body["detail"]), body
    resp = await api.post(
        "/api/instances",
        json={"template_id": tpl["id"], "project_id": project, "values": GOOD_VALUES, **extra},
        headers=tenant.headers,
    )
    assert_json_error(resp, 422)
    resp = await api.put(
        f"/api/templates/{tpl['id']}", json={"description": "changed", **extra}, headers=tenant.headers
    )
    assert_json_error(resp, 422)
    resp = await api.put(
        f"/api/instances/{inst['id']}", json={"values": {**GOOD_VALUES, "count": 9}, **extra}, headers=tenant.headers
    )
    assert_json_error(resp, 422)

    assert await all_items(api, tenant, "/api/templates") == [tpl]
    assert await all_items(api, tenant, "/api/instances") == [inst]
    assert (
        len(await events(api, tenant, "template.created", "template.updated", "instance.created", "instance.updated"))
        == 2
    )


# --- events -------------------------------------------------------------------------------


async def test_registry_changes_write_their_events(api, tenant):
    tpl = await make_template(api, tenant, name="ev", version="1")
    project = await make_project(api, tenant)
    inst = await make_instance(api, tenant, tpl["id"], project)
    await api.put(f"/api/templates/{tpl['id']}", json={"description": "d"}, headers=tenant.headers)
    new_values = {**GOOD_VALUES, "count": 3}
    assert (
        await api.put(f"/api/instances/{inst['id']}", json={"values": new_values}, headers=tenant.headers)
    ).status_code == 200

    evs = await events(api, tenant, "template.created", "template.updated", "instance.created", "instance.updated")
    assert [e["type"] for e in evs] == ["template.created", "instance.created", "template.updated", "instance.updated"]
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(e["id"] for e in evs)) == 4
    for e in evs:
        assert set(e) == {
            "seq",
            "id",
            "type",
            "schema_name",
            "subject_id",
            "project_id",
            "run_id",
            "payload",
            "created_at",
        }
        assert e["created_at"].endswith("+00:00")
    t_created, i_created, t_updated, i_updated = evs
    template_payload = {
        "template_id": tpl["id"],
        "tenant_id": str(tenant.tenant_id),
        "name": "ev",
        "version": "1",
        "user_id": str(tenant.user_id),
    }
    for e in (t_created, t_updated):
        assert e["schema_name"] == "spec_template_event" and e["subject_id"] == tpl["id"]
        assert e["payload"] == template_payload
    for e, values in ((i_created, GOOD_VALUES), (i_updated, new_values)):
        assert e["schema_name"] == "spec_instance_event" and e["subject_id"] == inst["id"]
        assert e["payload"] == {
            "instance_id": inst["id"],
            "template_id": tpl["id"],
            "project_id": project,
            "tenant_id": str(tenant.tenant_id),
            "user_id": str(tenant.user_id),
            "values_hash": canonical_hash(values),
        }
    assert i_created["payload"]["values_hash"] != i_updated["payload"]["values_hash"]

    # the type filter and the cursor
    only = (await api.get("/api/events", params={"type": "instance.updated"}, headers=tenant.headers)).json()
    assert [e["id"] for e in only["items"]] == [i_updated["id"]] and only["next_cursor"] == i_updated["seq"]
    after = (
        await api.get(
            "/api/events",
            params={"after": t_updated["seq"], "type": ["template.updated", "instance.updated"]},
            headers=tenant.headers,
        )
    ).json()
    assert [e["id"] for e in after["items"]] == [i_updated["id"]]


async def test_failed_changes_write_no_event(api, tenant):
    tpl = await make_template(api, tenant)
    loose = await make_template(api, tenant, name="loose", schema={"type": "object"})
    project = await make_project(api, tenant)
    inst = await make_instance(api, tenant, tpl["id"], project)
    before = await events(api, tenant, "template.created", "template.updated", "instance.created", "instance.updated")
    assert len(before) == 3

    failures = [
        api.post("/api/templates", json={"name": "svc", "version": "1", "schema": {}}, headers=tenant.headers),  # 409
        api.post("/api/templates", json={"name": "x", "version": "1", "schema": {"type": 5}}, headers=tenant.headers),
        api.post(
            "/api/instances",
            json={"template_id": tpl["id"], "project_id": project, "values": {"name": 1}},
            headers=tenant.headers,
        ),
        api.post(
            "/api/instances",
            json={"template_id": str(uuid.uuid4()), "project_id": project, "values": {}},
            headers=tenant.headers,
        ),
        api.put(
            f"/api/templates/{tpl['id']}",
            json={"schema": {**SPEC_SCHEMA, "required": ["nope"]}},
            headers=tenant.headers,
        ),
        api.put(f"/api/instances/{inst['id']}", json={"values": {"name": "abc"}}, headers=tenant.headers),
        # values the schema accepts but PostgreSQL cannot store
        api.post(
            "/api/instances",
            content='{"template_id": "%s", "project_id": "%s", "values": {"count": NaN}}' % (loose["id"], project),
            headers={**tenant.headers, **JSON},
        ),
        api.post(
            "/api/instances",
            json={"template_id": loose["id"], "project_id": project, "values": {"text": "nul\u0000"}},
            headers=tenant.headers,
        ),
    ]
    for call in failures:
        assert_json_error(await call)
    after = await events(api, tenant, "template.created", "template.updated", "instance.created", "instance.updated")
    assert after == before
    assert await all_items(api, tenant, "/api/templates") == [tpl, loose]
    assert await all_items(api, tenant, "/api/instances") == [inst]


# --- bad input ----------------------------------------------------------------------------


async def _snapshot(api, t) -> tuple:
    return (
        await all_items(api, t, "/api/templates"),
        await all_items(api, t, "/api/instances"),
        await events(api, t, "template.created", "template.updated", "instance.created", "instance.updated"),
    )


async def test_malformed_json_and_wrong_types_are_4xx(api, tenant):
    tpl = await make_template(api, tenant, schema={"type": "object"})  # values only the database can refuse
    project = await make_project(api, tenant)
    inst = await make_instance(api, tenant, tpl["id"], project, {"a": 1})
    before = await _snapshot(api, tenant)
    h = {**tenant.headers, **JSON}
    i = {"template_id": tpl["id"], "project_id": project}

    raw_bodies = {
        ("POST", "/api/templates"): [
            b'{"name": "a",',
            b"not json",
            b"[1, 2]",
            b'"schema"',
            b"",
            b"\xff\xfe",
            b'{"name": "a", "version": "1", "schema": {"maximum": Infinity}}',
        ],
        ("POST", "/api/instances"): [b'{"template_id": ', b"null", b"{}"],
        ("PUT", f"/api/templates/{tpl['id']}"): [b"{description: 1}", b"[]"],
        ("PUT", f"/api/instances/{inst['id']}"): [
            b'{"values": {"count": NaN}}',
            b'{"values": {"count": -Infinity}}',
            b'{"values": ',
        ],
    }
    for (method, path), bodies in raw_bodies.items():
        for raw in bodies:
            assert_json_error(await api.request(method, path, content=raw, headers=h))

    json_bodies = {
        ("POST", "/api/templates"): [
            {"name": 123, "version": "1", "schema": {}},
            {"name": "a", "version": 1, "schema": {}},
            {"name": "a", "version": "1", "schema": "object"},
            {"name": "a", "version": "1", "schema": True},
            {"name": "a", "version": "1", "schema": []},
            {"name": "a", "version": "1"},
            {"name": "", "version": "1", "schema": {}},
            {"name": "a/../b", "version": "1", "schema": {}},
            {"name": "a", "version": "1 2", "schema": {}},
            {"name": "a", "version": "1", "schema": {}, "description": ["x"]},
            {"name": "a", "version": "1", "schema": {}, "description": "nul\u0000byte"},
            {"name": "a", "version": "1", "schema": {"description": "nul\u0000byte"}},
            {"name": "a", "version": "1", "schema": {"type": "object", "default": nested(300)}},
        ],
        ("POST", "/api/instances"): [
            {**i, "values": [1, 2]},
            {**i, "values": "x"},
            {**i, "values": None},
            {**i},
            {**i, "template_id": "not-a-uuid", "values": {}},
            {**i, "project_id": 17, "values": {}},
            {**i, "project_id": str(uuid.uuid4())[:-1], "values": {}},
            {**i, "values": {"name": "a\u0000b"}},
            {**i, "values": {"a\u0000": 1}},
            {**i, "values": {"deep": nested(300)}},
        ],
        ("PUT", f"/api/templates/{tpl['id']}"): [{"schema": "x"}, {"description": 5}, {"schema": [1]}],
        ("PUT", f"/api/instances/{inst['id']}"): [
            {"values": [1]},
            {"template_id": "zzz"},
            {"template_id": 1},
            {"values": {"deep": nested(300)}},
            {"values": {"x": "\u0000"}},
        ],
    }
    for (method, path), bodies in json_bodies.items():
        for body in bodies:
            assert_json_error(await api.request(method, path, json=body, headers=tenant.headers))

    # not JSON at all
    resp = await api.post(
        "/api/templates",
        content=b"name=a&version=1",
        headers={**tenant.headers, "content-type": "application/x-www-form-urlencoded"},
    )
    assert_json_error(resp, 422)
    # a filter value PostgreSQL cannot hold
    assert_json_error(await api.get("/api/templates", params={"name": "a\u0000"}, headers=tenant.headers))
    assert await _snapshot(api, tenant) == before


async def test_values_nested_as_deep_as_allowed_round_trip(api, tenant):
    tpl = await make_template(api, tenant, schema={"type": "object"})
    project = await make_project(api, tenant)
    values = {"deep": nested(60)}
    inst = await make_instance(api, tenant, tpl["id"], project, values)
    assert (await api.get(f"/api/instances/{inst['id']}", headers=tenant.headers)).json()["values"] == values
    assert [i["id"] for i in await all_items(api, tenant, "/api/instances")] == [inst["id"]]


async def test_recursive_schema_checks_deep_values(api, tenant):
    tree = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "child": {"$ref": "#"}},
        "required": ["label"],
        "additionalProperties": False,
    }
    tpl = await make_template(api, tenant, schema=tree)
    project = await make_project(api, tenant)

    def chain(depth: int, leaf: dict) -> dict:
        node = leaf
        for _ in range(depth - 1):
            node = {"label": "n", "child": node}
        return node

    ok = await make_instance(api, tenant, tpl["id"], project, chain(60, {"label": "leaf"}))
    assert (await api.get(f"/api/instances/{ok['id']}", headers=tenant.headers)).json() == ok
    resp = await api.post(
        "/api/instances",
        json={"template_id": tpl["id"], "project_id": project, "values": chain(4, {"label": 1, "extra": 2})},
        headers=tenant.headers,
    )
    errors = assert_json_error(resp, 422)["errors"]
    assert sorted(e["path"] for e in errors) == ["$.child.child.child", "$.child.child.child.label"], errors


@pytest.mark.parametrize(
    "path",
    [
        "/api/templates/{bad}",
        "/api/instances/{bad}",
        "/api/projects/{bad}/specs",
    ],
)
async def test_bad_uuids_in_paths_are_422(api, tenant, path):
    for bad in ("not-a-uuid", "1234", str(uuid.uuid4())[:-1] + "g", "%00"):
        url = path.format(bad=bad)
        assert_json_error(await api.get(url, headers=tenant.headers), 422)
        if "specs" not in path:
            assert_json_error(
                await api.put(
                    url, json={"description": "x"} if "templates" in path else {"values": {}}, headers=tenant.headers
                ),
                422,
            )
            assert_json_error(await api.delete(url, headers=tenant.headers), 422)
    for params in ({"project_id": "nope"}, {"template_id": "123"}):
        assert_json_error(await api.get("/api/instances", params=params, headers=tenant.headers), 422)


async def test_body_over_the_limit_is_413_and_stores_nothing(api, tenant, make_app, stack):
    tpl = await make_template(api, tenant)
    before = await _snapshot(api, tenant)
    big_schema = {"type": "object", "description": "x" * 4096}

    async def chunks(raw: bytes):
        for i in range(0, len(raw), 512):
            yield raw[i : i + 512]

    async for client in make_app(stack.with_(max_body_bytes=2048)):
        # with a Content-Length
        resp = await client.post(
            "/api/templates", json={"name": "big", "version": "1", "schema": big_schema}, headers=tenant.headers
        )
        body = assert_json_error(resp, 413)
        assert isinstance(body["detail"], str)
        resp = await client.put(f"/api/templates/{tpl['id']}", json={"schema": big_schema}, headers=tenant.headers)
        assert_json_error(resp, 413)
        # streamed, without a Content-Length
        raw = json.dumps({"name": "big", "version": "2", "schema": big_schema}).encode()
        resp = await client.post("/api/templates", content=chunks(raw), headers={**tenant.headers, **JSON})
        assert "content-length" not in resp.request.headers
        assert_json_error(resp, 413)
        assert await _snapshot(api, tenant) == before

        # a body under the limit still works on the same app
        small = await client.post(
            "/api/templates", json={"name": "small", "version": "1", "schema": {}}, headers=tenant.headers
        )
        assert small.status_code == 201, small.text
        raw = json.dumps({"name": "small", "version": "2", "schema": {}}).encode()
        streamed = await client.post("/api/templates", content=chunks(raw), headers={**tenant.headers, **JSON})
        assert streamed.status_code == 201, streamed.text
    names = sorted((t["name"], t["version"]) for t in await all_items(api, tenant, "/api/templates"))
    assert names == [("small", "1"), ("small", "2"), ("svc", "1")]


# --- tenant isolation ---------------------------------------------------------------------


async def test_other_tenants_templates_and_projects_are_404(api, tenant, other_tenant):
    mine_tpl, mine_proj = await make_template(api, tenant), await make_project(api, tenant)
    their_tpl, their_proj = await make_template(api, other_tenant), await make_project(api, other_tenant)
    theirs = await make_instance(api, other_tenant, their_tpl["id"], their_proj)
    mine = await make_instance(api, tenant, mine_tpl["id"], mine_proj)
    before_theirs = await _snapshot(api, other_tenant)
    before_mine = await _snapshot(api, tenant)

    for body in (
        {"template_id": their_tpl["id"], "project_id": mine_proj},
        {"template_id": mine_tpl["id"], "project_id": their_proj},
        {"template_id": their_tpl["id"], "project_id": their_proj},
    ):
        resp = await api.post("/api/instances", json={**body, "values": GOOD_VALUES}, headers=tenant.headers)
        assert_json_error(resp, 404)
    resp = await api.put(f"/api/instances/{mine['id']}", json={"template_id": their_tpl["id"]}, headers=tenant.headers)
    assert_json_error(resp, 404)

    h = tenant.headers
    for method, path, body in [
        ("GET", f"/api/templates/{their_tpl['id']}", None),
        ("PUT", f"/api/templates/{their_tpl['id']}", {"description": "mine now"}),
        ("DELETE", f"/api/templates/{their_tpl['id']}", None),
        ("GET", f"/api/instances/{theirs['id']}", None),
        ("PUT", f"/api/instances/{theirs['id']}", {"values": GOOD_VALUES}),
        ("DELETE", f"/api/instances/{theirs['id']}", None),
        ("GET", f"/api/projects/{their_proj}/specs", None),
    ]:
        assert_json_error(await api.request(method, path, json=body, headers=h), 404)

    assert await all_items(api, tenant, "/api/instances", template_id=their_tpl["id"]) == []
    assert await all_items(api, tenant, "/api/instances", project_id=their_proj) == []
    assert await _snapshot(api, other_tenant) == before_theirs
    assert await _snapshot(api, tenant) == before_mine
    assert [t["id"] for t in before_mine[0]] == [mine_tpl["id"]]
    assert [i["id"] for i in before_theirs[1]] == [theirs["id"]]


async def test_builtin_templates_are_listed_usable_and_read_only(api, tenant, other_tenant):
    listed = (await api.get("/api/templates", params={"builtin": "true", "limit": 100}, headers=tenant.headers)).json()
    names = {(t["name"], t["version"]) for t in listed["items"]}
    assert {("python-function", "1.0.0"), ("python-module", "1.0.0")} <= names
    assert all(t["builtin"] for t in listed["items"])
    fn = next(t for t in listed["items"] if t["name"] == "python-function")
    assert fn["schema"]["properties"]["description"]["x-specmill"] == {"role": "description"}
    # the same built-in, seen by another tenant
    assert (await api.get(f"/api/templates/{fn['id']}", headers=other_tenant.headers)).status_code == 200
    # usable as an instance's template
    project = (await api.post("/api/projects", json={"name": "p"}, headers=tenant.headers)).json()
    bad = await api.post(
        "/api/instances",
        json={"template_id": fn["id"], "project_id": project["id"], "values": {"function_name": "1x"}},
        headers=tenant.headers,
    )
    assert bad.status_code == 422 and {e["path"] for e in bad.json()["errors"]} == {"$", "$.function_name"}
    inst = await api.post(
        "/api/instances",
        json={
            "template_id": fn["id"],
            "project_id": project["id"],
            "values": {"function_name": "add", "description": "add two ints", "tests": ["assert add(1, 2) == 3"]},
        },
        headers=tenant.headers,
    )
    assert inst.status_code == 201, inst.text
    specs = (await api.get(f"/api/projects/{project['id']}/specs", headers=tenant.headers)).json()["items"]
    assert [(s["template_name"], s["template_version"]) for s in specs] == [("python-function", "1.0.0")]
    # read-only for every tenant
    assert (
        await api.put(f"/api/templates/{fn['id']}", json={"description": "mine"}, headers=tenant.headers)
    ).status_code == 403
    assert (await api.delete(f"/api/templates/{fn['id']}", headers=tenant.headers)).status_code == 403
    own = (await api.get("/api/templates", params={"builtin": "false"}, headers=tenant.headers)).json()["items"]
    assert all(not t["builtin"] for t in own)


async def test_python_function_1_1_takes_imports_and_setup_and_tests_stay_asserts(api, tenant):
    listed = (
        await api.get("/api/templates", params={"name": "python-function", "builtin": "true"}, headers=tenant.headers)
    ).json()["items"]
    assert [t["version"] for t in listed] == ["1.0.0", "1.1.0"]
    old, new = listed
    # 1.0.0, which instances already reference, is as it was: a new version carries the new properties
    assert set(old["schema"]["properties"]) == {"function_name", "description", "signature", "tests"}
    assert {k: p["x-specmill"]["role"] for k, p in new["schema"]["properties"].items()} == {
        "function_name": "name",
        "description": "description",
        "signature": "signature",
        "tests": "tests",
        "imports": "imports",
        "setup": "setup",
    }
    project = await make_project(api, tenant)
    values = {
        "function_name": "tomorrow",
        "description": "The day after d.",
        "signature": "def tomorrow(d: datetime.date) -> datetime.date",
        "imports": ["import datetime", "from typing import Optional"],
        "setup": ["import datetime", "FIRST = datetime.date(2020, 1, 1)"],
        "tests": ["assert tomorrow(FIRST) == datetime.date(2020, 1, 2)"],
    }
    made = await api.post(
        "/api/instances",
        json={"template_id": new["id"], "project_id": project, "values": values},
        headers=tenant.headers,
    )
    assert made.status_code == 201, made.text
    specs = (await api.get(f"/api/projects/{project}/specs", headers=tenant.headers)).json()["items"]
    assert [(s["template_name"], s["template_version"]) for s in specs] == [("python-function", "1.1.0")]

    bad = {
        **values,
        "imports": ["import os; import sys", "from os import *", "from . import sibling", "x = 1", "import ("],
        "setup": ["FIRST = ("],
        "tests": ["import datetime", "assert tomorrow(FIRST) == 1", "FIRST = 2\nassert tomorrow(FIRST) == 3"],
    }
    resp = await api.post(
        "/api/instances", json={"template_id": new["id"], "project_id": project, "values": bad}, headers=tenant.headers
    )
    errors = {e["path"]: e["message"] for e in assert_json_error(resp, 422)["errors"]}
    assert set(errors) == {f"$.imports[{i}]" for i in range(5)} | {"$.setup[0]", "$.tests[0]", "$.tests[2]"}, errors
    assert errors["$.imports[0]"] == "an import line must be one `import x` or `from x import y` statement"
    assert errors["$.imports[1]"] == "an import line must name what it imports, not `*`"
    assert errors["$.imports[2]"].startswith("an import line must be absolute")
    assert errors["$.imports[3]"] == errors["$.imports[0]"]
    assert errors["$.imports[4]"].startswith("not valid Python") and errors["$.setup[0]"].startswith("not valid Python")
    assert errors["$.tests[0]"] == (
        "a test must be an `assert` statement, and `import datetime` is not one: put other lines (imports, "
        "fixture values) in `setup`, which runs before the tests"
    )
    assert "`FIRST = 2` is not one" in errors["$.tests[2]"] and "`setup`" in errors["$.tests[2]"]
    # an update is checked the same way, and changes nothing
    iid = made.json()["id"]
    resp = await api.put(
        f"/api/instances/{iid}", json={"values": {**values, "tests": ["import datetime"]}}, headers=tenant.headers
    )
    assert assert_json_error(resp, 422)["errors"][0]["path"] == "$.tests[0]"
    assert (await api.get(f"/api/instances/{iid}", headers=tenant.headers)).json()["values"] == values
    # 1.0.0 still refuses a non-assert test (its pattern), and has no imports or setup to take one
    resp = await api.post(
        "/api/instances",
        json={"template_id": old["id"], "project_id": project, "values": {**values, "tests": ["import datetime"]}},
        headers=tenant.headers,
    )
    assert {e["path"] for e in assert_json_error(resp, 422)["errors"]} == {"$", "$.tests[0]"}
    assert len(await all_items(api, tenant, "/api/instances")) == 1
