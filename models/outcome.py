"""A run's outcome, per instance and by name: what passed, what failed where, and with which values.

The project workflow builds it from its rounds (pure and deterministic, so workflow code may call it);
the run's record, GET /api/projects/{id}, the last state event, the workflow's result (or failure), the
demo and the zip's manifest all show the same object. Instances are named by their spec's name role
(a python-function's `function_name`), else by their file path, never by a UUID.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from models.common import ProjectState
from models.generation import SpecSnapshot
from models.spec_view import spec_view

RunScope = Literal["initial", "changed", "failed", "all"]
SHOWN_CHARS = 300  # a value or a test as a message quotes it


class InstanceOutcome(BaseModel):
    instance_id: UUID
    name: str = Field(description="The spec's name (a function's name), else its file path")
    template: str = Field(description="name@version")
    status: str = Field(
        description="passed | failed | error | timeout | no_tests | missing (nothing was generated) | not_run"
    )
    stage: ProjectState | None = Field(
        None, description="Where it ended: code_generation (nothing generated), integration, or debugging"
    )
    round: int | None = Field(None, description="The round its last result comes from")
    test: str | None = Field(None, description="The failing test's source")
    error: str | None = Field(None, description="The error it raised, e.g. AssertionError or a NameError")
    actual: str | None = Field(None, description="For a failing comparison: the left side's value (repr)")
    expected: str | None = Field(None, description="For a failing comparison: the right side's value (repr)")
    problems: list[str] = Field(default_factory=list, description="Static findings of integration")
    message: str = Field(description="One line a user reads")


class Outcome(BaseModel):
    state: ProjectState
    summary: str
    rounds: int = 0
    instances: list[InstanceOutcome] = Field(default_factory=list)

    def failing(self) -> list[InstanceOutcome]:
        return [i for i in self.instances if i.status not in ("passed", "no_tests")]


def instance_name(spec: SpecSnapshot) -> str:
    view = spec_view(spec.schema_, spec.values)
    return view.name or view.path


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def instance_outcome(spec: SpecSnapshot, result, round_: int | None) -> InstanceOutcome:
    """One instance from its last test result (a models.orchestrator.InstanceTestResult; None: not run)."""
    base: dict[str, Any] = dict(
        instance_id=spec.instance_id,
        name=instance_name(spec),
        template=f"{spec.template_name}@{spec.template_version}",
        round=round_,
    )
    if result is None:
        return InstanceOutcome(**base, status="not_run", message="not run: the run ended before its tests")
    test, error = _short(result.test), _short(result.error)
    actual, expected = _short(result.actual), _short(result.expected)
    problems = list(result.problems)
    if result.status == "passed":
        return InstanceOutcome(**base, status="passed", stage=ProjectState.debugging, message="its tests pass")
    if result.status == "no_tests":
        return InstanceOutcome(**base, status="no_tests", stage=ProjectState.integration, message="it has no tests")
    if result.status == "missing":
        why = _first_line(result.failure) or "nothing was generated"
        return InstanceOutcome(
            **base, status="missing", stage=ProjectState.code_generation, message=f"nothing generated: {why}"
        )
    if test is None and problems:  # refused before its tests ran (e.g. an undefined name)
        return InstanceOutcome(
            **base,
            status=result.status,
            stage=ProjectState.integration,
            error=error,
            problems=problems,
            message="; ".join(problems[:3]),
        )
    if test and actual is not None and expected is not None:
        message = f"{test} failed: expected {expected}, got {actual}"
    elif test:
        message = f"{test} failed" + (f": {error}" if error else "")
    else:
        message = error or _first_line(result.failure) or result.status
    if result.status == "timeout":
        message = "timed out" + (f" in {test}" if test else "") + (f": {error}" if error else "")
    return InstanceOutcome(
        **base,
        status=result.status,
        stage=ProjectState.debugging,
        test=test,
        error=error,
        actual=actual,
        expected=expected,
        problems=problems,
        message=message,
    )


def feedback_of(instance: InstanceOutcome) -> str:
    """What a rerun's first round tells the model of this instance's last failure (the rounds of one run
    tell it the failure text of the round before)."""
    lines = [f"status: {instance.status}", instance.message, *instance.problems]
    if instance.error and instance.error not in instance.message:
        lines.append(f"error: {instance.error}")
    return "\n".join(dict.fromkeys(line for line in lines if line))


def summarize(state: ProjectState, instances: list[InstanceOutcome], rounds: int, why: str | None = None) -> Outcome:
    """The run's outcome; `why`: what ended it when it was not its tests (a permanent error, a deletion)."""
    if why:
        summary = why
    elif state == ProjectState.completed:
        summary = f"all {len(instances)} instance(s) pass their tests (round {rounds})"
    else:
        failing = [i for i in instances if i.status not in ("passed", "no_tests")]
        names = "; ".join(f"{i.name}: {i.message}" for i in failing)
        summary = f"{len(failing)} of {len(instances)} instance(s) still fail after {rounds} round(s): {names}"
    return Outcome(state=state, summary=summary[:2000], rounds=rounds, instances=instances)
