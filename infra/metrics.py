"""Prometheus metrics of every process (prometheus-client): names with the `specmill_` prefix, in base
units (seconds, tokens, bytes), and labels of bounded sets only: a method, a route template, a status, a
model, a technique set, a state, a result. Never a tenant, project, user, run or workflow id: per-tenant
figures are in the usage table, the logs and the traces (tests/test_metrics.py holds this).

The gateway serves them at GET /metrics (admins; api/app.py); every process (the gateway and a service
too) on METRICS_PORT at METRICS_HOST when set, and the Temporal SDK's own runtime metrics on
TEMPORAL_METRICS_PORT.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LONG = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)

# --- the gateway ----------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "specmill_http_requests",
    "Requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "specmill_http_request_duration_seconds",
    "Time to answer, by method and route template",
    ["method", "route"],
    buckets=LATENCY,
    registry=REGISTRY,
)
REFUSALS = Counter(
    "specmill_http_refusals",
    "Requests refused: unauthenticated (401), forbidden (403), rate_limited (429)",
    ["reason"],
    registry=REGISTRY,
)
EVENT_STREAMS = Gauge(
    "specmill_event_streams_open", "Server-Sent Events streams open in this process", registry=REGISTRY
)

# --- generation -----------------------------------------------------------------------------------------
GENERATIONS = Counter(
    "specmill_generations",
    "Generations recorded, by model, technique set and status",
    ["model", "techniques", "status"],
    registry=REGISTRY,
)
GENERATION_SECONDS = Histogram(
    "specmill_generation_model_seconds",
    "Model time of a generation (its candidates' latencies summed)",
    ["model", "techniques"],
    buckets=LONG,
    registry=REGISTRY,
)
TOKENS = Counter(
    "specmill_generation_tokens",
    "Tokens of generations, by model and direction (in: prompt, out: generated)",
    ["model", "direction"],
    registry=REGISTRY,
)
TOKENS_PER_SECOND = Histogram(
    "specmill_generation_tokens_per_second",
    "Generated tokens per second of model time, per generation",
    ["model"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
    registry=REGISTRY,
)

# --- the sandbox ----------------------------------------------------------------------------------------
SANDBOX_RUNS = Counter("specmill_sandbox_runs", "Test runs in the sandbox, by result", ["result"], registry=REGISTRY)
SANDBOX_SECONDS = Histogram(
    "specmill_sandbox_run_seconds",
    "Duration of a sandboxed test run, by result",
    ["result"],
    buckets=LATENCY,
    registry=REGISTRY,
)

# --- projects -------------------------------------------------------------------------------------------
TRANSITIONS = Counter(
    "specmill_project_transitions",
    "Project state transitions, by the state left and the one entered",
    ["from_state", "to_state"],
    registry=REGISTRY,
)
STATE_SECONDS = Histogram(
    "specmill_project_state_seconds",
    "Time a project spent in a state before leaving it",
    ["state"],
    buckets=LONG,
    registry=REGISTRY,
)
DEBUG_ROUNDS = Histogram(
    "specmill_run_debugging_rounds",
    "Debugging rounds a run took, by its outcome",
    ["outcome"],
    buckets=(0, 1, 2, 3, 4, 5, 10),
    registry=REGISTRY,
)

# --- knowledge ------------------------------------------------------------------------------------------
INDEXED = Counter("specmill_knowledge_indexed", "Entries embedded and stored, by kind", ["kind"], registry=REGISTRY)
INDEX_SECONDS = Histogram(
    "specmill_knowledge_index_seconds",
    "Time to embed and store one batch, by kind",
    ["kind"],
    buckets=LATENCY,
    registry=REGISTRY,
)


def techniques_label(techniques: list[str]) -> str:
    """A technique set as one bounded label value (at most 2^6 of them): sorted, joined, or `none`."""
    return "+".join(sorted(techniques)) or "none"


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def serve(port: int | None, host: str = "127.0.0.1") -> None:
    """This process's metrics on `host`:`port` (METRICS_HOST, 127.0.0.1 unless a container network
    keeps the port to itself; the gateway also answers GET /metrics to admins)."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
