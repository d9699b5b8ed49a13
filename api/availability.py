"""Whether a model can serve a tenant now: the one rule behind GET /api/models, the `model` of PUT
/api/settings and PUT /api/projects/{id}/settings, and POST /api/generate (a 422 up front when not).

A model is `available` (or `loaded`) for a tenant only when all of these hold:

1. its backend here, or a live generation worker, can run it (`merged_status`: the workers' word wins);
2. an API model (openai_api, anthropic_api) has a key for this tenant: the platform's (settings), or
   the tenant's own (PUT /api/providers/{provider}/key, which needs PROVIDER_KEYS_SECRET on the server);
3. a model server of our own (deepseek_8b over VLLM_BASE_URL) answers now: one GET of its /v1/models
   with a 1 s timeout, cached 30 s per URL (codegen/endpoint_probe.py), never blocking the loop.

Otherwise it is `unavailable` with a reason that says what to do. A configured server that does not
answer is unavailable too (it cannot serve now), so choosing it is the same 422, not a 503.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from uuid import UUID

from api.deps import Resources
from codegen.base import ModelStatus
from codegen.endpoint_probe import EndpointProbe
from codegen.manager import ModelManager
from models.common import MODEL_NAMES
from models.settings import Settings
from store import model_workers, pipeline_settings, provider_keys
from store.errors import Invalid

_RANK = {"loaded": 0, "available": 1, "unavailable": 2}
_LABELS = {"openai": "OpenAI", "anthropic": "Anthropic", "vllm": "vLLM"}


def merged_status(own: ModelStatus, reports: list[model_workers.WorkerReport]) -> dict:
    """One model as its backend and the live generation workers see it (loaded in one > available in one >
    unavailable in all, with their reasons), else the gateway's own status; `workers` lists the reports."""
    entry = {
        "name": own.name,
        "backend": own.backend,
        "model": own.model,
        "state": own.state,
        "reason": own.reason,
        "details": own.details,
        "workers": [{"worker_id": r.worker_id, "state": r.state, "seen_at": r.seen_at} for r in reports],
    }
    if reports:
        best = min(reports, key=lambda r: _RANK[r.state])  # reports come newest first: the newest of the best
        reasons = list(dict.fromkeys(r.reason for r in reports if r.reason))
        entry.update(
            state=best.state,
            details=best.details,
            reason=("; ".join(reasons) or None) if best.state == "unavailable" else None,
        )
    return entry


def manager(res: Resources) -> ModelManager:
    """The process's model manager (created on first use where no service made one: the orchestrator's
    settings routes ask too). It only builds backends; nothing is loaded here."""
    if "models" not in res.extras:
        res.extras["models"] = ModelManager(res.settings)
    return res.extras["models"]


def _probe(res: Resources) -> EndpointProbe:
    if "endpoint_probe" not in res.extras:
        res.extras["endpoint_probe"] = EndpointProbe()
    return res.extras["endpoint_probe"]


def key_reason(backend, settings: Settings, tenant_keys: set[str]) -> str | None:
    """Why an API model has no key for this tenant (None: it has one, or needs none)."""
    if not getattr(backend, "key_required", False):
        return None
    provider = backend.provider
    if backend.platform_key or (settings.provider_keys_secret and provider in tenant_keys):
        return None
    label = _LABELS.get(provider, provider)
    if settings.provider_keys_secret:
        return f"no {label} key: set {backend.key_env} or PUT /api/providers/{provider}/key"
    return f"no {label} key: set {backend.key_env} (a tenant key needs PROVIDER_KEYS_SECRET on the server)"


async def _server_reason(res: Resources, backend) -> str | None:
    url = getattr(backend, "probe_url", None)
    if url is None:
        return None
    why = await _probe(res).reason(res.extras["http"], url)
    if why is None:
        return None
    env = backend.url_env
    return f"the model server at {env} does not answer ({why}): start it, or set {env} to one that runs"


async def statuses(res: Resources, tenant_id: UUID, names: Iterable[str] = MODEL_NAMES) -> list[dict]:
    """GET /api/models' entries for this tenant, in `names` order."""
    reports = await model_workers.live(res.pool, within_s=model_workers.LIVE_WITHIN_S)
    keys = {k.provider.value for k in await provider_keys.list_keys(res.pool, tenant_id=tenant_id)}
    out = []
    for name in names:
        backend = manager(res).backend(name)
        entry = merged_status(backend.status(), [r for r in reports if r.model == name])
        reason = key_reason(backend, res.settings, keys)
        if reason is None and entry["state"] != "unavailable":
            reason = await _server_reason(res, backend)
        if reason is not None:
            entry.update(state="unavailable", reason=reason)
        out.append(entry)
    return out


async def require_available(res: Resources, tenant_id: UUID, name: str) -> None:
    """Invalid (422) naming the reason when `name` cannot serve this tenant now."""
    [entry] = await statuses(res, tenant_id, (name,))
    if entry["state"] == "unavailable":
        raise Invalid(
            f"model {name} cannot serve this tenant now: {entry['reason']}",
            extra={"model": name, "reason": entry["reason"]},
        )


# a host path, not one of our routes (a reason may say "PUT /api/providers/openai/key")
_HOST_PATH = re.compile(r"(?<![\w.~-])/(?!api/)(?:[^\s/'\"]+/)*[^\s/'\",;)]+")


def unpath(text):
    return _HOST_PATH.sub("<path>", text) if isinstance(text, str) else text


def public(entry: dict) -> dict:
    """What viewers and editors see of a model: no host paths, no worker host names or pids."""
    model = entry["model"]
    return {
        **entry,
        "model": os.path.basename(model.rstrip("/")) if model.startswith("/") else model,
        "reason": unpath(entry["reason"]),
        "details": {
            k: v
            for k, v in entry["details"].items()
            if not (isinstance(v, str) and _HOST_PATH.search(v)) and not isinstance(v, (dict, list))
        },
        "workers": [{"state": w["state"], "seen_at": w["seen_at"]} for w in entry["workers"]],
    }


async def require_project_model(res: Resources, tenant_id: UUID, project_id: UUID, model: str | None = None) -> None:
    """Before a project's run starts (spec.complete, POST .../runs, .../regenerate): the model it will use,
    `model` when the request changes it, else the project's effective one, can serve now (else 422)."""
    if model is None:
        model = (await pipeline_settings.effective_settings(res.pool, tenant_id=tenant_id, project_id=project_id)).model
    await require_available(res, tenant_id, model)
