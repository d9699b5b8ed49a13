"""The pipeline's data layer and its read/settings API: tenant and project settings, templates attached
to projects, artifacts stored idempotently by content hash, and their list and zip download.

Projects are made with the store (the row and its project.created event, no workflow), so these tests
exercise the data layer on its own; the gateway serves every service in process, without workers."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile

import pytest

from api.security.rbac import required_role
from api.services import owner_of
from models.builtin_templates import BUILTINS, builtin_id
from models.common import Role
from models.orchestrator import ProjectCreate
from models.pipeline import ProjectSettingsUpdate, TenantSettingsUpdate
from models.registry import InstanceCreate
from store import artifacts, instances, pipeline_settings, projects
from store.db import tenant_tx
from store.errors import Conflict, Invalid, NotFound
from store.tenants import create_api_key
from tests.conftest import _client, page_ids
from tests.techniques import BEAM, GRAMMAR, HIERARCHICAL, RETRIEVAL

DEFAULTS = {
    "default_templates": [],
    "generation_concurrency": 2,
    "debug_rounds": 2,
    "model": "local_llama",
    "techniques": [],
    "max_new_tokens": 384,
    "n": 1,
    "options": {},
}
FUNCTION = builtin_id("python-function", "1.0.0")


@pytest.fixture(scope="module")
async def client(stack):
    """The gateway with every service in process (no workers: nothing here needs them)."""
    async for c in _client(stack.settings):
        yield c


async def _project(pool, tenant, name="p") -> uuid.UUID:
    async with projects.creating_project(
        pool, tenant_id=tenant.tenant_id, user_id=tenant.user_id, body=ProjectCreate(name=name)
    ) as project:
        return project.id


def _saved(resp) -> dict:
    """PUT .../settings' answer as GET shows the settings: its `applies_to` and `note` aside (a project
    made here has no run that fixed its settings: they reach the run that is going)."""
    body = resp.json()
    assert (body.pop("applies_to"), body.pop("note")) == (
        "this run",
        "the run that is going has not fixed its settings yet: it uses these",
    ), body
    return body


async def _instance(pool, tenant, project_id, name="add") -> uuid.UUID:
    inst = await instances.create_instance(
        pool,
        tenant_id=tenant.tenant_id,
        user_id=tenant.user_id,
        body=InstanceCreate(
            template_id=FUNCTION,
            project_id=project_id,
            values={"function_name": name, "description": f"{name} two numbers"},
        ),
    )
    return inst.id


async def _store(
    pool,
    tenant,
    project_id,
    instance_id,
    content,
    *,
    path="add.py",
    values_hash="v1",
    round=1,
    checks=None,
    generation_id=None,
):
    return await artifacts.store_artifact(
        pool,
        tenant_id=tenant.tenant_id,
        project_id=project_id,
        instance_id=instance_id,
        path=path,
        content=content,
        values_hash=values_hash,
        template_id=FUNCTION,
        template_name="python-function",
        template_version="1.0.0",
        model="local_llama",
        techniques=[RETRIEVAL],
        retrieved_snippets=[uuid.uuid4()],
        generation_id=generation_id,
        round=round,
        checks=checks if checks is not None else {"parse": "ok"},
    )


async def _key(pool, tenant, role: Role) -> dict[str, str]:
    return {"X-API-Key": (await create_api_key(pool, tenant_id=tenant.tenant_id, role=role)).api_key}


# --- tenant settings ------------------------------------------------------------------------


async def test_tenant_settings_default_then_merge_and_null_resets(client, tenant):
    h = tenant.headers
    assert (await client.get("/api/settings", headers=h)).json() == DEFAULTS
    resp = await client.put("/api/settings", json={"debug_rounds": 5, "techniques": [RETRIEVAL]}, headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {**DEFAULTS, "debug_rounds": 5, "techniques": [RETRIEVAL]}
    resp = await client.put("/api/settings", json={"model": "openai_api", "generation_concurrency": 16}, headers=h)
    assert resp.json() == {
        **DEFAULTS,
        "debug_rounds": 5,
        "techniques": [RETRIEVAL],
        "model": "openai_api",
        "generation_concurrency": 16,
    }
    resp = await client.put("/api/settings", json={"debug_rounds": None, "techniques": None}, headers=h)
    assert resp.json() == {**DEFAULTS, "model": "openai_api", "generation_concurrency": 16}
    assert (await client.get("/api/settings", headers=h)).json() == resp.json()
    # repeated techniques collapse, in order; an empty PUT changes nothing
    resp = await client.put(
        "/api/settings",
        json={"techniques": [HIERARCHICAL, RETRIEVAL, HIERARCHICAL]},
        headers=h,
    )
    assert resp.json()["techniques"] == [HIERARCHICAL, RETRIEVAL]
    assert (await client.put("/api/settings", json={}, headers=h)).json() == resp.json()


@pytest.mark.parametrize(
    "body, says",
    [
        ({"model": "gpt-17"}, "Input should be 'local_llama', 'deepseek_8b', 'openai_api' or 'anthropic_api'"),
        ({"model": "local\u0000llama"}, "Input should be 'local_llama'"),
        ({"techniques": ["telepathy"]}, "unknown technique(s): telepathy"),
        ({"techniques": [HIERARCHICAL, GRAMMAR]}, "cannot be combined with hierarchical_generation"),
        ({"default_templates": [{"name": "no-such-template"}]}, "'no-such-template' not found"),
        ({"default_templates": [{"name": "python-function", "version": "9.9.9"}]}, "version '9.9.9' not found"),
        ({"default_templates": [{"name": "bad\u0000name"}]}, None),
        ({"generation_concurrency": 0}, None),
        ({"generation_concurrency": 17}, None),
        ({"debug_rounds": -1}, None),
        ({"debug_rounds": 11}, None),
        ({"max_new_tokens": 15}, None),
        ({"max_new_tokens": 4097}, None),
        ({"max_new_tokens": "many"}, None),
        ({"max_new_tokens": 1.5}, None),
        ({"techniques": "retrieval"}, None),
        ({"techniques": [1]}, None),
        ({"default_templates": [{"name": ""}]}, None),
        ({"default_templates": [{"name": "x", "extra": 1}]}, None),
        ({"default_templates": ["python-function"]}, None),
        ({"default_templates": [{"name": "python-function"}] * 51}, None),
        ({"tenant_id": str(uuid.uuid4())}, None),
        ({"updated_at": "2026-01-01T00:00:00"}, None),
        ({"colour": "blue"}, None),
        ({"n": 0}, None),
        ({"n": 9}, None),
        ({"options": {BEAM: {"width": 2}}}, "not among the requested techniques"),
        ({"options": {BEAM: {"width": 9}}}, None),
        ({"options": {"telepathy": {}}}, None),
        ({"techniques": [BEAM], "n": 3}, "n must be 1"),
    ],
)
async def test_bad_tenant_settings_are_422_and_change_nothing(client, tenant, body, says):
    h = tenant.headers
    await client.put("/api/settings", json={"debug_rounds": 7}, headers=h)
    before = (await client.get("/api/settings", headers=h)).json()
    resp = await client.put("/api/settings", json=body, headers=h)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]
    if says:
        assert says in str(resp.json()["detail"])
    assert (await client.get("/api/settings", headers=h)).json() == before


async def test_malformed_settings_bodies_are_4xx(client, tenant):
    h = {**tenant.headers, "content-type": "application/json"}
    for content in [b"{", b"[]", b"null", b'"x"', b"\xff\xfe", json.dumps({"model": "x" * 101}).encode()]:
        resp = await client.put("/api/settings", content=content, headers=h)
        assert 400 <= resp.status_code < 500, (content, resp.status_code, resp.text)
        assert "detail" in resp.json()
    assert (await client.get("/api/settings", headers=tenant.headers)).json() == DEFAULTS


async def test_default_templates_resolve_own_and_builtin(client, tenant):
    h = tenant.headers
    resp = await client.post(
        "/api/templates", json={"name": "mine", "version": "1.0.0", "schema": {"type": "object"}}, headers=h
    )
    assert resp.status_code == 201, resp.text
    refs = [
        {"name": "mine", "version": None},
        {"name": "python-function", "version": "1.0.0"},
        {"name": "mine", "version": None},
    ]
    resp = await client.put("/api/settings", json={"default_templates": refs}, headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.json()["default_templates"] == refs[:2]  # the repeated one once


async def test_only_admins_change_tenant_settings(client, pool, tenant):
    viewer, editor, admin = [await _key(pool, tenant, r) for r in (Role.viewer, Role.editor, Role.admin)]
    for h in (viewer, editor):
        resp = await client.put("/api/settings", json={"debug_rounds": 9}, headers=h)
        assert resp.status_code == 403, resp.text
        assert (await client.get("/api/settings", headers=h)).json() == DEFAULTS
    assert (await client.put("/api/settings", json={"debug_rounds": 9}, headers=admin)).json()["debug_rounds"] == 9
    assert (await client.get("/api/settings", headers=viewer)).json()["debug_rounds"] == 9


# --- project settings -----------------------------------------------------------------------


async def test_project_settings_override_the_tenant_and_null_clears(client, pool, tenant):
    h = tenant.headers
    pid = await _project(pool, tenant)
    eff = {k: v for k, v in DEFAULTS.items() if k != "default_templates"}
    assert (await client.get(f"/api/projects/{pid}/settings", headers=h)).json() == eff
    tenant_wide = {
        "model": "openai_api",
        "techniques": [RETRIEVAL],
        "max_new_tokens": 500,
        "debug_rounds": 4,
        "generation_concurrency": 3,
        "n": 1,
        "options": {},
    }
    assert (await client.put("/api/settings", json=tenant_wide, headers=h)).status_code == 200
    assert (await client.get(f"/api/projects/{pid}/settings", headers=h)).json() == tenant_wide

    resp = await client.put(
        f"/api/projects/{pid}/settings",
        json={"model": "local_llama", "max_new_tokens": 128, "techniques": []},
        headers=h,
    )
    assert resp.status_code == 200, resp.text
    assert _saved(resp) == {**tenant_wide, "model": "local_llama", "max_new_tokens": 128, "techniques": []}
    resp = await client.put(f"/api/projects/{pid}/settings", json={"debug_rounds": 0}, headers=h)  # merges
    assert _saved(resp) == {
        **tenant_wide,
        "model": "local_llama",
        "max_new_tokens": 128,
        "techniques": [],
        "debug_rounds": 0,
    }
    resp = await client.put(f"/api/projects/{pid}/settings", json={"model": None, "techniques": None}, headers=h)
    assert _saved(resp) == {**tenant_wide, "max_new_tokens": 128, "debug_rounds": 0}
    # the tenant's later change shows through where the project has no choice of its own
    await client.put("/api/settings", json={"model": "local_llama", "max_new_tokens": 1000}, headers=h)
    got = (await client.get(f"/api/projects/{pid}/settings", headers=h)).json()
    assert got == {**tenant_wide, "model": "local_llama", "max_new_tokens": 128, "debug_rounds": 0}
    assert (
        got
        == (await pipeline_settings.effective_settings(pool, tenant_id=tenant.tenant_id, project_id=pid)).model_dump()
    )
    # another project of the tenant is untouched
    other = await _project(pool, tenant, "q")
    assert (await client.get(f"/api/projects/{other}/settings", headers=h)).json()["max_new_tokens"] == 1000


async def test_candidates_and_technique_options_are_settings(client, pool, tenant):
    """n and the techniques' parameters: tenant defaults, project overrides, checked against the techniques
    the project ends up with (its own or the tenant's)."""
    h = tenant.headers
    pid = await _project(pool, tenant)
    resp = await client.put("/api/settings", json={"n": 3}, headers=h)
    assert resp.status_code == 200 and resp.json()["n"] == 3
    assert (await client.get(f"/api/projects/{pid}/settings", headers=h)).json()["n"] == 3
    # beam search with the tenant's n of 3 cannot run: refused until the project asks for one candidate
    beam = {"techniques": [BEAM], "options": {BEAM: {"width": 2}}}
    resp = await client.put(f"/api/projects/{pid}/settings", json=beam, headers=h)
    assert resp.status_code == 422 and "n must be 1" in resp.json()["detail"], resp.text
    assert (await client.get(f"/api/projects/{pid}/settings", headers=h)).json()["techniques"] == []
    resp = await client.put(f"/api/projects/{pid}/settings", json={**beam, "n": 1}, headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.json()["n"] == 1
    assert resp.json()["options"] == {BEAM: {"width": 2, "length_penalty": 1.0, "visible_tests": True}}
    eff = await pipeline_settings.effective_settings(pool, tenant_id=tenant.tenant_id, project_id=pid)
    assert getattr(eff.options, BEAM).width == 2 and eff.n == 1
    # null goes back to the tenant's
    resp = await client.put(
        f"/api/projects/{pid}/settings", json={"techniques": None, "options": None, "n": None}, headers=h
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["n"], resp.json()["options"], resp.json()["techniques"]) == (3, {}, [])
    assert (await client.put("/api/settings", json={"n": None}, headers=h)).json()["n"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-17"},
        {"techniques": ["telepathy"]},
        {"techniques": [HIERARCHICAL, GRAMMAR]},
        {"max_new_tokens": 8},
        {"max_new_tokens": 5000},
        {"debug_rounds": 11},
        {"debug_rounds": -1},
        {"generation_concurrency": 4},
        {"default_templates": []},
        {"techniques": "x"},
        {"model": 3},
        {"n": 0},
        {"n": 9},
        {"options": {GRAMMAR: {"retries": 1}}},
        {"options": {BEAM: {"width": 0}}},
        {"techniques": [BEAM], "n": 2},
    ],
)
async def test_bad_project_settings_are_422_and_change_nothing(client, pool, tenant, body):
    pid = await _project(pool, tenant)
    h = tenant.headers
    before = _saved(await client.put(f"/api/projects/{pid}/settings", json={"debug_rounds": 6}, headers=h))
    resp = await client.put(f"/api/projects/{pid}/settings", json=body, headers=h)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]
    assert (await client.get(f"/api/projects/{pid}/settings", headers=h)).json() == before


