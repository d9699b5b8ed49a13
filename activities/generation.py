"""Generation worker activities (task queue `generation`): candidates from the model, and the outcome."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import permanent_failures
from activities.heartbeat import Progress, heartbeating
from codegen import generate, hierarchical, technique_steps
from codegen.base import ModelUnavailable, batches
from codegen.manager import ModelManager
from infra import metrics
from models.activities import GENERATE_BODIES, GENERATE_CANDIDATES, PLAN_MODULE, RECORD_GENERATION, TECHNIQUE_STEP
from models.generation import (
    CandidatesInput,
    CandidatesResult,
    GenerationResult,
    ModelTask,
    Plan,
    PlanInput,
    RecordGenerationInput,
    TechniqueStepInput,
    TechniqueStepResult,
)
from models.settings import Settings
from models.techniques import Unsupported
from store import generations, leases, usage

log = logging.getLogger("specmill.generation")


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

    async def _chat(self, job: ModelTask) -> generate.Chat:
        """One model call for this job: the backend, the tenant's provider key, failures as error types."""
        try:
            backend = self._manager.backend(job.model)
        except KeyError as err:
            raise ApplicationError(f"unknown model {job.model!r}", type="BadRequest", non_retryable=True) from err
        api_key = await self._tenant_key(job.tenant_id, job.model)
        return generate.ModelCall(
            backend,
            call=lambda messages, params: _chat(backend.chat, messages, params, api_key),
            many=(lambda messages, params: _chat(backend.chat_many, messages, params, api_key))
            if batches(backend)
            else None,  # ModelCall.many asks only a "batch" backend for several answers at once
        )

    async def _on_thread(self, step, job: ModelTask, *args):
        """`step(chat, job, *args, progress)` of codegen.generate on a thread, heartbeating its progress."""
        chat, progress = await self._chat(job), Progress()
        try:
            return await heartbeating(asyncio.to_thread(step, chat, job, *args, progress), progress)
        except Unsupported as err:  # a technique this model cannot run: no retry changes that
            raise ApplicationError(str(err), type="BadRequest", non_retryable=True) from err

    @activity.defn(name=GENERATE_CANDIDATES.name)
    @permanent_failures
    async def generate_candidates(self, inp: CandidatesInput) -> CandidatesResult:
        """n candidates for one spec (codegen.generate.candidates on a thread, heartbeating meanwhile)."""
        return await self._on_thread(generate.candidates, inp.model_task(), inp.references, inp.round)

    @activity.defn(name=PLAN_MODULE.name)
    @permanent_failures
    async def plan_module(self, inp: PlanInput) -> Plan:
        """hierarchical_generation, step 1: a checked plan (greedy; each retry is told the last error)."""
        task = inp.model_task()
        chat = await self._chat(task)
        try:
            return await heartbeating(asyncio.to_thread(generate.plan, chat, task, inp.attempts))
        except hierarchical.PlanError as err:
            raise ApplicationError(f"hierarchical_generation: {err}", type="PlanInvalid", non_retryable=True) from err

    @activity.defn(name=GENERATE_BODIES.name)
    @permanent_failures
    async def generate_bodies(self, inp: CandidatesInput) -> CandidatesResult:
        """hierarchical_generation, step 2: per candidate, one model call per planned item, then the module."""
        if inp.plan is None:
            raise ApplicationError("generate_bodies needs a plan", type="BadRequest", non_retryable=True)
        return await self._on_thread(generate.bodies, inp.model_task(), inp.plan, inp.references, inp.round)

    @activity.defn(name=TECHNIQUE_STEP.name)
    @permanent_failures
    async def technique_step(self, inp: TechniqueStepInput) -> TechniqueStepResult:
        """A technique's own work (codegen/technique_steps.py) on a thread, heartbeating meanwhile."""
        context = technique_steps.StepContext(self._settings.models_path, inp.tenant_id, self._manager.backend)
        try:
            step = technique_steps.function(inp.technique, inp.step)
            out = await heartbeating(asyncio.to_thread(step, inp.payload, context))
        except technique_steps.Unavailable as err:
            raise ApplicationError(str(err), type="TechniqueUnavailable", non_retryable=True) from err
        except ValueError as err:
            raise ApplicationError(f"{inp.technique}: {err}", type="BadRequest", non_retryable=True) from err
        return TechniqueStepResult(payload=out)

    @activity.defn(name=RECORD_GENERATION.name)
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
                    "values": g.spec.values,
                    "values_hash": g.spec.values_hash,
                    "feedback": g.feedback,
                },
                project_id=g.project_id,
                instance_id=g.spec.instance_id,
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
        holder = activity.info().workflow_id
        assert holder is not None  # record_generation runs in a GenerationWorkflow
        await leases.release(self._pool, tenant_id=g.tenant_id, holder=holder)
        result = inp.result
        tokens_in = sum(c.tokens_in for c in result.candidates)
        tokens_out = sum(c.tokens_out for c in result.candidates)
        await usage.record(
            self._pool,
            tenant_id=g.tenant_id,
            source=f"generation:{g.generation_id}",
            kind="generation",
            project_id=g.project_id,
            model=g.model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )
        _measured(g.model, g.techniques, result, tokens_in, tokens_out)
        log.info(
            "generation %s %s",
            g.generation_id,
            result.status,
            extra={
                "generation_id": str(g.generation_id),
                "model": g.model,
                "techniques": ",".join(g.techniques),
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
            },
        )


def _measured(model: str, techniques: list[str], result: GenerationResult, tokens_in: int, tokens_out: int) -> None:
    """A recorded generation in the process's metrics (labels: model and technique set, never an id)."""
    label = metrics.techniques_label(techniques)
    metrics.GENERATIONS.labels(model, label, result.status).inc()
    seconds = sum(c.latency_s for c in result.candidates)
    metrics.TOKENS.labels(model, "in").inc(tokens_in)
    metrics.TOKENS.labels(model, "out").inc(tokens_out)
    metrics.GENERATION_SECONDS.labels(model, label).observe(seconds)
    if seconds > 0 and tokens_out:
        metrics.TOKENS_PER_SECOND.labels(model).observe(tokens_out / seconds)


def _chat(call, messages, params, api_key: str | None):
    """One model call (`chat`, or `chat_many` with a list of params), its failures as the workflow's
    ApplicationError types (runs on a thread)."""
    try:
        return call(messages, params, api_key=api_key)
    except ValueError as err:  # e.g. a prompt longer than the model's context
        raise ApplicationError(
            f"the model cannot take this request: {err}", type="BadRequest", non_retryable=True
        ) from err
    except ModelUnavailable as err:
        retryable = getattr(err, "retryable", False)
        raise ApplicationError(
            str(err), type="ModelUnavailableRetry" if retryable else "ModelUnavailable", non_retryable=not retryable
        ) from err
