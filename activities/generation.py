"""Generation worker activities (task queue `generation`): candidates from the model, and the outcome."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import permanent_failures
from activities.heartbeat import heartbeating
from codegen import hierarchical
from codegen.base import GenerationParams, ModelUnavailable
from codegen.manager import ModelManager
from codegen.prompts import build_messages, extract_code, parses
from models.generation import (
    Candidate,
    CandidatesInput,
    CandidatesResult,
    GenerationInput,
    Plan,
    PlanInput,
    RecordGenerationInput,
)
from models.settings import Settings
from models.spec_view import spec_view
from store import generations, leases

TOKENS_PER_CHAR = 0.25  # a reference's share of the prompt budget is estimated from its length


def within_budget(contents: list[str], budget_tokens: int) -> list[str]:
    chosen, used = [], 0
    for text in contents:
        cost = int(len(text) * TOKENS_PER_CHAR) + 8
        if used + cost > budget_tokens:
            continue
        chosen.append(text)
        used += cost
    return chosen


def candidate_temperature(inp: CandidatesInput, index: int) -> float:
    """Greedy asked for n > 1: the first candidate is greedy, the others sampled at 0.8 so they differ."""
    if inp.job.temperature == 0.0 and index > 0:
        return 0.8
    return inp.job.temperature


class GenerationActivities:
    def __init__(self, pool: asyncpg.Pool, manager: ModelManager, settings: Settings) -> None:
        self._pool, self._manager, self._settings = pool, manager, settings

    async def _tenant_key(self, tenant_id, model: str) -> str | None:
        provider = self._manager.provider(model)
        if provider is None or not self._settings.provider_keys_secret:
            return None
        from store import provider_keys

        try:
            return await provider_keys.get_plaintext(
                self._pool, tenant_id=tenant_id, provider=provider, secret=self._settings.provider_keys_secret
            )
        except provider_keys.ProviderKeyUnreadable as err:  # a changed secret: store the key again
            raise ApplicationError(str(err), type="ModelUnavailable", non_retryable=True) from err

    async def _prepare(self, job: GenerationInput):
        """The backend, the spec's view and the tenant's provider key, for one generation."""
        try:
            backend = self._manager.backend(job.model)
        except KeyError as err:
            raise ApplicationError(f"unknown model {job.model!r}", type="BadRequest", non_retryable=True) from err
        view = spec_view(job.spec.schema_, job.spec.values)
        return backend, view, await self._tenant_key(job.tenant_id, job.model)

    @staticmethod
    def _params(inp: CandidatesInput, index: int) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=inp.job.max_new_tokens,
            temperature=candidate_temperature(inp, index),
            seed=1000 * inp.round + index,
        )

    @activity.defn(name="generate_candidates")
    @permanent_failures
    async def generate_candidates(self, inp: CandidatesInput) -> CandidatesResult:
        """n candidates for one spec; the model call runs on a thread, heartbeating between candidates."""
        job = inp.job
        backend, view, api_key = await self._prepare(job)
        refs = within_budget([r.content for r in inp.references], 512) if inp.references else None
        messages = build_messages(view, references=refs, feedback=job.feedback)
        out: list[Candidate] = []
        for i in range(job.n):
            completion = await heartbeating(
                asyncio.to_thread(_chat, backend, messages, self._params(inp, i), api_key), i
            )
            code = extract_code(completion.text, view.language)
            out.append(
                Candidate(
                    model=job.model,
                    techniques=job.techniques,
                    code=code,
                    tokens_in=completion.tokens_in,
                    tokens_out=completion.tokens_out,
                    latency_s=round(completion.latency_s, 3),
                    parses=parses(code, view.language),
                    finish_reason=completion.finish_reason,
                    round=inp.round,
                )
            )
            activity.heartbeat(i + 1)
        return CandidatesResult(candidates=out, path=view.path, language=view.language)

    @activity.defn(name="plan_module")
    @permanent_failures
    async def plan_module(self, inp: PlanInput) -> Plan:
        """hierarchical_generation, step 1: a checked plan (greedy; each retry is told the last error)."""
        backend, view, api_key = await self._prepare(inp.job)
        params = GenerationParams(
            max_new_tokens=max(inp.job.max_new_tokens, hierarchical.PLAN_MIN_TOKENS),
            seed=0,
            json_schema=json.dumps(hierarchical.PLAN_SCHEMA),
        )
        try:
            return await heartbeating(
                asyncio.to_thread(
                    hierarchical.make_plan, lambda m: _chat(backend, m, params, api_key), view, attempts=inp.attempts
                )
            )
        except hierarchical.PlanError as err:
            raise ApplicationError(f"hierarchical_generation: {err}", type="PlanInvalid", non_retryable=True) from err

    @activity.defn(name="generate_bodies")
    @permanent_failures
    async def generate_bodies(self, inp: CandidatesInput) -> CandidatesResult:
        """hierarchical_generation, step 2: per candidate, one model call per planned item (heartbeating
        after each), then the module assembled in plan order."""
        if inp.plan is None:
            raise ApplicationError("generate_bodies needs a plan", type="BadRequest", non_retryable=True)
        job = inp.job
        backend, view, api_key = await self._prepare(job)
        refs = within_budget([r.content for r in inp.references], 512) if inp.references else None
        out: list[Candidate] = []
        for i in range(job.n):
            params = self._params(inp, i)
            pieces, t_in, t_out, latency, finish = [], 0, 0, 0.0, "stop"
            for j, item in enumerate(inp.plan.items):
                messages = hierarchical.body_messages(view, inp.plan, item, references=refs)
                completion = await heartbeating(asyncio.to_thread(_chat, backend, messages, params, api_key), i, j)
                pieces.append(hierarchical.build_piece(item, completion.text, inp.plan, view.language))
                t_in, t_out, latency = (
                    t_in + completion.tokens_in,
                    t_out + completion.tokens_out,
                    latency + completion.latency_s,
                )
                finish = "length" if completion.finish_reason == "length" else finish
                activity.heartbeat(i, j + 1)
            code = hierarchical.assemble(pieces)
            out.append(
                Candidate(
                    model=job.model,
                    techniques=job.techniques,
                    code=code,
                    tokens_in=t_in,
                    tokens_out=t_out,
                    latency_s=round(latency, 3),
                    parses=parses(code, view.language),
                    finish_reason=finish,
                    round=inp.round,
                    missing_items=[p.item.name for p in pieces if not p.written],
                )
            )
        return CandidatesResult(candidates=out, path=view.path, language=view.language)

    @activity.defn(name="record_generation")
    @permanent_failures
    async def record_generation(self, inp: RecordGenerationInput) -> None:
        g = inp.inp
        if g.project_id is not None:  # a project's pipeline asked for it: no API call made the row
            await generations.create_generation(
                self._pool,
                generation_id=g.generation_id,
                tenant_id=g.tenant_id,
                user_id=g.user_id,
                model=g.model,
                techniques=g.techniques,
                request={
                    "project_id": str(g.project_id),
                    "instance_id": str(g.spec.instance_id),
                    "feedback": g.feedback,
                },
            )
        await generations.finish_generation(
            self._pool,
            generation_id=g.generation_id,
            tenant_id=g.tenant_id,
            spec=g.spec,
            model=g.model,
            techniques=g.techniques,
            result=inp.result,
            error=inp.error,
        )
        # POST /api/generate took one of the tenant's generation slots for this workflow: the outcome
        # is recorded, so it is free again (a project's generation released its own already: a no-op)
        await leases.release(self._pool, tenant_id=g.tenant_id, holder=activity.info().workflow_id)


def _chat(backend, messages, params: GenerationParams, api_key: str | None):
    """One model call, its failures as the workflow's ApplicationError types (runs on a thread)."""
    try:
        return backend.chat(messages, params, api_key=api_key)
    except ValueError as err:  # e.g. a prompt longer than the model's context
        raise ApplicationError(
            f"the model cannot take this request: {err}", type="BadRequest", non_retryable=True
        ) from err
    except ModelUnavailable as err:
        retryable = getattr(err, "retryable", False)
        raise ApplicationError(
            str(err), type="ModelUnavailableRetry" if retryable else "ModelUnavailable", non_retryable=not retryable
        ) from err
