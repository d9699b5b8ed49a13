"""Secrets and the database out of reach: PostgreSQL wants a password on its socket
too, `<data_dir>/env` is private, and the worker that runs the specs' tests gets only the secrets
it needs."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import psutil
import pytest

from infra import embedded
from workers.launcher import CHILD_SECRETS, ENV_FROM_LAUNCHER, SECRETS, child_env

ALL_SECRETS = {name: f"value-of-{name}" for name in SECRETS}


async def _socket_login(pg_dir: Path, port: int, password: str | None) -> str:
    conn = await asyncpg.connect(
        host=str(pg_dir), port=port, user="postgres", database="postgres", password=password, passfile="/nonexistent"
    )  # no ~/.pgpass either
    try:
        return await conn.fetchval("select current_user")
    finally:
        await conn.close()


# --- PostgreSQL -------------------------------------------------------------------------


async def test_superuser_needs_its_password_on_the_socket(stack, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    s = stack.settings
    assert (s.pg_dir / f".s.PGSQL.{stack.pg_port}").is_socket()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _socket_login(s.pg_dir, stack.pg_port, None)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _socket_login(s.pg_dir, stack.pg_port, "wrong")
    assert await _socket_login(s.pg_dir, stack.pg_port, s.embedded_pg_superuser_password) == "postgres"


def test_socket_directory_is_private(stack):
    pg_dir = stack.settings.pg_dir
    assert stat.S_IMODE(pg_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((pg_dir / f".s.PGSQL.{stack.pg_port}").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(pg_dir.parent.stat().st_mode) in (0o700, 0o710)  # 0710: postgres's own group, as root


@pytest.fixture
def short_tmp():
    """A short path: a Unix socket's path must stay under ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="spm-"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


async def test_trusting_data_dir_is_upgraded_on_start(short_tmp, monkeypatch, caplog):
    """A data dir initialised by an older specmill (`--auth-local=trust`) needs passwords once started."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    pg_dir, password, port = short_tmp / "postgres", secrets.token_urlsafe(12), embedded.free_port()
    user = embedded._pg_user()
    pg_dir.mkdir(mode=0o700)
    embedded._chown_tree(pg_dir, user)
    pwfile = short_tmp / "pw"
    pwfile.write_text(password)
    if user is not None:
        import pwd

        os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
    subprocess.run(
        [
            embedded._pg_bin("initdb"),
            "-D",
            str(pg_dir),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        ],
        check=True,
        capture_output=True,
        **embedded._as_user(user),
    )
    hba = pg_dir / "pg_hba.conf"
    assert any(line.split()[-1:] == ["trust"] for line in hba.read_text().splitlines() if not line.startswith("#"))

    monkeypatch.setenv("JWT_SECRET", "the-launcher-holds-it")
    with caplog.at_level(logging.WARNING, logger="specmill.embedded"):
        proc = embedded.start_postgres(pg_dir, port, short_tmp / "pg.log")
    try:
        assert "JWT_SECRET" not in psutil.Process(proc.pid).environ()  # postgres gets none of our settings
        rules = [line.split() for line in hba.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), rules
        assert [r.message for r in caplog.records if "trusted local connections" in r.message]
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _socket_login(pg_dir, port, None)
        assert await _socket_login(pg_dir, port, password) == "postgres"  # its initdb password still works
    finally:
        embedded.stop_process(proc, embedded.signal.SIGINT)
    assert embedded.require_passwords(pg_dir) is False  # once is enough


# --- the env file -----------------------------------------------------------------------


def test_existing_env_file_is_made_private(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    env = data / "env"
    env.write_text("JWT_SECRET=old\n")
    env.chmod(0o644)
    if os.geteuid() == 0:
        os.chown(env, 65534, 65534)  # written by someone else
    assert embedded.ensure_env_file(data) == env
    st = env.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert env.read_text().startswith("JWT_SECRET=old\n")


def test_new_env_file_is_private(tmp_path):
    env = embedded.ensure_env_file(tmp_path / "fresh")
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stat.S_IMODE(env.parent.stat().st_mode) == 0o700


# --- what each child is given -----------------------------------------------------------


def test_integration_worker_gets_only_the_app_database():
    base = {**ALL_SECRETS, "PATH": "/usr/bin", "DATA_DIR": "/d", "jwt_secret": "lower-case-too"}
    env = child_env("integration", base=base)
    for name in (
        "JWT_SECRET",
        "jwt_secret",
        "INTERNAL_TOKEN_SECRET",
        "PROVIDER_KEYS_SECRET",
        "EMBEDDED_PG_SUPERUSER_PASSWORD",
        "DATABASE_ADMIN_URL",
        "APP_ROLE_PASSWORD",
        "OPENAI_API_KEY",
    ):
        assert name not in env
    assert env["EMBEDDED_PG_APP_PASSWORD"] == base["EMBEDDED_PG_APP_PASSWORD"]
    assert env["DATABASE_URL"] == base["DATABASE_URL"]
    assert env["PATH"] == "/usr/bin" and env["DATA_DIR"] == "/d"  # what is not a secret passes
    assert env[ENV_FROM_LAUNCHER] == "1"


def test_each_child_gets_its_row():
    gateway, generation = child_env("gateway", base=ALL_SECRETS), child_env("generation", base=ALL_SECRETS)
    assert {"JWT_SECRET", "INTERNAL_TOKEN_SECRET", "PROVIDER_KEYS_SECRET"} <= set(gateway)
    assert "PROVIDER_KEYS_SECRET" in generation and "JWT_SECRET" not in generation
    serving = child_env("knowledge", serves=True, base=ALL_SECRETS)
    assert "INTERNAL_TOKEN_SECRET" in serving and "JWT_SECRET" not in serving
    for process in CHILD_SECRETS:
        assert "EMBEDDED_PG_SUPERUSER_PASSWORD" not in child_env(process, base=ALL_SECRETS)


def test_every_generated_secret_is_in_the_table():
    assert set(embedded.GENERATED_SECRETS) <= SECRETS


def test_integration_worker_reads_no_env_file(tmp_path):
    """Its settings are its environment: neither `.env` nor `.specmill/env` (nor DATA_DIR/env) adds a secret."""
    data = tmp_path / ".specmill"
    embedded.ensure_env_file(data)
    (tmp_path / ".env").write_text("JWT_SECRET=from-dotenv\nPROVIDER_KEYS_SECRET=from-dotenv\n")
    base = {k: v for k, v in os.environ.items() if k.upper() not in SECRETS}
    env = child_env("integration", base={**base, "DATA_DIR": str(data), "EMBEDDED_PG_APP_PASSWORD": "app-pw"})
    code = (
        "import json; from workers.cli import _settings; s = _settings(); print(json.dumps({k: getattr(s, k) "
        "for k in ('jwt_secret', 'internal_token_secret', 'provider_keys_secret', "
        "'embedded_pg_superuser_password', 'embedded_pg_app_password')}))"
    )
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "jwt_secret": None,
        "internal_token_secret": None,
        "provider_keys_secret": None,
        "embedded_pg_superuser_password": None,
        "embedded_pg_app_password": "app-pw",
    }
