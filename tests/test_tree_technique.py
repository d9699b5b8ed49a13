"""tree_transformers through the product: the catalog, choosing candidates and reranking snippets through
POST /api/generate, a tenant's own checkpoint trained through the API, and the training workflow resuming
after its worker is killed. The built-in checkpoint is trained here, for real, on small pools
(tests/tree_pools.py); the answers come from the scripted OpenAI protocol fake (tests/coder_fake.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from codegen.tree import build, checkpoints
from infra.training import follow, phase_steps, start_tree_training
from models.common import Role
from models.training import TrainTreeInput, TrainTreeResult
from store.tenants import create_api_key
from tests.conftest import wait_for
from tests.techniques import RETRIEVAL, TREE
from tests.test_durability import _env
from tests.tree_pools import FUNCTIONS, TINY, pools

ROOT = Path(__file__).resolve().parents[1]
FN = {"name": "python-function"}


def _values(name: str) -> dict:
    return {
        "function_name": name,
        "description": "Double a number.",
        "signature": f"def {name}(x: int) -> int",
        "tests": [f"assert {name}(2) == 4", f"assert {name}(5) == 10"],
    }


@pytest.fixture(scope="module")
def builtin_tree(stack) -> Path:
    """The platform's built-in checkpoint, trained on the toy pools into the test stack's models directory."""
    models = stack.settings.models_path
    if not checkpoints.versions(checkpoints.builtin_dir(models)):
        build.build_builtin(models, checkpoints.root(models) / "work" / "fixture", pools(), TINY)
    return models


async def test_without_a_checkpoint_it_is_listed_unavailable_with_the_command(
    stack, make_app, tenant, tmp_path, workers
):
    async for api in make_app(stack.with_(models_dir=tmp_path)):
        items = (await api.get("/api/techniques", headers=tenant.headers)).json()["items"]
        tree = next(t for t in items if t["name"] == TREE)
        assert tree["implemented"] is True
        assert tree["backends"] == ["local_llama", "deepseek_8b", "openai_api", "anthropic_api"]
        assert set(tree["parameters"]) == {"selector", "snippets"}
        assert "specmill models train-tree" in tree["unavailable"]
        assert "syntax-tree encoder that scores candidates and snippets" in tree["description"]
        resp = await api.post(
            "/api/generate",
            json={"template": FN, "values": _values("twice"), "model": "openai_api", "n": 2, "techniques": [TREE]},
            headers=tenant.headers,
        )
        assert resp.status_code == 422 and "specmill models train-tree" in resp.json()["detail"]


async def test_one_candidate_with_nothing_to_choose_among_is_422(api, tenant, builtin_tree):
    resp = await api.post(
        "/api/generate",
        json={"template": FN, "values": _values("twice"), "model": "openai_api", "techniques": [TREE]},
        headers=tenant.headers,
    )
    assert resp.status_code == 422 and "chooses among candidates" in resp.json()["detail"]


async def test_the_tree_chooses_among_the_candidates_and_records_its_scores(api, tenant, coder, builtin_tree):
    coder.queued["double"] = [
        "def double(x):\n    return x + 3\n",
        "def double(x):\n    return 2 * x\n",
        "def double(x):\n    return x\n",
    ]
    resp = await api.post(
        "/api/generate",
        json={"template": FN, "values": _values("double"), "model": "openai_api", "n": 3, "techniques": [TREE]},
        headers=tenant.headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    cands = body["candidates"]
    assert len(cands) == 3 and all(c["tree_score"] is not None and c["selection_score"] is not None for c in cands)
    best = max(cands, key=lambda c: c["selection_score"])
    assert body["files"][0]["content"] == best["code"]
    assert best["code"].strip().endswith("return 2 * x")  # the one that passes the visible tests
    assert body["provenance"]["techniques"][TREE]["checkpoint"] == "builtin v0001"
    stored = (await api.get(f"/api/generations/{body['id']}", headers=tenant.headers)).json()
    assert stored["result"]["provenance"]["techniques"][TREE]["checkpoint"] == "builtin v0001"


async def test_with_retrieval_it_reranks_the_drafts_snippets_by_their_trees(api, new_tenant, coder, builtin_tree):
    t = await new_tenant()
    ids = []
    for content in (
        "class Box:\n    def __init__(self, v):\n        self.v = v\n",
        "def triple(y):\n    return y * 3\n",
    ):
        snip = await api.post(
            "/api/snippets",
            json={"language": "python", "description": "multiply a number", "content": content},
            headers=t.headers,
        )
        ids.append(snip.json()["id"])

    async def indexed():
        hits = (await api.post("/api/similar", json={"query": "multiply a number"}, headers=t.headers)).json()
        return set(ids) <= {r["id"] for r in hits["items"]}

    await wait_for(indexed, timeout=10)
    coder.script("times2", "def times2(x):\n    return x * 2\n")
    resp = await api.post(
        "/api/generate",
        json={
            "template": FN,
            "values": _values("times2"),
            "model": "openai_api",
            "techniques": [RETRIEVAL, TREE],
            "options": {TREE: {"selector": "tree"}},
        },
        headers=t.headers,
    )
    assert resp.status_code == 200, resp.text
    reranked = resp.json()["provenance"]["techniques"][TREE]["snippets"]
    assert {s["id"] for s in reranked} == set(ids)
    assert [s["id"] for s in reranked][0] == ids[1]  # the function is structurally the draft's twin
    assert reranked[0]["similarity"] > reranked[1]["similarity"]


async def test_a_tenant_trains_its_own_checkpoint_through_the_api(api, pool, temporal, new_tenant, coder, builtin_tree):
    t = await new_tenant()
    path = f"/api/techniques/{TREE}/train"
    bad = await api.post(path, json={"params": {"contrastive_steps": 0}}, headers=t.headers)
    assert bad.status_code == 422 and "detail" in bad.json()
    editor = await create_api_key(pool, tenant_id=t.tenant_id, role=Role.editor)
    assert (await api.post(path, json={}, headers={"X-API-Key": editor.api_key})).status_code == 403

    params = TINY.model_dump()
    started = await api.post(path, json={"params": params}, headers=t.headers)
    assert started.status_code == 202, started.text
    result = await temporal.get_workflow_handle(started.json()["id"], result_type=TrainTreeResult).result()
    assert result.path is None and "keeps serving it" in result.note  # no code of its own yet

    for i, code in enumerate(FUNCTIONS):
        made = await api.post("/api/snippets", json={"language": "python", "content": code}, headers=t.headers)
        assert made.status_code == 201, (i, made.text)
    again = await api.post(path, json={"params": params}, headers=t.headers)
    result = await temporal.get_workflow_handle(again.json()["id"], result_type=TrainTreeResult).result()
    assert result.label == "tenant v0001" and result.meta["phase1"]["functions"] == len(FUNCTIONS)
    assert Path(result.path).parent == checkpoints.tenant_dir(builtin_tree, t.tenant_id)

    coder.queued["dbl"] = ["def dbl(x):\n    return x * 2\n", "def dbl(x):\n    return x - 2\n"]
    resp = await api.post(
        "/api/generate",
        json={"template": FN, "values": _values("dbl"), "model": "openai_api", "n": 2, "techniques": [TREE]},
        headers=t.headers,
    )
    assert resp.json()["provenance"]["techniques"][TREE]["checkpoint"] == "tenant v0001"


async def test_a_new_run_never_resumes_what_an_unfinished_earlier_run_left(stack, tmp_path):
    """A run terminated mid-training leaves its work directory; the next run of the same workflow id (a
    new run id, perhaps other parameters) removes it and trains from the start."""
    from dataclasses import replace

    from temporalio.testing import ActivityEnvironment

    from activities.training import TrainingActivities

    models = tmp_path / "models"
    pool_file = tmp_path / "pools.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in pools()))
    runs = checkpoints.root(models) / "work" / "tree-training-builtin"
    (runs / "an-earlier-run").mkdir(parents=True)
    (runs / "an-earlier-run" / "phase1.pt").write_bytes(b"the state of a run with other parameters")
    env = ActivityEnvironment()
    env.info = replace(ActivityEnvironment.default_info(), workflow_id="tree-training-builtin", workflow_run_id="now")
    acts = TrainingActivities(None, stack.with_(models_dir=models))  # the built-in run reads no rows: no pool
    result = await env.run(acts.train_tree, TrainTreeInput(params=TINY, pools=str(pool_file)))
    assert result.label == "builtin v0001" and result.meta["phase1"]["resumed_from"] == 0
    assert not runs.exists()


@pytest.mark.slow
async def test_a_training_run_resumes_from_its_checkpoint_after_its_worker_is_killed(stack, temporal, tmp_path):
    """The training worker runs as its own process (`specmill worker training`) and is killed with SIGKILL
    mid-phase; the next worker resumes from the phase's checkpoint and ends with the weights of a run
    never killed (both on one thread, so that their arithmetic is the same). Meanwhile the run reports its
    phase, step and loss, as the CLI's progress bar reads them."""
    models = tmp_path / "models"
    settings = stack.with_(task_queue_prefix=f"train-{uuid.uuid4().hex[:8]}-", models_dir=models)
    pool_file = tmp_path / "pools.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in pools()))
    params = TINY.model_copy(update={"contrastive_steps": 40, "checkpoint_every": 4})
    env = {**_env(settings), "OMP_NUM_THREADS": "1"}

    def worker(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - the process writes it until it ends
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "training"], cwd=ROOT, env=env, stdout=log, stderr=log
        )

    first, second = worker("worker-1"), None
    try:
        inp = TrainTreeInput(params=params, pools=str(pool_file))
        handle = await start_tree_training(temporal, settings, inp)
        runs = checkpoints.root(models) / "work" / handle.id
        work = runs / (handle.result_run_id or "")

        def past_a_checkpoint():
            state = work / "phase1.pt"
            return state.exists() and torch.load(state, weights_only=True)["step"] >= 8

        await wait_for(past_a_checkpoint, timeout=120, interval=0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = worker("worker-2")
        reports = []  # what `specmill models train-tree` draws its bar from
        result = await follow(temporal, handle, reports.append)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2
    assert result.meta["phase1"]["resumed_from"] >= 8
    steps = phase_steps(inp)
    assert reports and all(0 < r.step <= steps[r.phase] and r.loss == r.loss for r in reports), reports
    assert not runs.exists()  # the run's resumable state goes once it is done

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = build.build_builtin(tmp_path / "whole", tmp_path / "whole-work", pools(), params)
    finally:
        torch.set_num_threads(threads)
    killed, never = checkpoints.read(Path(result.path), "killed"), checkpoints.read(Path(whole.path), "whole")
    assert whole.meta["phase1"]["resumed_from"] == 0
    for a, b in zip(killed.encoder.state_dict().values(), never.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert killed.combiner == never.combiner
