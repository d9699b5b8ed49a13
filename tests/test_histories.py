"""Recorded workflow histories are only ever added, never rewritten, renamed or deleted.

tests/test_replay.py proves that today's workflow code replays every history under tests/histories.
That proof is only worth something if the histories are the ones real runs recorded with the code of
their day: a history re-recorded after a workflow change proves only that today's code replays
today's recordings. So a change to a workflow's commands needs `workflow.patched(...)` or a new
workflow type, plus new recordings beside the old ones, and this test fails on any edit.

The rule starts at RULE_SINCE: before it, the lease change of 2026-11-25 (1fc3943) re-recorded the
pipeline-repair-* and pipeline-regenerate-* histories; the originals are back beside them as
pipeline-prelease-* (recovered from e501e63), and they replay.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = "tests/histories"
RULE_SINCE = "1771bec73a9cda7bea30e2d99ce62c750ee8fae0"


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def repo():
    if _git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        pytest.skip("not a git checkout: the histories' record cannot be read")


def test_no_history_is_changed_in_the_working_tree(repo):
    changed = _git("status", "--porcelain", "--", HISTORIES).stdout.splitlines()
    edits = [line for line in changed if not line.startswith("??") and "A" not in line[:2]]
    assert not edits, f"recorded histories are only ever added: {edits}"


def test_no_commit_since_the_rule_changed_a_history(repo):
    if _git("cat-file", "-e", f"{RULE_SINCE}^{{commit}}").returncode != 0:
        assert _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true", (
            f"{RULE_SINCE} is not in this repository's history"
        )
        pytest.skip("a shallow clone: the commits since the rule are not here")
    log = _git("log", "--format=%h %s", "--diff-filter=MDRTC", f"{RULE_SINCE}..HEAD", "--", HISTORIES)
    assert log.returncode == 0, log.stderr
    assert not log.stdout.strip(), f"commits that changed recorded histories (add new ones instead):\n{log.stdout}"