async def test_editors_change_project_settings_viewers_do_not(client, pool, tenant):
    pid = await _project(pool, tenant)
    viewer, editor = await _key(pool, tenant, Role.viewer), await _key(pool, tenant, Role.editor)
    resp = await client.put(f"/api/projects/{pid}/settings", json={"debug_rounds": 9}, headers=viewer)
    assert resp.status_code == 403, resp.text
    assert (await client.get(f"/api/projects/{pid}/settings", headers=viewer)).json()["debug_rounds"] == 2
    resp = await client.put(f"/api/projects/{pid}/settings", json={"debug_rounds": 9}, headers=editor)
    assert resp.status_code == 200 and resp.json()["debug_rounds"] == 9


async def test_settings_store_calls_refuse_bad_input(pool, tenant, other_tenant):
    pid = await _project(pool, tenant)
    with pytest.raises(NotFound):
        await pipeline_settings.effective_settings(pool, tenant_id=other_tenant.tenant_id, project_id=pid)
    with pytest.raises(NotFound):
        await pipeline_settings.put_project_settings(
            pool, tenant_id=other_tenant.tenant_id, project_id=pid, update=ProjectSettingsUpdate(debug_rounds=1)
        )
    with pytest.raises(Invalid, match="unknown model"):
        await pipeline_settings.put_project_settings(
            pool,
            tenant_id=tenant.tenant_id,
            project_id=pid,
            update=ProjectSettingsUpdate.model_construct(model="nope"),  # past the contract
        )
    with pytest.raises(Invalid, match="'ghost' not found"):
        await pipeline_settings.put_tenant_settings(
            pool, tenant_id=tenant.tenant_id, update=TenantSettingsUpdate(default_templates=[{"name": "ghost"}])
        )
    # another tenant's own template does not resolve either
    async with tenant_tx(pool, other_tenant.tenant_id) as conn:
        await conn.execute(
            """insert into spec_templates (id, tenant_id, name, version, schema, created_at, updated_at)
               values ($1, $2, 'theirs', '1', '{}'::jsonb, now(), now())""",
            uuid.uuid4(),
            other_tenant.tenant_id,
        )
    with pytest.raises(Invalid, match="'theirs' not found"):
        await pipeline_settings.put_tenant_settings(
            pool, tenant_id=tenant.tenant_id, update=TenantSettingsUpdate(default_templates=[{"name": "theirs"}])
        )


