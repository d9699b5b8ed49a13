"""Tenant isolation, twice: every query filters by tenant, and Row Level Security holds when one does not."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from store.db import plain_tx, tenant_tx

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.fixture
async def owned(api, tenant):
    """One of each of tenant A's resources."""
    h = tenant.headers
    tpl = (await api.post("/api/templates", json={"name": "t", "version": "1", "schema": SCHEMA}, headers=h)).json()
    project = (await api.post("/api/projects", json={"name": "p"}, headers=h)).json()
    inst = (
        await api.post(
            "/api/instances",
            json={"template_id": tpl["id"], "project_id": project["id"], "values": {"n": 1}},
            headers=h,
        )
    ).json()
    task = (
        await api.post(
            "/api/tasks",
            json={"project_id": project["id"], "service": "spec_registry", "task_type": "check"},
            headers=h,
        )
    ).json()
    key = (await api.post("/api/keys", json={"role": "viewer"}, headers=h)).json()
    return {"template": tpl, "project": project, "instance": inst, "task": task, "key": key}


def _attempts(o):
    t, p, i, k = o["template"]["id"], o["project"]["id"], o["instance"]["id"], o["task"]["id"]
    return [
        ("GET", f"/api/templates/{t}", None),
        ("PUT", f"/api/templates/{t}", {"description": "stolen"}),
        ("DELETE", f"/api/templates/{t}", None),
        ("GET", f"/api/instances/{i}", None),
        ("PUT", f"/api/instances/{i}", {"values": {"n": 2}}),
        ("DELETE", f"/api/instances/{i}", None),
        ("GET", f"/api/projects/{p}", None),
        ("PUT", f"/api/projects/{p}", {"name": "stolen"}),
        ("DELETE", f"/api/projects/{p}", None),
        ("GET", f"/api/projects/{p}/state", None),
        ("PUT", f"/api/projects/{p}/state", {"state": "cancelled"}),
        ("GET", f"/api/projects/{p}/specs", None),
        ("GET", f"/api/tasks/{k}", None),
        ("PUT", f"/api/tasks/{k}", {"status": "failed"}),
        ("DELETE", f"/api/keys/{o['key']['id']}", None),
        ("POST", "/api/instances", {"template_id": t, "project_id": p, "values": {"n": 3}}),
        ("POST", "/api/tasks", {"project_id": p, "service": "spec_registry", "task_type": "x"}),
    ]


async def test_cross_tenant_matrix_is_404_and_changes_nothing(api, tenant, other_tenant, owned):
    h = tenant.headers
    before = {
        "template": (await api.get(f"/api/templates/{owned['template']['id']}", headers=h)).json(),
        "instance": (await api.get(f"/api/instances/{owned['instance']['id']}", headers=h)).json(),
        "project": (await api.get(f"/api/projects/{owned['project']['id']}", headers=h)).json(),
        "task": (await api.get(f"/api/tasks/{owned['task']['id']}", headers=h)).json(),
    }
    for method, path, body in _attempts(owned):
        resp = await api.request(method, path, json=body, headers=other_tenant.headers)
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        assert "detail" in resp.json()
    # nothing changed, and A still sees everything; B's lists are empty
    for kind, path in [("template", "templates"), ("instance", "instances"), ("task", "tasks")]:
        assert (await api.get(f"/api/{path}/{owned[kind]['id']}", headers=h)).json() == before[kind]
    project = (await api.get(f"/api/projects/{owned['project']['id']}", headers=h)).json()
    assert project["name"] == before["project"]["name"] and project["state"] != "cancelled"
    keys = (await api.get("/api/keys", headers=h)).json()["items"]
    assert all(k["revoked_at"] is None for k in keys)
    for path in ["/api/templates", "/api/instances", "/api/projects", "/api/tasks"]:
        own = {"builtin": "false"} if path == "/api/templates" else {}
        assert (await api.get(path, params=own, headers=other_tenant.headers)).json()["items"] == []
    assert (await api.get("/api/events", headers=other_tenant.headers)).json()["items"] == []


async def test_app_role_does_not_bypass_rls(pool):
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select rolsuper, rolbypassrls from pg_roles where rolname = current_user")
    assert row["rolsuper"] is False and row["rolbypassrls"] is False


