"""A run's progress: what its workflow knows, as it knows it (workflows/project.py records each change).

A run's progress starts when its code generation starts (the specs completed, or POST .../runs) and is
kept once it has ended. Per instance of the run:
- `waiting`: its code for the current round is not made yet (queued for a slot, or being generated);
- `generated`: its code of this round is made, its tests have not run yet;
- `passed` / `failed`: its tests passed, or failed (or nothing could be generated); a failed instance
  goes back to `waiting` when a repair round starts for it.
`counts.tested` is passed + failed. Tokens are those of the run's generations that have finished
(every candidate, as GET /api/generations counts them). `round` counts as the outcome counts: the first
generation is round 1, each repair one more, `rounds` at most (debug_rounds + 1).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from models.common import TERMINAL_STATES, ProjectState, UtcDatetime

ProgressStatus = Literal["waiting", "generated", "passed", "failed"]
_PASSING = ("passed", "no_tests")


class InstanceProgress(BaseModel):
    id: UUID
    name: str
    status: ProgressStatus
    round: int = Field(description="The round it is in, or the round it passed or last failed in")
    seq: int = Field(0, description="The run's progress `seq` at which this instance last changed")


class ProgressCounts(BaseModel):
    waiting: int = 0
    generated: int = 0
    tested: int = Field(0, description="passed + failed")
    passed: int = 0
    failed: int = 0


class RunProgress(BaseModel):
    seq: int = Field(description="Grows with each change the workflow records; a reader keeps the highest")
    state: ProjectState
    round: int
    rounds: int = Field(description="The most rounds this run may take: debug_rounds + 1")
    instances: list[InstanceProgress]
    counts: ProgressCounts
    tokens_in: int = 0
    tokens_out: int = 0
    started_at: UtcDatetime = Field(description="When the run's code generation started")
    updated_at: UtcDatetime = Field(description="When the workflow recorded this")
    elapsed_s: float = Field(description="From started_at to now, or to the run's end once it has ended")

    def merged(self, record: RunProgress) -> RunProgress:
        """This progress with a later record of the workflow's laid over it, whatever order the two were
        stored in: each instance as the record that last changed it says, the rest as the newer of the two
        says, and the counts of the instances so merged. A record may carry only the instances that
        changed since the one before (`ProgressTracker.snapshot(full=False)`)."""
        by_id = {i.id: i for i in self.instances}
        for item in record.instances:
            if item.id not in by_id or by_id[item.id].seq <= item.seq:
                by_id[item.id] = item
        newer = record if record.seq > self.seq else self
        return newer.model_copy(update={"instances": list(by_id.values()), "counts": _counts(list(by_id.values()))})

    def line(self) -> str:
        """One line for a terminal: state, round, the counts, tokens and time."""
        c = self.counts
        return (
            f"{self.state.value:15} round {self.round}/{self.rounds}  {c.passed} passed, {c.failed} failed, "
            f"{c.generated} generated, {c.waiting} waiting of {len(self.instances)}  "
            f"{self.tokens_in + self.tokens_out} tokens  {self.elapsed_s:.0f} s"
        )

    def read_at(self, now: datetime) -> RunProgress:
        """As a reader sees it now: a running run's elapsed time runs on from what was recorded."""
        if self.state in TERMINAL_STATES:
            return self
        return self.model_copy(update={"elapsed_s": max(self.elapsed_s, (now - self.started_at).total_seconds())})


def _counts(items: list[InstanceProgress]) -> ProgressCounts:
    counts = ProgressCounts(**{s: sum(i.status == s for i in items) for s in ProgressCounts.model_fields})
    counts.tested = counts.passed + counts.failed
    return counts


class ProgressTracker:
    """The workflow's own account of its run (pure and deterministic: no clock, no I/O of its own)."""

    def __init__(self, instances: list[tuple[UUID, str]], rounds: int, started_at: datetime) -> None:
        self._names = dict(instances)
        self._status: dict[UUID, ProgressStatus] = dict.fromkeys(self._names, "waiting")
        self._round_of: dict[UUID, int] = dict.fromkeys(self._names, 1)
        self._changed_at: dict[UUID, int] = dict.fromkeys(self._names, 0)  # the seq that last changed each
        self._pending: set[UUID] = set(self._names)  # changed since the last snapshot
        self.rounds = rounds
        self.round = 1
        self.started_at = started_at
        self.tokens_in = self.tokens_out = 0
        self.seq = 0

    def round_started(self, round_: int, ids: list[UUID]) -> None:
        self.round = round_
        for iid in ids:
            self._set(iid, "waiting", round_)

    def generated(self, iid: UUID, *, made: bool, tokens_in: int = 0, tokens_out: int = 0) -> None:
        """A generation finished: its code was made (`made`), or it failed and the instance has nothing."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self._set(iid, "generated" if made else "failed")

    def tested(self, results: dict[UUID, str]) -> None:
        """The round's test statuses by instance (passed, no_tests, failed, error, timeout, missing)."""
        for iid, status in results.items():
            if iid in self._status:
                self._set(iid, "passed" if status in _PASSING else "failed")

    def _set(self, iid: UUID, status: ProgressStatus, round_: int | None = None) -> None:
        self._status[iid] = status
        if round_ is not None:
            self._round_of[iid] = round_
        self._pending.add(iid)

    def snapshot(self, state: ProjectState, now: datetime, *, full: bool = True) -> RunProgress:
        """The next record: every instance (`full`), or only those changed since the last record, so that
        what the workflow records within a state grows with the changes, not with the project's size. The
        counts are always the whole run's."""
        self.seq += 1
        for iid in self._pending:
            self._changed_at[iid] = self.seq
        everyone = [
            InstanceProgress(
                id=iid, name=name, status=self._status[iid], round=self._round_of[iid], seq=self._changed_at[iid]
            )
            for iid, name in self._names.items()
        ]
        items = everyone if full else [i for i in everyone if i.id in self._pending]
        self._pending.clear()
        return RunProgress(
            seq=self.seq,
            state=state,
            round=self.round,
            rounds=self.rounds,
            instances=items,
            counts=_counts(everyone),
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            started_at=self.started_at,
            updated_at=now,
            elapsed_s=max(0.0, (now - self.started_at).total_seconds()),
        )
