"""Whether a model can serve a tenant now: the one rule behind GET /api/models, the `model` of PUT
/api/settings and PUT /api/projects/{id}/settings, and POST /api/generate (a 422 up front when not).

The gateway builds no model backend: what it knows of a model is what the live generation workers
report of it (store/model_workers.py), its state and what its backend declares (models/availability.py).
A model is `available` (or `loaded`) for a tenant only when all of these hold:

1. a live generation worker can run it (`merged_status`: loaded in one > available in one > unavailable
   in all, with their reasons); with no live report it is unavailable: no worker would run it;
2. an API model (its backend declares a key it needs: openai_api, anthropic_api) has a key for this
   tenant: the platform's (the setting the declaration names, in the gateway's settings), or the
   tenant's own (PUT /api/providers/{provider}/key, which needs PROVIDER_KEYS_SECRET on the server);
3. a model server of our own (deepseek_8b over VLLM_BASE_URL: its backend declares the server) answers
   now: one GET of the gateway's URL setting and the declared path, with a 1 s timeout, cached 30 s per
   URL (codegen/endpoint_probe.py), never blocking the loop.

Otherwise it is `unavailable` with a reason that says what to do. A configured server that does not
answer is unavailable too (it cannot serve now), so choosing it is the same 422, not a 503.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from api.deps import Resources
from models.availability import KeyNeed, ModelDeclaration, ServerNeed
from models.common import MODEL_NAMES
from models.settings import Settings
from store import admission, pipeline_settings
from store.errors import Invalid
from store.model_workers import LIVE_WITHIN_S, WorkerReport

_RANK = {"loaded": 0, "available": 1, "unavailable": 2}
_LABELS = {"openai": "OpenAI", "anthropic": "Anthropic", "vllm": "vLLM"}
NO_WORKER = f"no generation worker has reported it within {LIVE_WITHIN_S:g} s: start one (`specmill worker generation`)"


def _ranked(reports: list[WorkerReport]) -> list[WorkerReport]:
    """Best state first; among equals the newest first (reports come newest first, and sorting is stable)."""
    return sorted(reports, key=lambda r: _RANK[r.state])


def declared(reports: list[WorkerReport]) -> ModelDeclaration | None:
    """What the model's backend declares, as the best of its live reports that says (None: none does)."""
    return next((r.declared for r in _ranked(reports) if r.declared is not None), None)


def merged_status(name: str, reports: list[WorkerReport]) -> dict[str, Any]:
    """One model as the live generation workers see it (loaded in one > available in one > unavailable in
    all, with their reasons); `workers` lists the reports. No report: unavailable (NO_WORKER)."""
    entry: dict[str, Any] = {
        "name": name,
        "backend": None,
        "model": None,
        "state": "unavailable",
        "reason": NO_WORKER,
        "details": {},
        "workers": [{"worker_id": r.worker_id, "state": r.state, "seen_at": r.seen_at} for r in reports],
    }
    if reports:
        best = _ranked(reports)[0]
        reasons = list(dict.fromkeys(r.reason for r in reports if r.reason))
        entry.update(
            state=best.state,
            details=best.details,
            reason=("; ".join(reasons) or None) if best.state == "unavailable" else None,
        )
    what = declared(reports)
    if what is not None:
        entry.update(backend=what.backend, model=what.model)
    return entry


def _setting(settings: Settings, env: str) -> Any:
    """The value of the setting a declaration names by its environment variable (None: no such setting)."""
    name = env.lower()
    return getattr(settings, name) if name in type(settings).model_fields else None


def key_reason(key: KeyNeed | None, settings: Settings, tenant_keys: Iterable[str]) -> str | None:
    """Why an API model has no key for this tenant (None: it has one, or needs none)."""
    if key is None or not key.required:
        return None
    if _setting(settings, key.env) or (settings.provider_keys_secret and key.provider in tenant_keys):
        return None
    label = _LABELS.get(key.provider, key.provider)
    if settings.provider_keys_secret:
        return f"no {label} key: set {key.env} or PUT /api/providers/{key.provider}/key"
    return f"no {label} key: set {key.env} (a tenant key needs PROVIDER_KEYS_SECRET on the server)"


async def _server_reason(res: Resources, server: ServerNeed | None) -> str | None:
    base = None if server is None else _setting(res.settings, server.env)
    if server is None or not base:  # no server to ask (a worker that runs the model itself, or none set here)
        return None
    why = await res.probe.reason(res.http, f"{str(base).rstrip('/')}{server.path}")
    if why is None:
        return None
    return f"the model server at {server.env} does not answer ({why}): start it, or set {server.env} to one that runs"


async def judge(res: Resources, facts: admission.Facts, name: str) -> dict[str, Any]:
    """GET /api/models' entry of one model for the tenant whose `facts` these are."""
    reports = [r for r in facts.reports if r.model == name]
    entry = merged_status(name, reports)
    what = declared(reports)
    if what is None:
        return entry
    reason = key_reason(what.key, res.settings, facts.provider_keys)
    if reason is None and entry["state"] != "unavailable":
        reason = await _server_reason(res, what.server)
    if reason is not None:
        entry.update(state="unavailable", reason=reason)
    return entry


async def statuses(res: Resources, tenant_id: UUID, names: Iterable[str] = MODEL_NAMES) -> list[dict[str, Any]]:
    """GET /api/models' entries for this tenant, in `names` order."""
    facts = await admission.read(res.pool, tenant_id=tenant_id)
    return [await judge(res, facts, name) for name in names]


def refuse(entry: dict[str, Any]) -> None:
    """Invalid (422) naming the reason when the judged model cannot serve this tenant now."""
    if entry["state"] == "unavailable":
        raise Invalid(
            f"model {entry['name']} cannot serve this tenant now: {entry['reason']}",
            extra={"model": entry["name"], "reason": entry["reason"]},
        )


async def require_available(res: Resources, tenant_id: UUID, name: str) -> None:
    """Invalid (422) naming the reason when `name` cannot serve this tenant now."""
    [entry] = await statuses(res, tenant_id, (name,))
    refuse(entry)


# a host path, not one of our routes (a reason may say "PUT /api/providers/openai/key")
_HOST_PATH = re.compile(r"(?<![\w.~-])/(?!api/)(?:[^\s/'\"]+/)*[^\s/'\",;)]+")


def unpath(text):
    return _HOST_PATH.sub("<path>", text) if isinstance(text, str) else text


def public(entry: dict) -> dict:
    """What viewers and editors see of a model: no host paths, no worker host names or pids."""
    model = entry["model"]
    return {
        **entry,
        "model": os.path.basename(model.rstrip("/")) if model and model.startswith("/") else model,
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
