"""`specmill watch PROJECT_ID`: a run's progress as lines on a terminal, by polling the gateway.

Each time the run's recorded progress moves (GET /api/projects/{id}: `progress`, models/progress.py) it
prints one line: the state, the round of the rounds, the instances passed, failed, generated and
waiting, the tokens and the time so far; once the run has ended, its outcome's summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from models.common import TERMINAL_STATES, ProjectState
from models.progress import RunProgress


class WatchError(RuntimeError):
    pass


def watch(
    http: httpx.Client, project_id: str, *, echo: Callable[[str], None], timeout_s: float, interval_s: float = 1.0
) -> str:
    """Print the run's progress as it moves; the state it ended in. WatchError: an answer that is not
    200 (an unknown project, a key of another tenant), or no end within `timeout_s`."""
    deadline, shown = time.monotonic() + timeout_s, None
    while True:
        resp = http.get(f"/api/projects/{project_id}")
        if resp.status_code != 200:
            detail = resp.json().get("detail") if resp.headers.get("content-type") == "application/json" else resp.text
            raise WatchError(f"GET /api/projects/{project_id}: {resp.status_code} {detail}")
        row = resp.json()
        state = ProjectState(row["state"])
        progress = RunProgress.model_validate(row["progress"]) if row["progress"] else None
        mark = (state, progress.seq if progress else None)
        if mark != shown:
            shown = mark
            echo(progress.line() if progress else f"{state.value:15} (no progress yet: the specs are not complete)")
        if state in TERMINAL_STATES:
            if row.get("outcome"):
                echo(row["outcome"]["summary"])
            return state.value
        if time.monotonic() > deadline:
            raise WatchError(f"the run did not end within {timeout_s:.0f} s")
        time.sleep(interval_s)
