"""Every activity a workflow calls is in the table (models/activities.py), and the worker of the queue
it is sent to registers it under that name.

Three sources are checked against the table: the workflows' code (no activity named by a string),
each queue's worker (workers/queues.py: `served` finds every activity the table gives its queue),
and the recorded histories (every activity real runs scheduled, with the queue it was sent to).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from models import activities as table
from models.common import ORCHESTRATOR
from models.common import QUEUES as QUEUE_NAMES
from workers.queues import QUEUES, served

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = sorted((ROOT / "workflows").glob("*.py"))
HISTORIES = sorted((ROOT / "tests" / "histories").glob("*.json"))


def test_every_queue_serves_what_the_table_gives_it():
    assert set(QUEUES) == set(QUEUE_NAMES)
    for queue in QUEUES.values():
        acts = queue.activities.__new__(queue.activities)  # the bound methods are enough to read their names
        names = sorted(getattr(m, "__name__", "") for m in served(queue.name, acts))
        assert names == sorted(a.name for a in table.served_by(queue.name)), queue.name


def test_a_queue_missing_an_activity_does_not_start():
    class Empty:
        pass

    with pytest.raises(RuntimeError, match="does not define record_project_state"):
        served(ORCHESTRATOR, Empty())


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            yield name, node


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.stem for p in WORKFLOW_FILES])
def test_workflows_call_activities_through_the_table(path: Path):
    tree = ast.parse(path.read_text())
    for name, call in _calls(tree):
        if name == "execute_activity":
            assert path.name == "calls.py", f"{path.name}:{call.lineno}: call activities through workflows.calls"
        if name in ("execute", "_activity") and call.args:  # workflows.calls.execute, ProjectWorkflow._activity
            first = call.args[0]
            constants = [n.id for n in ast.walk(first) if isinstance(n, ast.Name) and n.id.isupper()]
            params = [n.id for n in ast.walk(first) if isinstance(n, ast.Name) and n.id == "act"]
            assert constants or params, f"{path.name}:{call.lineno}: the activity is not one of the table's"
            assert all(isinstance(vars(table).get(n), table.ActivityType) for n in constants), call.lineno
        for arg in call.args[:1]:
            if isinstance(arg, ast.Constant) and arg.value in table.ACTIVITIES:
                pytest.fail(f"{path.name}:{call.lineno}: activity {arg.value!r} named by a string")


def test_every_activity_of_the_recorded_histories_went_to_the_queue_that_serves_it():
    seen = set()
    for path in HISTORIES:
        for event in json.loads(path.read_text())["history"]["events"]:
            attrs = event.get("activityTaskScheduledEventAttributes")
            if not attrs:
                continue
            name, queue = attrs["activityType"]["name"], attrs["taskQueue"]["name"]
            assert name in table.ACTIVITIES, f"{path.name}: {name} is not in the table"
            assert queue.endswith(table.ACTIVITIES[name].queue), f"{path.name}: {name} sent to {queue}"
            seen.add(name)
    assert {"record_project_state", "check_specs", "integrate_artifacts", "run_spec_tests"} <= seen
