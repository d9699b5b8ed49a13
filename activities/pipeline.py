"""The project pipeline's activities, by the queue that serves them.

spec-registry: `attach_templates` (initialization) and `check_specs` (spec.complete);
integration: `integrate_artifacts` (static checks: activities.code_checks; artifacts stored by content
hash) and `run_spec_tests` (each instance's tests in sandbox/, one workflow_tasks row per round) and
`test_candidates` (a generation's candidates against the spec's visible tests, to choose among them).
Every one is idempotent: a retry after a crash finds what the first attempt stored.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import verdicts
from activities.code_checks import blocking, static_checks
from activities.errors import permanent_failures
from activities.heartbeat import Progress, heartbeating
from codegen.candidate_tests import run_candidates
from infra import metrics
from models.activities import ATTACH_TEMPLATES, CHECK_SPECS, INTEGRATE_ARTIFACTS, RUN_SPEC_TESTS, TEST_CANDIDATES
from models.common import Service, TaskStatus
from models.generation import SpecSnapshot, TestCandidatesInput, TestCandidatesResult
from models.orchestrator import (
    SANDBOX_UNAVAILABLE,
    ArtifactRef,
    AttachTemplatesResult,
    DebugRoundInput,
    DebugRoundResult,
    InstanceOutput,
    InstanceTestResult,
    IntegrateInput,
    IntegrateResult,
    PipelineSettings,
    ProjectRef,
    SpecProblem,
    SpecsCheckResult,
)
from models.outcome import instance_name
from models.schema_rules import values_hash
from models.schema_safety import checked_value_violations
from models.spec_view import spec_view
from sandbox import SandboxConfig, SandboxUnavailable, isolation, run_tests
from store import artifacts, fixed, instances, pipeline_settings, tasks, templates, usage
from store.errors import Conflict, Invalid, NotFound

TEST_TIMEOUT_S = 10.0
TEST_MEMORY_MB = 512
FAILURE_CHARS = verdicts.FAILURE_CHARS


def _no_sandbox(message: str) -> ApplicationError:
    """The error workflows/project.py fails the project on: no retry can build a sandbox."""
    return ApplicationError(message, type=SANDBOX_UNAVAILABLE, non_retryable=True)


class PipelineActivities:
    def __init__(self, pool: asyncpg.Pool, sandbox: SandboxConfig | None = None) -> None:
        self._pool = pool
        self._sandbox = sandbox or SandboxConfig()

    # --- spec-registry queue --------------------------------------------------------------

    @activity.defn(name=ATTACH_TEMPLATES.name)
    @permanent_failures
    async def attach_templates(self, inp: ProjectRef) -> AttachTemplatesResult:
        """initialization: the tenant's default templates (or the built-in ones) attached to the project."""
        ids = await pipeline_settings.attach_templates(self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id)
        return AttachTemplatesResult(template_ids=ids)

    @activity.defn(name=CHECK_SPECS.name)
    @permanent_failures
    async def check_specs(self, inp: ProjectRef) -> SpecsCheckResult:
        """spec.complete: every instance validated against its template again (its tests must parse);
        the snapshot of the specs and the settings the run will use (`inp.settings` when the run fixed
        them as it started). The snapshot is stored as it is read, under the project's row lock, and the
        project marked as running on it (store/fixed.py: fix_snapshot): a retry validates the same
        snapshot, and a spec or setting written after it reaches the next run, as its answer said. A
        check that finds problems (or fails) opens the specs again."""
        info = activity.info()
        key, run_id = f"{info.workflow_run_id}:{info.activity_id}", UUID(info.workflow_run_id)

        async def read() -> dict:
            return (await self._read_specs(inp)).model_dump(mode="json", by_alias=True)

        snapshot = SpecsCheckResult.model_validate(
            await fixed.fix_snapshot(
                self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id, key=key, run_id=run_id, read=read
            )
        )
        try:
            problems = await self._problems(snapshot)
        except BaseException:
            await fixed.unfix_snapshot(
                self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id, key=key, run_id=run_id
            )
            raise
        if problems:
            await fixed.unfix_snapshot(
                self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id, key=key, run_id=run_id
            )
        return snapshot.model_copy(update={"problems": problems})

    async def _read_specs(self, inp: ProjectRef) -> SpecsCheckResult:
        """The project's instances (those of `inp.only`) with their templates, and the run's settings."""
        specs = await instances.project_specs(self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id)
        if inp.only is not None:
            specs = [s for s in specs if s.id in set(inp.only)]
        settings = inp.settings
        if settings is None:
            effective = await pipeline_settings.effective_settings(
                self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id
            )
            settings = PipelineSettings.model_validate(effective.model_dump())
        snapshots: list[SpecSnapshot] = []
        for spec in specs:
            tpl = await templates.get_template(self._pool, tenant_id=inp.tenant_id, template_id=spec.template_id)
            snapshots.append(
                SpecSnapshot(
                    template_id=tpl.id,
                    template_name=tpl.name,
                    template_version=tpl.version,
                    schema=tpl.schema_,
                    values=spec.values,
                    values_hash=values_hash(spec.values),
                    instance_id=spec.id,
                )
            )
        return SpecsCheckResult(specs=snapshots, settings=settings)

    @staticmethod
    async def _problems(snapshot: SpecsCheckResult) -> list[SpecProblem]:
        if not snapshot.specs:
            return [SpecProblem(message="the project has no spec instances: create at least one")]
        problems: list[SpecProblem] = []
        for spec in snapshot.specs:
            label = f"{spec.template_name}@{spec.template_version}"
            for v in await checked_value_violations(spec.schema_, spec.values):
                problems.append(
                    SpecProblem(instance_id=spec.instance_id, template=label, path=v.path, message=v.message)
                )
        return problems

    # --- integration queue ----------------------------------------------------------------

    @activity.defn(name=INTEGRATE_ARTIFACTS.name)
    @permanent_failures
    async def integrate_artifacts(self, inp: IntegrateInput) -> IntegrateResult:
        """integration: the round's files into the project's tree, checked, stored by content hash in one
        transaction (a retry finds them all, at the same paths)."""
        files = {_instance_id(o.spec): c for o in inp.outputs if (c := _content(o)) is not None}
        current = await artifacts.current_paths(self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id)
        paths = _unique_paths(inp, current, set(files))
        try:
            importable = self._sandbox.importable()
        except RuntimeError as err:  # an allowed package is missing: the worker's configuration
            raise _no_sandbox(f"sandbox unavailable: {err}") from err
        findings = await asyncio.to_thread(
            static_checks, {paths[iid]: content for iid, content in files.items()}, importable
        )
        new: list[artifacts.NewArtifact] = []
        for o in inp.outputs:
            iid = _instance_id(o.spec)
            if iid in files:
                assert o.generation is not None  # it made the file
                new.append(
                    artifacts.NewArtifact(
                        instance_id=iid,
                        path=paths[iid],
                        content=files[iid],
                        values_hash=o.spec.values_hash,
                        template_id=o.spec.template_id,
                        template_name=o.spec.template_name,
                        template_version=o.spec.template_version,
                        model=inp.model,
                        techniques=inp.techniques,
                        retrieved_snippets=[str(s) for s in o.generation.provenance.retrieved_snippets],
                        generation_id=o.generation.id,
                        round=inp.round,
                        checks={"parses": findings[paths[iid]].parses, "problems": findings[paths[iid]].problems},
                        reliance=next(
                            (c.reliance.model_dump() for c in o.generation.candidates if c.reliance is not None), None
                        ),
                    )
                )
        names = {o.spec.instance_id: instance_name(o.spec) for o in inp.outputs}
        for item in new:  # a template's path hint that leaves the tree: say which template
            try:
                artifacts.check_path(item.path)
            except Invalid as err:
                raise Invalid(
                    f"{names[item.instance_id]} (template {item.template_name} {item.template_version}): {err.message}"
                ) from err
        try:
            saved = await artifacts.store_artifacts(
                self._pool, tenant_id=inp.tenant_id, project_id=inp.project_id, items=new
            )
        except NotFound as err:  # an instance deleted while its code was generated: say which, by name
            gone = err.extra.get("instance_id")
            if gone not in names:
                raise
            raise NotFound(f"{names[gone]}: the instance was deleted while its code was generated") from err
        stored = {a.instance_id: a for a in saved}
        out: list[ArtifactRef] = []
        for o in inp.outputs:
            iid = _instance_id(o.spec)
            path = paths[iid]
            if iid not in stored:
                out.append(
                    ArtifactRef(
                        instance_id=iid,
                        path=path,
                        parses=None,
                        problems=[o.error or (o.generation.note if o.generation else None) or "nothing was generated"],
                    )
                )
                continue
            out.append(
                ArtifactRef(
                    instance_id=iid,
                    artifact_id=stored[iid].id,
                    path=path,
                    parses=findings[path].parses,
                    problems=findings[path].problems,
                )
            )
        return IntegrateResult(artifacts=out)

    @activity.defn(name=RUN_SPEC_TESTS.name)
    @permanent_failures
    async def run_spec_tests(self, inp: DebugRoundInput) -> DebugRoundResult:
        """debugging: each instance's tests (after its setup lines) against its code in sandbox/; the round
        is a workflow_tasks row. An artifact with undefined names (integration's static check) is an error
        without a sandbox run, its findings the failure the repair round is told. Without a sandbox
        nothing runs: a non-retryable SandboxUnavailable, which fails the project."""
        specs = {s.instance_id: s for s in inp.specs}
        if any(spec_view(s.schema_, s.values).tests for s in inp.specs):
            try:
                await asyncio.to_thread(isolation, self._sandbox)
            except SandboxUnavailable as err:
                raise _no_sandbox(str(err)) from err
        task: dict[str, Any] = dict(
            tenant_id=inp.tenant_id,
            task_id=inp.task_id,
            project_id=inp.project_id,
            service=Service.workflow_orchestrator,
            task_type=f"debug_round_{inp.round}",
        )
        await tasks.ensure_task(self._pool, **task, status=TaskStatus.running)
        results: list[InstanceTestResult] = []
        progress = Progress()
        for i, ref in enumerate(inp.artifacts):
            progress(i)
            spec = specs[ref.instance_id]
            view = spec_view(spec.schema_, spec.values)
            if ref.artifact_id is None:
                results.append(
                    InstanceTestResult(
                        instance_id=ref.instance_id,
                        artifact_id=None,
                        status="missing",
                        failure="; ".join(ref.problems)[:FAILURE_CHARS],
                        problems=ref.problems,
                    )
                )
                continue
            art = await artifacts.get_artifact(self._pool, tenant_id=inp.tenant_id, artifact_id=ref.artifact_id)
            undefined = blocking(ref.problems)
            if undefined:  # the tests would only stop at the NameError: no sandbox run
                verdict = verdicts.static_error(undefined, ref.problems, len(view.tests))
            elif not view.tests:
                verdict = verdicts.no_tests()
            else:
                try:
                    run = await heartbeating(
                        asyncio.to_thread(
                            run_tests,
                            art.content,
                            view.tests,
                            setup=view.setup,
                            timeout_s=TEST_TIMEOUT_S,
                            memory_mb=TEST_MEMORY_MB,
                            config=self._sandbox,
                        ),
                        progress,
                    )
                except SandboxUnavailable as err:  # never run unconfined; no retry can fix it
                    await tasks.ensure_task(self._pool, **task, status=TaskStatus.failed)
                    raise _no_sandbox(str(err)) from err
                verdict = verdicts.of_run(run, len(view.tests))
                metrics.SANDBOX_RUNS.labels(run.status).inc()
                metrics.SANDBOX_SECONDS.labels(run.status).observe(run.duration_s)
                info = activity.info()  # a retried activity records the same key: counted once
                await usage.record(
                    self._pool,
                    tenant_id=inp.tenant_id,
                    source=f"sandbox:{info.workflow_id}:{info.activity_id}:{ref.instance_id}",
                    kind="sandbox_run",
                    project_id=inp.project_id,
                    seconds=run.duration_s,
                )
            await artifacts.record_test_result(
                self._pool,
                tenant_id=inp.tenant_id,
                artifact_id=art.id,
                test_status=verdict.status,
                tests=verdict.report,
            )
            results.append(
                InstanceTestResult(
                    instance_id=ref.instance_id, artifact_id=art.id, problems=ref.problems, **verdict.fields()
                )
            )
            activity.heartbeat(i + 1)
        outcome = DebugRoundResult(results=results)
        await tasks.ensure_task(
            self._pool, **task, status=TaskStatus.failed if outcome.failing else TaskStatus.completed
        )
        return outcome

    @activity.defn(name=TEST_CANDIDATES.name)
    @permanent_failures
    async def test_candidates(self, inp: TestCandidatesInput) -> TestCandidatesResult:
        """Each candidate of a generation against the spec's visible tests, in sandbox/ with the limits of
        the debugging state; nothing is stored (the generation records the results in its candidates)."""
        progress = Progress()
        try:
            results = await heartbeating(
                asyncio.to_thread(
                    run_candidates,
                    inp.codes,
                    inp.tests,
                    config=self._sandbox,
                    timeout_s=TEST_TIMEOUT_S,
                    memory_mb=TEST_MEMORY_MB,
                    progress=progress,
                ),
                progress,
            )
        except SandboxUnavailable as err:  # never run unconfined; no retry can fix it
            raise _no_sandbox(str(err)) from err
        info = activity.info()
        for i, result in enumerate(results):
            metrics.SANDBOX_RUNS.labels(result.status).inc()
            await usage.record(  # the run's seconds are not reported per candidate: units only
                self._pool,
                tenant_id=inp.tenant_id,
                source=f"sandbox:{info.workflow_id}:{info.activity_id}:{i}",
                kind="sandbox_run",
            )
        return TestCandidatesResult(results=results)