# --- attached templates ---------------------------------------------------------------------


async def test_attach_builtin_templates_is_idempotent(client, pool, tenant):
    pid = await _project(pool, tenant)
    first = await pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid)
    second = await pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid)
    latest = {name: version for name, version, _, _ in BUILTINS}  # BUILTINS lists each name's versions in order
    assert latest["python-function"] == "1.1.0"
    expected = sorted((name, version, builtin_id(name, version)) for name, version in latest.items())
    assert first == second == [tid for _, _, tid in expected]
    assert await pipeline_settings.list_project_templates(pool, tenant_id=tenant.tenant_id, project_id=pid) == first
    async with tenant_tx(pool, tenant.tenant_id) as conn:
        assert await conn.fetchval("select count(*) from project_templates where project_id = $1", pid) == len(first)
    resp = await client.get(f"/api/projects/{pid}/templates", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "items": [
            {"id": str(tid), "name": name, "version": version, "builtin": True} for name, version, tid in expected
        ],
        "next_cursor": None,
    }
    # concurrent attaches (two workers) still leave one row per template
    results = await asyncio.gather(
        *[pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid) for _ in range(4)]
    )
    assert all(r == first for r in results)


async def test_attach_configured_defaults_latest_version_and_detach_on_delete(client, pool, tenant):
    h = tenant.headers
    made = {}
    for version in ("1.9.0", "1.10.0"):
        resp = await client.post(
            "/api/templates", json={"name": "mine", "version": version, "schema": {"type": "object"}}, headers=h
        )
        made[version] = resp.json()["id"]
    await client.put(
        "/api/settings",
        json={"default_templates": [{"name": "mine"}, {"name": "python-class", "version": "1.0.0"}]},
        headers=h,
    )
    pid = await _project(pool, tenant)
    first = await pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid)
    assert await pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid) == first
    assert set(first) == {uuid.UUID(made["1.10.0"]), builtin_id("python-class", "1.0.0")}
    listed = (await client.get(f"/api/projects/{pid}/templates", headers=h)).json()["items"]
    assert {(t["name"], t["version"], t["builtin"]) for t in listed} == {
        ("mine", "1.10.0", False),
        ("python-class", "1.0.0", True),
    }
    # deleting an attached template of the tenant's own detaches it (never a 500)
    resp = await client.delete(f"/api/templates/{made['1.10.0']}", headers=h)
    assert resp.status_code == 204, resp.text
    assert [t["name"] for t in (await client.get(f"/api/projects/{pid}/templates", headers=h)).json()["items"]] == [
        "python-class"
    ]
    # the configured default now resolves to the remaining version
    again = await pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid)
    assert uuid.UUID(made["1.9.0"]) in again


