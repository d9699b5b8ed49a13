"""Gateway overhead benchmark (`make bench-gateway`).

In one run: start a private PostgreSQL and Temporal dev server (the same wheels and functions the
tests use) in a temp dir on free ports, provision the database, create a tenant and a few
templates, serve the real gateway (`specmill serve gateway`) and a bare FastAPI app
(bench/bare_app.py) with identical uvicorn options in two processes, load them with the same
asyncio httpx client, and report requests/s, p50 and p99 latency and server CPU per request.

    .venv/bin/python bench/gateway.py [--duration 15] [--concurrency 16] [--warmup 3] [--rounds 3]
                                      [--generate 40]

Three targets, in alternating rounds so that background load hits them alike:
- the gateway: authenticated GET /api/templates?builtin=false (X-API-Key);
- the baseline: the bare app's GET /bare/templates?builtin=false, which runs the same query
  (`store.templates.list_templates`, the same pool, the same query parameters) with no
  authentication, no limits and no middleware. The targets: at least 0.9x its req/s and at most
  1.5x its server CPU per request;
- the floor: the bare app's GET /bare, the same JSON with no query at all.
Server CPU is the CPU time of the serving uvicorn process and of PostgreSQL's processes during the
target's measured window (psutil cpu_times before and after), divided by its requests. The client
runs on the same machine; the machine's CPU model and count are recorded with the figures.

Then POST /api/generate, in this process (the app of `specmill serve gateway`, its Temporal client
and pool): the time from the request's arrival to its start_workflow call, and the database round
trips before it, read from the request's OpenTelemetry trace (an in-memory exporter: the gateway's
server span, asyncpg's span per statement, Temporal's StartWorkflow span). Its baseline, measured in
the same run: one round trip to this PostgreSQL (`select 1`). A generation worker's report of its
models is written first (workers/queues.py's ModelReporter, as `specmill worker generation` does);
no worker runs the workflows, and each request's generation slot is given back after it.

The figures go to a table, to .specmill/bench/gateway-<time>.json and, as JSON, to the last line
of stdout. Everything started here is stopped at the end, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import psutil

from infra import embedded
from infra.setup import prepare
from infra.temporal import exit_without_teardown
from models.auth import TenantCreated
from models.registry import TemplateCreate
from models.settings import Settings
from store.db import create_pool
from store.templates import create_template
from store.tenants import create_tenant

HOST = "127.0.0.1"
RPS_TARGET = 0.9  # the gateway's req/s over the same query served bare: at least
CPU_TARGET = 1.5  # its server CPU per request over the bare one's: at most
UNLIMITED = "100000000/minute"  # the limiter runs, with budgets the load never spends


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Run:
    root: Path
    procs: list[tuple[str, subprocess.Popen, int]] = field(default_factory=list)  # (name, proc, stop signal)

    def add(self, name: str, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> subprocess.Popen:
        self.procs.append((name, proc, sig))
        return proc

    def stop_all(self) -> None:
        for _name, proc, sig in reversed(self.procs):  # apps first, then Temporal, then Postgres
            try:
                embedded.stop_process(proc, sig, timeout=15)
            except Exception as err:  # noqa: BLE001 - keep stopping the others
                print(f"warning: could not stop {_name}: {err}", file=sys.stderr)
        self.procs.clear()

    def finish(self, *, keep: bool, failed: bool) -> None:
        """Stop everything; remove the run's directory unless asked to keep it or the run failed."""
        self.stop_all()
        if keep or failed:
            print(f"kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def write_figures(name: str, figures: dict) -> Path:
    """The run's figures as .specmill/bench/<name>-<time>.json (git-ignored); returns the path."""
    out_dir = ROOT / ".specmill" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return out


def make_settings(root: Path, rate_limit: str) -> Settings:
    """As tests/conftest.py: embedded Postgres and Temporal on free ports, no env files read."""
    return Settings(
        _env_file=None,
        data_dir=root,
        embedded_postgres_port=embedded.free_port(),
        embedded_pg_superuser_password=secrets.token_urlsafe(16),
        embedded_pg_app_password=secrets.token_urlsafe(16),
        temporal_address=f"{HOST}:{embedded.free_port()}",
        task_queue_prefix=f"bench-{uuid.uuid4().hex[:8]}-",
        jwt_secret=secrets.token_urlsafe(32),
        internal_token_secret=secrets.token_urlsafe(32),
        rate_limit=rate_limit,
        tenant_rate_limit=rate_limit,
    )


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def start_infra(run: Run, settings: Settings) -> None:
    embedded.init_postgres(settings.pg_dir, settings.embedded_pg_superuser_password)
    run.add(
        "postgres",
        embedded.start_postgres(settings.pg_dir, settings.embedded_postgres_port, run.root / "postgres.log"),
        signal.SIGINT,
    )
    port = int(settings.temporal_address.rpartition(":")[2])
    run.add(
        "temporal", embedded.start_temporal(port=port, ui_port=None, db_file=None, log_file=run.root / "temporal.log")
    )


async def seed(settings: Settings, templates: int) -> TenantCreated:
    """Migrations, search attributes, one tenant and `templates` templates; returns the tenant."""
    await prepare(settings)
    pool = await create_pool(settings)
    try:
        tenant = await create_tenant(pool, name="bench")
        for i in range(templates):
            body = TemplateCreate.model_validate(
                {
                    "name": f"service-{i}",
                    "version": "1.0.0",
                    "description": f"Benchmark template {i}",
                    "schema": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "maxLength": 80},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "tags": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                }
            )
            await create_template(pool, tenant_id=tenant.tenant_id, user_id=tenant.user_id, body=body)
    finally:
        await pool.close()
    return tenant