def _instance_id(spec: SpecSnapshot) -> UUID:
    """A project's specs are its instances (check_specs): each snapshot names its instance."""
    assert spec.instance_id is not None, f"{spec.template_name}: a project's spec without its instance"
    return spec.instance_id


def _content(o: InstanceOutput) -> str | None:
    """The file an instance's generation produced (None: nothing to store)."""
    files = o.generation.files if o.generation else []
    return files[0].content.rstrip("\n") + "\n" if files and files[0].content.strip() else None


def _unique_paths(inp: IntegrateInput, current: dict[UUID, str], storing: set[UUID]) -> dict[UUID, str]:
    """Each instance's file path in the project's tree: the same on every attempt of the activity.

    `current`: instance -> path of its current artifact, across the project; `storing`: the instances this
    round stores a file for. The paths that the current files of every other instance hold are taken (an
    instance with nothing new keeps its file). The path the template asks for, or if it is taken, that path
    with the instance id's prefix (then its whole id); an instance whose current file already has one of
    those keeps it, so a path stays with the instance that had it first and a retry after a commit finds
    the same paths. An instance with nothing to store is shown at its current file's path. The download's
    manifest name is never given out."""
    taken = {path for iid, path in current.items() if iid not in storing}
    options = {
        _instance_id(o.spec): _path_options(spec_view(o.spec.schema_, o.spec.values).path, _instance_id(o.spec))
        for o in inp.outputs
    }
    paths = {iid: current[iid] for iid in storing if iid in current and current[iid] in options[iid]}
    claimed = taken | set(paths.values()) | {artifacts.MANIFEST}
    for o in inp.outputs:
        iid = _instance_id(o.spec)
        if iid in paths:
            continue
        if iid not in storing:
            paths[iid] = current.get(iid, options[iid][0])
            continue
        free = next((p for p in options[iid] if p not in claimed), None)
        if free is None:
            raise Conflict(f"{instance_name(o.spec)}: no free path, {options[iid][0]!r} and its variants are taken")
        paths[iid] = free
        claimed.add(free)
    return paths


def _path_options(path: str, instance_id: UUID) -> list[str]:
    """`path`, then with the instance id's prefix before the extension, its whole id, and numbered (a last resort)."""
    folder, slash, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not (dot and stem):
        stem, dot, ext = name, "", ""
    tagged = [f"{folder}{slash}{stem}_{tag}{dot}{ext}" for tag in (str(instance_id)[:8], instance_id.hex)]
    return [path, *tagged, *(f"{folder}{slash}{stem}_{instance_id.hex}_{n}{dot}{ext}" for n in range(2, 2 + 64))]