async def test_attach_for_another_tenants_project_is_not_found(pool, tenant, other_tenant):
    pid = await _project(pool, tenant)
    with pytest.raises(NotFound):
        await pipeline_settings.attach_templates(pool, tenant_id=other_tenant.tenant_id, project_id=pid)
    assert await pipeline_settings.list_project_templates(pool, tenant_id=tenant.tenant_id, project_id=pid) == []


# --- artifacts ------------------------------------------------------------------------------


async def _current_count(pool, tenant, instance_id) -> int:
    async with tenant_tx(pool, tenant.tenant_id) as conn:
        return await conn.fetchval("select count(*) from artifacts where instance_id = $1 and current", instance_id)


async def test_store_artifact_is_idempotent_by_content(pool, tenant):
    pid = await _project(pool, tenant)
    iid = await _instance(pool, tenant, pid)
    code = "def add(a, b):\n    return a + b\n"
    gen = uuid.uuid4()
    a = await _store(pool, tenant, pid, iid, code, generation_id=gen)
    assert a.current and a.content_hash == artifacts.content_hash(code) and len(a.content_hash) == 64
    assert a.template_id == FUNCTION and a.techniques == [RETRIEVAL] and a.generation_id == gen
    assert a.retrieved_snippets and a.test_status is None and a.tests is None
    again = await _store(pool, tenant, pid, iid, code, round=2, checks={"parse": "ok", "ruff": "ok"})
    assert again.id == a.id and again.round == 2 and again.checks == {"parse": "ok", "ruff": "ok"}
    assert again.generation_id is None and again.created_at == a.created_at
    rows = await artifacts.list_artifacts(pool, tenant_id=tenant.tenant_id, project_id=pid, current_only=False)
    assert [r.id for r in rows] == [a.id]
    # concurrent stores of the same content (a retried activity beside its first attempt): one row
    same = await asyncio.gather(*[_store(pool, tenant, pid, iid, code) for _ in range(5)])
    assert {s.id for s in same} == {a.id}
    assert (
        len(await artifacts.list_artifacts(pool, tenant_id=tenant.tenant_id, project_id=pid, current_only=False)) == 1
    )


