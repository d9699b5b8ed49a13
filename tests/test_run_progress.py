"""A run says how far it got, by polling and on the event stream, and a change made while it runs reaches
the next run, as the answer says. Real gateway, Temporal, workers and sandbox; the model is the scripted
OpenAI-protocol fake, whose held answers keep the run at a known point while the test looks."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from models.progress import ProgressTracker
from tests.conftest import wait_for
from tests.test_cli import SPECMILL
from tests.test_pipeline import _finished, _instance, _project

DOUBLED_WRONG = "def doubled(x):\n    return x + x + 1\n"
DOUBLED_RIGHT = "def doubled(x):\n    return 2 * x\n"
HALVED_RIGHT = "def halved(x):\n    return x // 2\n"
WATCHED = "def watched(x):\n    return x // 2\n"


def _statuses(progress: dict) -> dict[str, tuple[str, int]]:
    return {i["name"]: (i["status"], i["round"]) for i in progress["instances"]}


def _same(a: dict, b: dict) -> bool:
    """Two readings of one recorded progress (the elapsed time of a running run goes on between them)."""
    return {k: v for k, v in a.items() if k != "elapsed_s"} == {k: v for k, v in b.items() if k != "elapsed_s"}


async def test_a_run_reports_its_progress_and_keeps_its_settings_and_specs(api, tenant, coder):
    coder.script("doubled", first=DOUBLED_WRONG, repair=DOUBLED_RIGHT)
    coder.script("halved", first=HALVED_RIGHT)
    project = await _project(api, tenant)
    pid, h = project["id"], tenant.headers
    # before its specs complete, the first run takes what is written: its answers say so
    resp = await api.put(f"/api/projects/{pid}/settings", json={"model": "openai_api", "debug_rounds": 1}, headers=h)
    assert resp.status_code == 200 and resp.json()["applies_to"] == "this run", resp.text
    doubled = await _instance(api, tenant, pid, "doubled", ["assert doubled(2) == 4"])
    halved = await _instance(api, tenant, pid, "halved", ["assert halved(4) == 2"])
    assert doubled["applies_to"] == "this run" and "has not fixed its specs" in doubled["note"]
    assert (await api.get(f"/api/projects/{pid}", headers=h)).json()["progress"] is None

    coder.hold("doubled", "halved")
    asked = len(coder.started)
    try:
        assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=h)).status_code == 200

        async def progress_where(check):
            row = (await api.get(f"/api/projects/{pid}", headers=h)).json()
            return row if row["progress"] and check(row["progress"]) else None

        row = await wait_for(lambda: progress_where(lambda p: True), timeout=60)
        first = row["progress"]
        assert (first["state"], first["round"], first["rounds"]) == ("code_generation", 1, 2)
        assert _statuses(first) == {"doubled": ("waiting", 1), "halved": ("waiting", 1)}
        assert first["counts"] == {"waiting": 2, "generated": 0, "tested": 0, "passed": 0, "failed": 0}
        assert (first["tokens_in"], first["tokens_out"]) == (0, 0)
        assert first["started_at"].endswith("+00:00") and first["elapsed_s"] >= 0

        # a setting and a spec changed while the run goes: saved for the next run, and the answer says so
        resp = await api.put(f"/api/projects/{pid}/settings", json={"debug_rounds": 0}, headers=h)
        assert resp.status_code == 200, resp.text
        saved = resp.json()
        assert (saved["applies_to"], saved["debug_rounds"]) == ("next run", 0)
        assert f"run {row['run_id']} keeps the settings it started with" in saved["note"], saved["note"]
        values = dict(halved["values"], description="Half of x, rounded down.")
        resp = await api.put(f"/api/instances/{halved['id']}", json={"values": values}, headers=h)
        assert resp.status_code == 200 and resp.json()["applies_to"] == "next run", resp.text
        assert "keeps the specs it started with" in resp.json()["note"]

        # the first answer asked for goes (the tenant's one generation slot here: the other waits for it):
        # that instance is generated, the other still waits, and the run's row agrees
        ours = {"doubled", "halved"}
        first_asked = await wait_for(lambda: next((n for n in coder.started[asked:] if n in ours), None), timeout=60)
        other = (ours - {first_asked}).pop()
        coder.release(first_asked)
        row = await wait_for(lambda: progress_where(lambda p: _statuses(p)[first_asked][0] == "generated"), timeout=60)
        assert _statuses(row["progress"])[other] == ("waiting", 1)
        assert row["progress"]["tokens_in"] > 0 and row["progress"]["tokens_out"] > 0
        run = (await api.get(f"/api/projects/{pid}/runs/{row['run_id']}", headers=h)).json()
        assert _same(run["progress"], row["progress"]), (run["progress"], row["progress"])
    finally:
        coder.release()
    row = await _finished(api, tenant, pid)
    # the run kept debug_rounds 1 (with 0, doubled would have failed after its first round)
    assert row["state"] == "completed", row["reason"]
    final, outcome = row["progress"], row["outcome"]

    # the numbers against the recorded outcome
    assert (final["state"], final["round"], final["rounds"]) == ("completed", outcome["rounds"], 2)
    assert _statuses(final) == {i["name"]: ("passed", i["round"]) for i in outcome["instances"]}
    assert _statuses(final) == {"doubled": ("passed", 2), "halved": ("passed", 1)}
    assert final["counts"] == {"waiting": 0, "generated": 0, "tested": 2, "passed": 2, "failed": 0}
    gens = (await api.get("/api/generations", params={"project_id": pid, "limit": 100}, headers=h)).json()["items"]
    assert len(gens) == 3  # halved once, doubled doubled
    assert (final["tokens_in"], final["tokens_out"]) == (
        sum(g["tokens_in"] for g in gens),
        sum(g["tokens_out"] for g in gens),
    )
    run = (await api.get(f"/api/projects/{pid}/runs/{row['run_id']}", headers=h)).json()
    assert run["progress"] == final  # ended: it no longer moves
    assert 0 < final["elapsed_s"] <= run["duration_s"]

    # the same object on the event stream, as the run moved: each newer than the last, the last the final
    events = (
        await api.get("/api/events", params={"project_id": pid, "run_id": row["run_id"], "limit": 100}, headers=h)
    ).json()["items"]
    seen = [e["payload"]["progress"] for e in events if e["payload"].get("progress")]
    assert [p["seq"] for p in seen] == sorted(p["seq"] for p in seen)
    assert all(len(p["instances"]) == 2 for p in seen)  # each event: the whole progress, not the record's part
    assert seen[-1] == final
    kinds = [e["type"] for e in events if e["payload"].get("progress")]
    assert kinds.count("run.progress") == 5  # three generations, two rounds tested
    assert [p["state"] for p in seen if p["state"] in ("integration", "debugging")][:2] == ["integration", "debugging"]

    # the running run used the old values: the next run sees halved as changed, with the settings saved meanwhile
    changes = (await api.get(f"/api/projects/{pid}/changes", headers=h)).json()
    assert changes["changed"] == [halved["id"]]
    resp = await api.post(f"/api/projects/{pid}/runs", json={"scope": "changed"}, headers=h)
    assert resp.status_code == 202, resp.text
    assert resp.json()["settings"]["debug_rounds"] == 0  # the 202 says what it runs with
    row = await _finished(api, tenant, pid)
    assert row["state"] == "completed" and row["progress"]["rounds"] == 1
    assert _statuses(row["progress"]) == {"halved": ("passed", 1)}
    runs = (await api.get(f"/api/projects/{pid}/runs", headers=h)).json()["items"]
    assert [r["settings"]["debug_rounds"] for r in runs] == [1, 0]
    # once no run is going, a change reaches the next run
    resp = await api.put(f"/api/projects/{pid}/settings", json={"debug_rounds": 2}, headers=h)
    assert resp.json()["applies_to"] == "next run" and "no run is going" in resp.json()["note"]


def test_the_tracker_counts_each_instance_once():
    a, b = uuid4(), uuid4()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tracker = ProgressTracker([(a, "a"), (b, "b")], rounds=3, started_at=start)
    tracker.generated(a, made=True, tokens_in=10, tokens_out=4)
    tracker.generated(b, made=False)
    snap = tracker.snapshot("integration", start + timedelta(seconds=5))
    assert (snap.seq, snap.counts.generated, snap.counts.failed, snap.tokens_in, snap.elapsed_s) == (1, 1, 1, 10, 5.0)
    tracker.tested({a: "failed", b: "missing"})
    tracker.round_started(2, [a, b])
    tracker.generated(a, made=True, tokens_in=1, tokens_out=1)
    # a record within a state carries only what changed since the last one, with the whole run's counts
    part = tracker.snapshot("code_generation", start + timedelta(seconds=8), full=False)
    assert [(i.name, i.status, i.seq) for i in part.instances] == [("a", "generated", 2), ("b", "waiting", 2)]
    tracker.tested({a: "passed"})
    later = tracker.snapshot("debugging", start + timedelta(seconds=8), full=False)
    assert [(i.name, i.status, i.seq) for i in later.instances] == [("a", "passed", 3)]
    # laid over the stored progress in either order, the two records give the same result
    assert snap.merged(part).merged(later) == snap.merged(later).merged(part)
    both = snap.merged(later).merged(part)
    assert {i.name: (i.status, i.round) for i in both.instances} == {"a": ("passed", 2), "b": ("waiting", 2)}
    assert (both.seq, both.state, both.counts.passed, both.counts.waiting) == (3, "debugging", 1, 1)
    snap = tracker.snapshot("code_generation", start + timedelta(seconds=9))
    assert {i.name: (i.status, i.round) for i in snap.instances} == {"a": ("passed", 2), "b": ("waiting", 2)}
    assert (snap.seq, snap.round, snap.counts.tested, snap.counts.waiting, snap.tokens_out) == (4, 2, 1, 1, 5)
    assert snap.line().startswith("code_generation round 2/3  1 passed, 0 failed, 0 generated, 1 waiting of 2")
    # read later, a running run's elapsed time goes on; an ended one's stays
    assert snap.read_at(start + timedelta(seconds=30)).elapsed_s == 30.0
    done = tracker.snapshot("completed", start + timedelta(seconds=10))
    assert done.read_at(start + timedelta(seconds=30)).elapsed_s == 10.0


async def test_specmill_watch_prints_a_progress_line_until_the_run_ends(api, tenant, coder, live_url):
    coder.script("watched", first=WATCHED)
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    await _instance(api, tenant, project["id"], "watched", ["assert watched(4) == 2"])
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "SPECMILL_API_KEY": tenant.api_key}

    async def watch(project_id: str, **more: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(SPECMILL), "watch", project_id, "--url", live_url, env={**env, **more},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    coder.hold("watched")  # the run waits for its answer while the watch prints its first line
    try:
        assert (await api.post(f"/api/projects/{project['id']}/specs/complete", headers=tenant.headers)).is_success
        proc = await watch(project["id"])
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert first.startswith("code_generation round 1/1  0 passed, 0 failed, 0 generated, 1 waiting of 1"), first
    finally:
        coder.release("watched")
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert any(line.startswith("completed       round 1/1  1 passed, 0 failed") for line in lines), lines
    assert lines[-1] == "all 1 instance(s) pass their tests (round 1)", lines
    # a key that is not one: a clear error and exit 1
    proc = await watch(project["id"], SPECMILL_API_KEY="sm_not_a_key")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and b'"error"' in err and b"401" in err, err
