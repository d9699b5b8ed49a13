"""The `specmill` command line, run as a subprocess against the test database.

The CLI reads its Settings from the environment; each run gets DATABASE_URL and JWT_SECRET from the
test stack and a temporary working directory, so no `.env` or `.specmill/env` of the checkout is used.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

SPECMILL = Path(sys.executable).parent / "specmill"
ROOT = Path(__file__).resolve().parent.parent
if not SPECMILL.exists():
    SPECMILL = ROOT / ".venv" / "bin" / "specmill"


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    def json(self):
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line of JSON on stdout, got: {self.stdout!r} (stderr {self.stderr!r})"
        return json.loads(lines[0])


@pytest.fixture
def cli(stack, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "JWT_", "SUPABASE_", "EMBEDDED_", "DATA_DIR", "TEMPORAL_"))
    }
    env.update(
        DATABASE_URL=stack.settings.app_dsn(), JWT_SECRET=stack.settings.jwt_secret, DATA_DIR=str(tmp_path / "data")
    )

    async def run(*args: str, **extra_env: str) -> Run:
        proc = await asyncio.create_subprocess_exec(
            str(SPECMILL),
            *args,
            cwd=tmp_path,
            env={**env, **extra_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return Run(proc.returncode, out.decode(), err.decode())

    return run


async def test_tenant_create_prints_one_json_object_with_a_working_owner_key(cli, api):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    run = await cli("tenant", "create", "--name", name)
    assert run.rc == 0, run.stderr
    created = run.json()
    assert set(created) >= {"tenant_id", "user_id", "api_key"}
    uuid.UUID(created["tenant_id"]), uuid.UUID(created["user_id"])
    assert created["api_key"].startswith("sm_")

    me = await api.get("/auth/me", headers={"X-API-Key": created["api_key"]})
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == created["tenant_id"]
    assert me.json()["user_id"] == created["user_id"]
    assert me.json()["role"] == "owner"
    assert (await api.get("/api/projects", headers={"X-API-Key": created["api_key"]})).status_code == 200


async def test_user_link_supabase_creates_or_links_a_user(cli, pool):
    from store.users import find_supabase_user

    tenant = (await cli("tenant", "create", "--name", f"cli-{uuid.uuid4().hex[:6]}")).json()
    sub = str(uuid.uuid4())
    run = await cli("user", "link-supabase", "--tenant", tenant["tenant_id"], "--subject", sub, "--role", "editor")
    assert run.rc == 0, run.stderr
    created = run.json()
    assert created["role"] == "editor" and created["supabase_sub"] == sub
    found = await find_supabase_user(pool, tenant_id=uuid.UUID(tenant["tenant_id"]), supabase_sub=sub)
    assert str(found.id) == created["id"]

    owner_sub = str(uuid.uuid4())
    run = await cli(
        "user", "link-supabase", "--tenant", tenant["tenant_id"], "--subject", owner_sub, "--user", tenant["user_id"]
    )
    assert run.rc == 0, run.stderr
    assert run.json()["id"] == tenant["user_id"] and run.json()["role"] == "owner"
    again = await cli(
        "user", "link-supabase", "--tenant", tenant["tenant_id"], "--subject", sub, "--user", tenant["user_id"]
    )
    assert again.rc == 1 and "already linked" in again.stderr


async def test_apikey_create_list_and_revoke(cli, api):
    tenant = (await cli("tenant", "create", "--name", f"cli-{uuid.uuid4().hex[:6]}")).json()

    run = await cli("apikey", "create", "--tenant", tenant["tenant_id"], "--role", "editor", "--name", "ci")
    assert run.rc == 0, run.stderr
    key = run.json()
    assert key["role"] == "editor" and key["tenant_id"] == tenant["tenant_id"]
    headers = {"X-API-Key": key["api_key"]}
    me = await api.get("/auth/me", headers=headers)
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "editor" and me.json()["tenant_id"] == tenant["tenant_id"]
    assert me.json()["key_id"] == key["id"]
    # an editor key: writes projects, not templates
    resp = await api.post(
        "/api/templates", headers=headers, json={"name": "t", "version": "1", "schema": {"type": "object"}}
    )
    assert resp.status_code == 403, resp.text
    token = (await api.post("/auth/token", headers=headers)).json()["access_token"]
    assert (await api.get("/auth/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200

    listed = await cli("apikey", "list", "--tenant", tenant["tenant_id"])
    assert listed.rc == 0, listed.stderr
    keys = {k["id"]: k for k in listed.json()}
    assert set(keys) >= {key["id"]} and len(keys) == 2
    assert keys[key["id"]]["name"] == "ci" and keys[key["id"]]["revoked_at"] is None
    assert key["api_key"] not in listed.stdout and tenant["api_key"] not in listed.stdout
    assert all("key_hash" not in k and "api_key" not in k for k in keys.values())

    run = await cli("apikey", "revoke", "--tenant", tenant["tenant_id"], "--key-id", key["id"])
    assert run.rc == 0, run.stderr
    assert run.json()["revoked_at"] is not None

    me = await api.get("/auth/me", headers=headers)
    assert me.status_code == 401 and "detail" in me.json()
    me = await api.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401 and "detail" in me.json()
    # the owner key is untouched
    assert (await api.get("/auth/me", headers={"X-API-Key": tenant["api_key"]})).status_code == 200

    listed = {k["id"]: k for k in (await cli("apikey", "list", "--tenant", tenant["tenant_id"])).json()}
    assert listed[key["id"]]["revoked_at"] is not None


@pytest.mark.parametrize("role", ["viewer", "admin", "owner"])
async def test_apikey_create_gives_the_role_asked_for(cli, api, role):
    tenant = (await cli("tenant", "create", "--name", f"cli-{uuid.uuid4().hex[:6]}")).json()
    key = (await cli("apikey", "create", "--tenant", tenant["tenant_id"], "--role", role)).json()
    me = await api.get("/auth/me", headers={"X-API-Key": key["api_key"]})
    assert me.status_code == 200 and me.json()["role"] == role


async def test_cli_errors_exit_nonzero_with_a_message(cli):
    tenant = (await cli("tenant", "create", "--name", f"cli-{uuid.uuid4().hex[:6]}")).json()
    other = (await cli("tenant", "create", "--name", f"cli-{uuid.uuid4().hex[:6]}")).json()
    other_key = (await cli("apikey", "create", "--tenant", other["tenant_id"], "--role", "viewer")).json()

    unknown_tenant = await cli("apikey", "create", "--tenant", str(uuid.uuid4()), "--role", "editor")
    assert unknown_tenant.rc == 1 and unknown_tenant.stdout == ""
    assert "not found" in json.loads(unknown_tenant.stderr.strip().splitlines()[-1])["error"]

    # a key of another tenant is not found through this tenant (and stays live)
    cross = await cli("apikey", "revoke", "--tenant", tenant["tenant_id"], "--key-id", other_key["id"])
    assert cross.rc == 1 and "not found" in cross.stderr
    still = await cli("apikey", "list", "--tenant", other["tenant_id"])
    assert all(k["revoked_at"] is None for k in still.json())

    bad_role = await cli("apikey", "create", "--tenant", tenant["tenant_id"], "--role", "root")
    assert bad_role.rc == 2 and bad_role.stdout == ""
    bad_uuid = await cli("apikey", "revoke", "--tenant", "nope", "--key-id", str(uuid.uuid4()))
    assert bad_uuid.rc == 2
    empty_name = await cli("tenant", "create", "--name", "")
    assert empty_name.rc != 0 and empty_name.stdout == ""


async def test_cli_says_so_when_the_database_is_unreachable(cli):
    from infra.embedded import free_port

    run = await cli(
        "tenant", "create", "--name", "x", DATABASE_URL=f"postgresql://nobody:nothing@127.0.0.1:{free_port()}/specmill"
    )
    assert run.rc == 2, (run.stdout, run.stderr)
    assert run.stdout == ""
    assert "cannot reach the database" in run.stderr
    assert "Traceback" not in run.stderr