async def test_new_content_leaves_exactly_one_current_artifact(pool, tenant):
    pid = await _project(pool, tenant)
    add, mul = await _instance(pool, tenant, pid, "add"), await _instance(pool, tenant, pid, "mul")
    v1 = await _store(pool, tenant, pid, add, "def add(a, b): return a + b\n")
    m1 = await _store(pool, tenant, pid, mul, "def mul(a, b): return a * b\n", path="mul.py", values_hash="m1")
    v2 = await _store(pool, tenant, pid, add, "def add(a, b):\n    return b + a\n", values_hash="v2", round=2)
    assert v2.id != v1.id and v2.current
    current = await artifacts.list_artifacts(pool, tenant_id=tenant.tenant_id, project_id=pid)
    assert [(c.path, c.id) for c in current] == [("add.py", v2.id), ("mul.py", m1.id)]
    everything = await artifacts.list_artifacts(pool, tenant_id=tenant.tenant_id, project_id=pid, current_only=False)
    assert [(c.path, c.id, c.current) for c in everything] == [
        ("add.py", v2.id, True),
        ("add.py", v1.id, False),
        ("mul.py", m1.id, True),
    ]
    assert await artifacts.current_values_hashes(pool, tenant_id=tenant.tenant_id, project_id=pid) == {
        add: "v2",
        mul: "m1",
    }
    # going back to the first content reuses its row and makes it current again
    back = await _store(pool, tenant, pid, add, "def add(a, b): return a + b\n", values_hash="v3", round=3)
    assert back.id == v1.id and back.current and back.values_hash == "v3"
    assert await artifacts.current_values_hashes(pool, tenant_id=tenant.tenant_id, project_id=pid) == {
        add: "v3",
        mul: "m1",
    }
    # racing writers of different contents for one instance: still exactly one current
    await asyncio.gather(
        *[_store(pool, tenant, pid, add, f"def add(a, b): return {n}\n", values_hash=f"r{n}") for n in range(6)]
    )
    assert await _current_count(pool, tenant, add) == 1 and await _current_count(pool, tenant, mul) == 1


