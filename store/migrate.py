"""A small migration runner: applies store/migrations/*.sql in name order, once each."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x5BEC_3111  # pg_advisory_xact_lock key: one migrator at a time


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("*.sql") if p.is_file())


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded in schema_migrations; return the names applied."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute(
            """create table if not exists schema_migrations (
                 version text primary key,
                 checksum text not null,
                 applied_at timestamp not null default (now() at time zone 'utc'))"""
        )
        for path in migration_files(directory):
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            version = path.stem
            async with conn.transaction():
                await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
                row = await conn.fetchrow("select checksum from schema_migrations where version = $1", version)
                if row is not None:
                    if row["checksum"] != checksum:
                        raise RuntimeError(f"migration {path.name} changed after it was applied")
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "insert into schema_migrations (version, checksum) values ($1, $2)", version, checksum
                )
                applied.append(version)
    finally:
        await conn.close()
    return applied


async def create_database(conn: asyncpg.Connection, name: str) -> None:
    """Create database `name` unless it exists (a connection to the maintenance database)."""
    if not await conn.fetchval("select 1 from pg_database where datname = $1", name):
        await conn.execute(f'create database "{name}"')


async def set_app_password(admin_dsn: str, password: str) -> None:
    """Let the application role `specmill_app` log in with `password`."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        quoted = password.replace("'", "''")
        await conn.execute(f"alter role specmill_app with login password '{quoted}'")
    finally:
        await conn.close()