def _child_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(
        DATABASE_URL=settings.app_dsn(),
        TEMPORAL_ADDRESS=settings.temporal_address,
        TEMPORAL_EMBEDDED="false",
        JWT_SECRET=settings.jwt_secret,
        INTERNAL_TOKEN_SECRET=settings.internal_token_secret,
        RATE_LIMIT=settings.rate_limit,
        TENANT_RATE_LIMIT=settings.tenant_rate_limit,
        TASK_QUEUE_PREFIX=settings.task_queue_prefix,
        DATA_DIR=str(data_dir),
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return env


def spawn(run: Run, name: str, args: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    cwd = run.root / "cwd"  # no .env or .specmill/env here
    cwd.mkdir(exist_ok=True)
    log = open(run.root / f"{name}.log", "ab")
    proc = run.add(
        name,
        subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=embedded._die_with_parent(),
        ),
    )
    embedded.wait_for_port(HOST, port, 60, proc, name)
    return proc


# --- the load -------------------------------------------------------------------------------


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0  # CPU seconds of the server process(es) during the measured window
    body_bytes: int = 0


async def load(
    url: str,
    headers: dict[str, str],
    *,
    concurrency: int,
    seconds: float,
    record: bool,
    sample: Sample,
    procs: list[psutil.Process],
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
        await client.get(url)  # open a connection before the clock starts
        cpu0 = _cpu(procs)
        start = time.perf_counter()
        end = start + seconds
        last = start

        async def worker() -> None:
            nonlocal last
            while (t0 := time.perf_counter()) < end:
                try:
                    resp = await client.get(url)
                    ok = resp.status_code == 200
                    size = len(resp.content)
                except httpx.HTTPError:
                    ok, size = False, 0
                t1 = time.perf_counter()
                last = max(last, t1)
                if not record:
                    continue
                if ok:
                    sample.latencies.append(t1 - t0)
                    sample.body_bytes = size
                else:
                    sample.errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if record:
            sample.seconds += last - start
            sample.server_cpu += _cpu(procs) - cpu0


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        for q in [p, *p.children(recursive=True)]:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def summarise(s: Sample) -> dict:
    lat = sorted(s.latencies)
    n = len(lat)
    return {
        "requests": n,
        "errors": s.errors,
        "seconds": round(s.seconds, 3),
        "rps": round(n / s.seconds, 1) if s.seconds else 0.0,
        "p50_ms": round(pct(lat, 50) * 1000, 3),
        "p99_ms": round(pct(lat, 99) * 1000, 3),
        "mean_ms": round(sum(lat) / n * 1000, 3) if n else float("nan"),
        "server_cpu_ms_per_req": round(s.server_cpu / n * 1000, 3) if n else float("nan"),
        "body_bytes": s.body_bytes,
    }


# --- POST /api/generate up to Temporal ----------------------------------------------------------


GENERATE_BODY = {
    "template": {"name": "python-function"},
    "values": {"function_name": "add", "description": "Add two integers."},
    "model": "openai_api",
}


async def generate_path(settings: Settings, tenant: TenantCreated, *, requests: int, warmup: int) -> dict:
    """POST /api/generate's gateway-side time before start_workflow and its database round trips (the module)."""
    from asgi_lifespan import LifespanManager
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from api.app import create_app
    from codegen.manager import ModelManager
    from infra import tracing
    from store import leases
    from workers.queues import ModelReporter

    settings = settings.model_copy(
        update={
            "openai_api_key": "sk-bench-never-called",  # no worker runs the workflows: no model is called
            "generate_wait_seconds": 0.001,  # answer 202 at once: the figure ends at start_workflow anyway
            "knowledge_url": f"http://{HOST}:9",  # forwarded (never asked): no embedders in this process
        }
    )
    pool = await create_pool(settings)
    try:
        reporter = ModelReporter(pool, ModelManager(settings), worker_id=f"bench-{uuid.uuid4().hex[:6]}:1")
        if not await reporter.report_once():
            raise RuntimeError("the models' report could not be written")
        rtt = []
        for _ in range(200):
            t0 = time.perf_counter()
            async with pool.acquire() as conn:
                await conn.fetchval("select 1")
            rtt.append(time.perf_counter() - t0)
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)
        tracing.instrument_libraries()  # a span per asyncpg statement: one round trip each
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=120) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
                samples = []
                for i in range(warmup + requests):
                    spans.clear()
                    resp = await client.post("/api/generate", json=GENERATE_BODY, headers={"X-API-Key": tenant.api_key})
                    if resp.status_code != 202:
                        raise RuntimeError(f"POST /api/generate answered {resp.status_code}: {resp.text}")
                    gid = resp.json()["id"]
                    await leases.release(pool, tenant_id=tenant.tenant_id, holder=f"generation-{gid}")
                    if i >= warmup:
                        samples.append(_before_temporal(spans.get_finished_spans()))
        await reporter.stop()
    finally:
        await pool.close()
    before = sorted(ms for ms, _ in samples)
    trips = sorted(n for _, n in samples)
    return {
        "requests": len(samples),
        "p50_ms": round(pct(before, 50), 3),
        "p90_ms": round(pct(before, 90), 3),
        "round_trips": trips[len(trips) // 2],
        "round_trips_range": [trips[0], trips[-1]],
        "round_trip_p50_ms": round(pct(sorted(rtt), 50) * 1000, 3),
    }


def _before_temporal(finished) -> tuple[float, int]:
    """(ms from the request's arrival to its start_workflow call, asyncpg statements before it)."""
    [server] = [s for s in finished if s.name == "POST /api/generate" and s.kind.name == "SERVER"]
    [started] = [s for s in finished if s.name == "StartWorkflow:GenerationWorkflow"]
    trace_id = server.context.trace_id
    statements = [
        s
        for s in finished
        if s.context.trace_id == trace_id
        and s.attributes.get("db.system") == "postgresql"
        and s.start_time < started.start_time
    ]
    return (started.start_time - server.start_time) / 1e6, len(statements)


# --- the report -----------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _verdicts(results: dict, args: argparse.Namespace) -> dict[str, Any]:
    """Each target against the same query served bare: met, or why not."""
    g, b = results["gateway"], results["bare_query"]
    rps, cpu = _ratio(g["rps"], b["rps"]), _ratio(g["server_cpu_ms_per_req"], b["server_cpu_ms_per_req"])
    extra = round(g["server_cpu_ms_per_req"] - b["server_cpu_ms_per_req"], 3)
    out: dict[str, Any] = {
        "rps": {"ratio": rps, "target": f">= {RPS_TARGET}", "met": rps is not None and rps >= RPS_TARGET},
        "server_cpu_per_req": {
            "ratio": cpu,
            "target": f"<= {CPU_TARGET}",
            "met": cpu is not None and cpu <= CPU_TARGET,
        },
    }
    if not out["server_cpu_per_req"]["met"]:
        out["server_cpu_per_req"]["why"] = (
            f"the gateway spends {extra} ms more server CPU per request than the same query served bare: its "
            "authentication, rate limits, middleware (request id, metrics, access log, security headers) and "
            "routing among all its routes"
        )
    if not out["rps"]["met"]:
        bound = cpu is not None and cpu > 1 / RPS_TARGET
        out["rps"]["why"] = (
            f"its server CPU per request ({cpu}x) bounds its throughput: the client and the servers share "
            f"{os.cpu_count()} cores"
            if bound
            else f"the client and the servers share {os.cpu_count()} cores, and the client's share limits both alike"
        )
    return out


def report(results: dict, generate: dict | None, args: argparse.Namespace) -> dict:
    g, b, f = results["gateway"], results["bare_query"], results["bare"]
    verdicts = _verdicts(results, args)
    cpu = cpu_model()
    head = (
        f"{'target':<34}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'srv CPU ms/req':>15}{'bytes':>7}"
    )
    print()
    print(
        f"concurrency {args.concurrency}, {args.duration:g} s measured per target in {args.rounds} "
        f"alternating rounds, {args.warmup:g} s warm-up each; {os.cpu_count()} CPUs: {cpu}"
    )
    print(head)
    print("-" * len(head))
    for name, label in (
        ("gateway", "gateway GET /api/templates"),
        ("bare_query", "bare, same query (baseline)"),
        ("bare", "bare, no query (floor)"),
    ):
        row = results[name]
        print(
            f"{label:<34}{row['requests']:>9}{row['errors']:>7}{row['rps']:>9.1f}{row['p50_ms']:>8.2f}"
            f"{row['p99_ms']:>8.2f}{row['server_cpu_ms_per_req']:>15.3f}{row['body_bytes']:>7}"
        )
    ratios = {
        "over_bare_query": {
            "rps": _ratio(g["rps"], b["rps"]),
            "p50": _ratio(g["p50_ms"], b["p50_ms"]),
            "p99": _ratio(g["p99_ms"], b["p99_ms"]),
            "server_cpu_per_req": _ratio(g["server_cpu_ms_per_req"], b["server_cpu_ms_per_req"]),
        },
        "over_bare": {
            "rps": _ratio(g["rps"], f["rps"]),
            "server_cpu_per_req": _ratio(g["server_cpu_ms_per_req"], f["server_cpu_ms_per_req"]),
        },
    }
    q = {k: float("nan") if v is None else v for k, v in ratios["over_bare_query"].items()}
    print(
        f"{'ratio gateway / same query':<34}{'':>16}{q['rps']:>9.3f}{q['p50']:>8.2f}{q['p99']:>8.2f}"
        f"{q['server_cpu_per_req']:>15.2f}"
    )
    print("(server CPU: the uvicorn process and PostgreSQL's processes, in the target's own rounds)")
    print()
    for key, label in (("rps", "req/s"), ("server_cpu_per_req", "server CPU per request")):
        v = verdicts[key]
        verdict = "met" if v["met"] else f"MISSED: {v['why']}"
        print(f"target: {label} {v['target']}x the baseline's, from the same run: {v['ratio']}x, {verdict}")
    if generate is not None:
        print(
            f"POST /api/generate before Temporal (in process, {generate['requests']} requests): p50 "
            f"{generate['p50_ms']:.2f} ms, p90 {generate['p90_ms']:.2f} ms, {generate['round_trips']} database round "
            f"trips (range {generate['round_trips_range'][0]}-{generate['round_trips_range'][1]}); baseline, one round "
            f"trip here: p50 {generate['round_trip_p50_ms']:.3f} ms"
        )
    return {
        "benchmark": "gateway",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "templates": args.templates,
            "cpus": os.cpu_count(),
            "cpu_model": cpu,
        },
        "gateway": g,
        "bare_query": b,
        "bare": f,
        "ratios": ratios,
        "targets": verdicts,
        "generate_before_temporal": generate,
    }