async def test_record_test_result_and_what_a_restore_keeps(pool, tenant, other_tenant):
    pid = await _project(pool, tenant)
    iid = await _instance(pool, tenant, pid)
    a = await _store(pool, tenant, pid, iid, "def add(a, b): return a - b\n")
    tests = {"passed": 1, "failed": 1, "failures": [{"test": "assert add(1, 2) == 3", "error": "AssertionError"}]}
    got = await artifacts.record_test_result(
        pool, tenant_id=tenant.tenant_id, artifact_id=a.id, test_status="failed", tests=tests
    )
    assert got.test_status == "failed" and got.tests == tests and got.id == a.id
    listed = await artifacts.list_artifacts(pool, tenant_id=tenant.tenant_id, project_id=pid)
    assert listed[0].test_status == "failed" and listed[0].tests == tests
    # the same code for the same values keeps its result; for changed values the old result no longer holds
    assert (await _store(pool, tenant, pid, iid, "def add(a, b): return a - b\n", round=2)).test_status == "failed"
    cleared = await _store(pool, tenant, pid, iid, "def add(a, b): return a - b\n", values_hash="other")
    assert cleared.test_status is None and cleared.tests is None
    with pytest.raises(Invalid, match="unknown test status"):
        await artifacts.record_test_result(
            pool, tenant_id=tenant.tenant_id, artifact_id=a.id, test_status="green", tests={}
        )
    with pytest.raises(NotFound):
        await artifacts.record_test_result(
            pool, tenant_id=tenant.tenant_id, artifact_id=uuid.uuid4(), test_status="passed", tests={}
        )
    with pytest.raises(NotFound):
        await artifacts.record_test_result(
            pool, tenant_id=other_tenant.tenant_id, artifact_id=a.id, test_status="passed", tests={}
        )
    for status in ("passed", "error", "timeout", "no_tests"):
        got = await artifacts.record_test_result(
            pool, tenant_id=tenant.tenant_id, artifact_id=a.id, test_status=status, tests={"status": status}
        )
        assert got.test_status == status


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../up.py",
        "a/../../b.py",
        "a//b.py",
        "./a.py",
        "a/",
        "a\\b.py",
        "a\nb.py",
        "x" * 501,
        "manifest.json",
    ],
)
async def test_store_artifact_refuses_paths_outside_the_tree(pool, tenant, path):
    pid = await _project(pool, tenant)
    iid = await _instance(pool, tenant, pid)
    with pytest.raises(Invalid):
        await _store(pool, tenant, pid, iid, "x = 1\n", path=path)
    assert await artifacts.list_artifacts(pool, tenant_id=tenant.tenant_id, project_id=pid, current_only=False) == []


async def test_store_artifact_refuses_foreign_and_conflicting_references(pool, tenant, other_tenant):
    pid, elsewhere = await _project(pool, tenant), await _project(pool, tenant, "other")
    iid, stranger = await _instance(pool, tenant, pid), await _instance(pool, tenant, elsewhere)
    with pytest.raises(NotFound):  # an instance of another project
        await _store(pool, tenant, pid, stranger, "x = 1\n")
    with pytest.raises(NotFound):  # another tenant's project and instance
        await artifacts.store_artifact(
            pool,
            tenant_id=other_tenant.tenant_id,
            project_id=pid,
            instance_id=iid,
            path="a.py",
            content="",
            values_hash="v",
            template_id=None,
            template_name="t",
            template_version="1",
            model="local_llama",
            techniques=[],
            retrieved_snippets=[],
            generation_id=None,
            round=1,
            checks={},
        )
    with pytest.raises(NotFound):
        await artifacts.list_artifacts(pool, tenant_id=other_tenant.tenant_id, project_id=pid)
    assert await artifacts.current_values_hashes(pool, tenant_id=other_tenant.tenant_id, project_id=pid) == {}
    # a path is one instance's at a time
    await _store(pool, tenant, pid, iid, "def add(a, b): return a + b\n")
    second = await _instance(pool, tenant, pid, "mul")
    with pytest.raises(Conflict, match="add.py"):
        await _store(pool, tenant, pid, second, "def mul(a, b): return a * b\n")
    assert await _current_count(pool, tenant, second) == 0