async def test_rls_holds_when_a_query_omits_its_tenant_filter(pool, api, tenant, other_tenant, owned):
    tables = ["spec_templates", "spec_instances", "projects", "workflow_tasks", "events", "api_keys", "users"]
    async with tenant_tx(pool, other_tenant.tenant_id) as conn:
        for table in tables:  # no `where tenant_id = ...`: RLS alone must hide A's rows
            leaked = await conn.fetchval(f"select count(*) from {table} where tenant_id = $1", tenant.tenant_id)
            assert leaked == 0, table
        assert await conn.fetchval("select count(*) from tenants where id = $1", tenant.tenant_id) == 0
        updated = await conn.execute("update projects set name = 'x'")
        assert updated == "UPDATE 0"
    async with tenant_tx(pool, tenant.tenant_id) as conn:  # its own template, and the built-in ones
        assert await conn.fetchval("select count(*) from spec_templates where tenant_id = $1", tenant.tenant_id) == 1
        builtin = await conn.fetchval("select count(*) from spec_templates where tenant_id = $1", uuid.UUID(int=0))
        assert builtin == await conn.fetchval("select count(*) from spec_templates") - 1 >= 2
    async with plain_tx(pool) as conn:  # no tenant context at all: nothing but the built-ins is visible
        for table in tables:
            hidden = "where tenant_id <> '00000000-0000-0000-0000-000000000000'" if table == "spec_templates" else ""
            assert await conn.fetchval(f"select count(*) from {table} {hidden}") == 0, table


async def test_rls_rejects_writing_a_row_for_another_tenant(pool, tenant, other_tenant):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_tx(pool, other_tenant.tenant_id) as conn:
            await conn.execute(
                """insert into projects (id, tenant_id, name, state, user_id, created_at, updated_at)
                   values (gen_random_uuid(), $1, 'evil', 'initialization', gen_random_uuid(), now(), now())""",
                tenant.tenant_id,
            )


async def test_tenant_context_is_transaction_local(stack):
    """set_config(..., true) never leaks to the next user of a pooled connection."""
    conn = await asyncpg.connect(stack.settings.app_dsn())
    try:
        async with conn.transaction():
            await conn.execute("select set_config('specmill.tenant_id', gen_random_uuid()::text, true)")
            assert await conn.fetchval("select specmill_current_tenant()") is not None
        assert await conn.fetchval("select specmill_current_tenant()") is None
    finally:
        await conn.close()


@pytest.fixture
async def one_connection(stack):
    """A pool of one connection: each transaction below runs on the connection the previous one left."""
    from store.db import create_pool

    pool = await create_pool(stack.with_(db_pool_min=1, db_pool_max=1))
    yield pool
    await pool.close()


async def test_a_transaction_opens_with_its_tenant_in_one_round_trip(one_connection, tenant):
    """BEGIN and the tenant's set_config go as one message (store/db.py); then the statement, then COMMIT,
    and nothing on release. asyncpg's query logger sees each message the connection sends."""
    sent: list[str] = []
    async with one_connection.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))  # it stays on the connection
    async with tenant_tx(one_connection, tenant.tenant_id) as conn:
        assert await conn.fetchval("select specmill_current_tenant()") == tenant.tenant_id
    async with one_connection.acquire() as conn:
        assert not conn.is_in_transaction()
    assert sent == [
        f"begin; select set_config('specmill.tenant_id', '{tenant.tenant_id}', true)",
        "select specmill_current_tenant()",
        "commit",
    ]


async def test_every_transaction_sets_its_tenant_even_over_a_leaked_session_setting(one_connection, tenant):
    """Connections go back to the pool without a reset query: a session-level setting someone left on one
    (never our code: store/db.py) would stay, so every transaction sets the tenant itself, or none."""
    async with one_connection.acquire() as conn:
        await conn.execute("select set_config('specmill.tenant_id', $1, false)", str(uuid.uuid4()))  # the mistake
    async with plain_tx(one_connection) as conn:
        assert await conn.fetchval("select specmill_current_tenant()") is None
        assert await conn.fetchval("select count(*) from projects") == 0
    async with tenant_tx(one_connection, tenant.tenant_id) as conn:
        assert await conn.fetchval("select specmill_current_tenant()") == tenant.tenant_id


async def test_a_tenant_is_a_uuid_never_text(pool):
    with pytest.raises(TypeError):
        async with tenant_tx(pool, "00000000-0000-0000-0000-000000000000'; drop table projects; --"):  # type: ignore[arg-type]
            pass


async def test_every_table_with_a_tenant_has_row_level_security_forced(pool):
    """A new table that holds a tenant's rows gets the same policy as the others, or this fails."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """select c.relname, c.relrowsecurity, c.relforcerowsecurity,
                      exists (select 1 from pg_policy p where p.polrelid = c.oid) as has_policy
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = 'public' and c.relkind = 'r'
                 and exists (select 1 from pg_attribute a
                             where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)"""
        )
    assert len(rows) > 10 and "run_snapshots" in {r["relname"] for r in rows}
    loose = [r["relname"] for r in rows if not (r["relrowsecurity"] and r["relforcerowsecurity"] and r["has_policy"])]
    assert not loose, loose