# --- main -----------------------------------------------------------------------------------


async def measure(targets: dict, args: argparse.Namespace) -> dict:
    samples = {name: Sample() for name in targets}
    for name, (url, headers, procs) in targets.items():
        print(f"warm-up {name} ({args.warmup:g} s)", flush=True)
        await load(
            url,
            headers,
            concurrency=args.concurrency,
            seconds=args.warmup,
            record=False,
            sample=samples[name],
            procs=procs,
        )
    names = list(targets)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            url, headers, procs = targets[name]
            print(f"round {r + 1}/{args.rounds}: {name} ({args.duration / args.rounds:g} s)", flush=True)
            await load(
                url,
                headers,
                concurrency=args.concurrency,
                seconds=args.duration / args.rounds,
                record=True,
                sample=samples[name],
                procs=procs,
            )
    return {name: summarise(s) for name, s in samples.items()}


def main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="specmill-bench-"))
    run = Run(root)
    failed = False
    try:
        t0 = time.monotonic()
        settings = make_settings(root, rate_limit=UNLIMITED)
        print(f"starting PostgreSQL and Temporal in {root} ...", flush=True)
        start_infra(run, settings)
        tenant = asyncio.run(seed(settings, args.templates))
        env = _child_env(settings, root / "gateway-data")

        gw_port, bare_port = embedded.free_port(), embedded.free_port()
        gateway = spawn(
            run,
            "gateway",
            ["-m", "workers.cli", "serve", "gateway", "--host", HOST, "--port", str(gw_port)],
            env,
            gw_port,
        )
        query = "builtin=false"  # the tenant's own: a fixed-size page
        gw_url = f"http://{HOST}:{gw_port}/api/templates?{query}"
        headers = {"X-API-Key": tenant.api_key}
        resp = httpx.get(gw_url, headers=headers, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        if len(body.get("items", [])) != args.templates:
            raise RuntimeError(f"expected {args.templates} templates, the gateway listed {len(body.get('items', []))}")
        (root / "body.json").write_bytes(resp.content)
        bare = spawn(
            run,
            "bare",
            [
                str(ROOT / "bench" / "bare_app.py"),
                "--host",
                HOST,
                "--port",
                str(bare_port),
                "--body",
                str(root / "body.json"),
                "--tenant",
                str(tenant.tenant_id),
            ],
            env,
            bare_port,
        )
        bare_query_url = f"http://{HOST}:{bare_port}/bare/templates?{query}"
        same = httpx.get(bare_query_url, timeout=30)
        same.raise_for_status()
        if same.json() != body:
            raise RuntimeError("the bare app's same query answered another body than the gateway's")
        print(f"stack ready in {time.monotonic() - t0:.1f} s; gateway :{gw_port}, bare :{bare_port}", flush=True)

        postgres = psutil.Process(next(p for n, p, _ in run.procs if n == "postgres").pid)
        gateway_proc, bare_proc = psutil.Process(gateway.pid), psutil.Process(bare.pid)
        targets = {
            "gateway": (gw_url, headers, [gateway_proc, postgres]),
            "bare_query": (bare_query_url, {}, [bare_proc, postgres]),
            "bare": (f"http://{HOST}:{bare_port}/bare", {}, [bare_proc, postgres]),
        }
        results = asyncio.run(measure(targets, args))
        generate = None
        if args.generate:
            print(f"POST /api/generate in process ({args.generate} requests)", flush=True)
            generate = asyncio.run(generate_path(settings, tenant, requests=args.generate, warmup=5))
        figures = report(results, generate, args)
        out = write_figures("gateway", figures)
        print(f"written to {out.relative_to(ROOT)}; total {time.monotonic() - t0:.1f} s")
        print(json.dumps(figures, separators=(",", ":")))
        ok = all(figures[name]["errors"] == 0 for name in targets)
        if not ok:
            failed = True
            print("some requests failed; see the logs in " + str(root), file=sys.stderr)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        failed = True
        for name in ("gateway", "bare"):
            log = root / f"{name}.log"
            if log.exists():
                print(
                    f"--- tail of {name}.log ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]),
                    file=sys.stderr,
                )
        raise
    finally:
        run.finish(keep=args.keep, failed=failed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Gateway overhead: authenticated GET /api/templates vs the same query served bare."
    )
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per target (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per target (default 3)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds the duration is split into (default 3)")
    p.add_argument("--templates", type=int, default=5, help="templates the tenant owns (default 5, at most 50)")
    p.add_argument(
        "--generate",
        type=int,
        default=40,
        help="POST /api/generate requests timed up to Temporal (default 40, 0: none)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) at the end")
    args = p.parse_args(argv)
    if (
        args.duration <= 0
        or args.warmup < 0
        or args.concurrency < 1
        or args.rounds < 1
        or not 0 <= args.templates <= 50
        or args.generate < 0
    ):
        p.error(
            "need --duration > 0, --warmup >= 0, --concurrency >= 1, --rounds >= 1, 0 <= --templates <= 50, "
            "--generate >= 0"
        )
    return args


def _sigterm(_signum, _frame):
    signal.raise_signal(signal.SIGINT)  # handled like Ctrl-C (asyncio.run cancels its task cleanly)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    exit_without_teardown(main(parse_args()))