async def test_deleting_an_instance_takes_its_artifacts(client, pool, tenant):
    pid = await _project(pool, tenant)
    iid = await _instance(pool, tenant, pid)
    await _store(pool, tenant, pid, iid, "x = 1\n")
    resp = await client.delete(f"/api/instances/{iid}", headers=tenant.headers)
    assert resp.status_code == 204, resp.text
    assert await artifacts.list_artifacts(pool, tenant_id=tenant.tenant_id, project_id=pid, current_only=False) == []


# --- artifacts API --------------------------------------------------------------------------


async def test_artifacts_list_and_zip(client, pool, tenant):
    h = tenant.headers
    pid = await _project(pool, tenant)
    add, sub = await _instance(pool, tenant, pid, "add"), await _instance(pool, tenant, pid, "sub")
    old = await _store(pool, tenant, pid, add, "def add(a, b): return a\n")
    new = await _store(pool, tenant, pid, add, "def add(a, b):\n    return a + b\n", values_hash="v2", round=2)
    s = await _store(pool, tenant, pid, sub, "def sub(a, b):\n    return a - b\n", path="pkg/sub.py", values_hash="s1")
    await artifacts.record_test_result(
        pool, tenant_id=tenant.tenant_id, artifact_id=new.id, test_status="passed", tests={"passed": 2, "failed": 0}
    )

    resp = await client.get(f"/api/projects/{pid}/artifacts", headers=h)
    assert resp.status_code == 200, resp.text
    body = resp.json()["items"]
    assert resp.json()["next_cursor"] is None
    assert [(a["path"], a["id"]) for a in body] == [("add.py", str(new.id)), ("pkg/sub.py", str(s.id))]
    first = body[0]
    assert first["test_status"] == "passed" and first["tests"] == {"passed": 2, "failed": 0}
    assert first["instance_id"] == str(add) and first["template_name"] == "python-function"
    assert first["template_version"] == "1.0.0" and first["model"] == "local_llama" and first["round"] == 2
    assert first["content"].startswith("def add") and first["created_at"].endswith("+00:00")
    assert first["values_hash"] == "v2" and first["checks"] == {"parse": "ok"} and first["current"] is True
    everything = (await client.get(f"/api/projects/{pid}/artifacts", params={"all": "true"}, headers=h)).json()["items"]
    assert [a["id"] for a in everything] == [str(old.id), str(new.id), str(s.id)]  # oldest first
    pages = await page_ids(client, f"/api/projects/{pid}/artifacts", h, limit=1, all="true")
    assert pages == [[str(old.id)], [str(new.id)], [str(s.id)]]

    resp = await client.get(f"/api/projects/{pid}/artifacts.zip", headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    assert f'filename="project-{pid}-artifacts.zip"' in resp.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert zf.namelist() == ["add.py", "pkg/sub.py", "manifest.json"]
        assert zf.read("add.py").decode() == "def add(a, b):\n    return a + b\n"
        assert zf.read("pkg/sub.py").decode() == "def sub(a, b):\n    return a - b\n"
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["project_id"] == str(pid)
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"add.py", "pkg/sub.py"}
    assert files["add.py"]["test_status"] == "passed" and files["add.py"]["content_hash"] == new.content_hash
    assert files["add.py"]["retrieved_snippets"] == first["retrieved_snippets"]
    assert files["pkg/sub.py"]["test_status"] is None and "content" not in files["add.py"]
    # the same artifacts give the same bytes
    assert (await client.get(f"/api/projects/{pid}/artifacts.zip", headers=h)).content == resp.content


async def test_empty_project_zip_has_only_the_manifest(client, pool, tenant):
    pid = await _project(pool, tenant)
    assert (await client.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"] == []
    resp = await client.get(f"/api/projects/{pid}/artifacts.zip", headers=tenant.headers)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert zf.namelist() == ["manifest.json"]
        assert json.loads(zf.read("manifest.json")) == {
            "project_id": str(pid),
            "state": "initialization",
            "run_id": None,
            "outcome": None,
            "files": [],
        }


async def test_viewers_read_everything_new(client, pool, tenant):
    viewer = await _key(pool, tenant, Role.viewer)
    pid = await _project(pool, tenant)
    for path in [
        "/api/settings",
        f"/api/projects/{pid}/settings",
        f"/api/projects/{pid}/templates",
        f"/api/projects/{pid}/artifacts",
        f"/api/projects/{pid}/artifacts.zip",
    ]:
        assert (await client.get(path, headers=viewer)).status_code == 200, path


async def test_another_tenants_project_is_404_on_every_new_route(client, pool, tenant, other_tenant):
    pid = await _project(pool, tenant)
    iid = await _instance(pool, tenant, pid)
    await _store(pool, tenant, pid, iid, "x = 1\n")
    await pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid)
    before = _saved(await client.put(f"/api/projects/{pid}/settings", json={"debug_rounds": 3}, headers=tenant.headers))
    attempts = [
        ("GET", f"/api/projects/{pid}/settings", None),
        ("PUT", f"/api/projects/{pid}/settings", {"debug_rounds": 9}),
        ("GET", f"/api/projects/{pid}/templates", None),
        ("GET", f"/api/projects/{pid}/artifacts", None),
        ("GET", f"/api/projects/{pid}/artifacts?all=true", None),
        ("GET", f"/api/projects/{pid}/artifacts.zip", None),
    ]
    for who in (other_tenant.headers, tenant.headers):
        for method, path, body in attempts:
            target = path if who is other_tenant.headers else path.replace(str(pid), str(uuid.uuid4()))
            resp = await client.request(method, target, json=body, headers=who)
            assert resp.status_code == 404, (method, target, resp.status_code, resp.text)
            assert "not found" in resp.json()["detail"]
    assert (await client.get(f"/api/projects/{pid}/settings", headers=tenant.headers)).json() == before
    assert len((await client.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"]) == 1
    # the other tenant's own settings are its own
    assert (await client.get("/api/settings", headers=other_tenant.headers)).json() == DEFAULTS


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/projects/not-a-uuid/settings"),
        ("PUT", "/api/projects/not-a-uuid/settings"),
        ("GET", "/api/projects/not-a-uuid/templates"),
        ("GET", "/api/projects/not-a-uuid/artifacts"),
        ("GET", "/api/projects/not-a-uuid/artifacts.zip"),
        ("GET", "/api/projects/{pid}/artifacts?all=maybe"),
    ],
)
async def test_bad_ids_and_params_are_422(client, pool, tenant, method, path):
    pid = await _project(pool, tenant)
    resp = await client.request(
        method, path.format(pid=pid), json={} if method == "PUT" else None, headers=tenant.headers
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


def test_gateway_forwards_and_guards_the_new_paths():
    remote = {"spec-registry": "http://r", "orchestrator": "http://o", "generator": "http://g", "knowledge": "http://k"}
    pid = uuid.uuid4()
    for path in [
        "/api/settings",
        f"/api/projects/{pid}/settings",
        f"/api/projects/{pid}/templates",
        f"/api/projects/{pid}/artifacts",
        f"/api/projects/{pid}/artifacts.zip",
    ]:
        assert owner_of(path, remote) == "orchestrator", path
    assert owner_of(f"/api/projects/{pid}/specs", remote) == "spec-registry"
    assert owner_of("/api/settingsx", remote) is None
    assert required_role("PUT", "/api/settings") == Role.admin
    assert required_role("PUT", f"/api/projects/{pid}/settings") == Role.editor
    for path in ["/api/settings", f"/api/projects/{pid}/artifacts.zip"]:
        assert required_role("GET", path) == Role.viewer


async def test_rls_hides_pipeline_rows_from_other_tenants(pool, tenant, other_tenant):
    pid = await _project(pool, tenant)
    iid = await _instance(pool, tenant, pid)
    await _store(pool, tenant, pid, iid, "x = 1\n")
    await pipeline_settings.attach_templates(pool, tenant_id=tenant.tenant_id, project_id=pid)
    await pipeline_settings.put_tenant_settings(
        pool, tenant_id=tenant.tenant_id, update=TenantSettingsUpdate(debug_rounds=1)
    )
    await pipeline_settings.put_project_settings(
        pool, tenant_id=tenant.tenant_id, project_id=pid, update=ProjectSettingsUpdate(debug_rounds=1)
    )
    async with tenant_tx(pool, other_tenant.tenant_id) as conn:  # no tenant filter: RLS alone hides them
        for table in ("tenant_settings", "project_settings", "project_templates", "artifacts"):
            assert await conn.fetchval(f"select count(*) from {table} where tenant_id = $1", tenant.tenant_id) == 0
        assert await conn.execute("update artifacts set current = false") == "UPDATE 0"
