"""Prometheus metrics (infra/metrics.py): GET /metrics for admins, a metric that moves after a request, the
domain metrics after a project's run, a worker's own endpoint, and no id ever used as a label."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra import embedded, metrics
from tests.test_pipeline import _finished, _instance, _project

ALLOWED_LABELS = {
    "method",
    "route",
    "status",
    "reason",
    "model",
    "techniques",
    "direction",
    "result",
    "from_state",
    "to_state",
    "state",
    "outcome",
    "kind",
    "le",
}
ID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|[0-9a-f]{32}", re.I)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_are_for_admins_and_a_request_moves_them(api, tenant):
    route = {"method": "GET", "route": "/api/projects/{project_id}", "status": "404"}
    first = (await api.get("/metrics", headers=tenant.headers)).text
    before = value(first, "specmill_http_requests_total", **route)
    refused = value(first, "specmill_http_refusals_total", reason="forbidden")
    assert (await api.get("/metrics")).status_code == 401
    viewer = (await api.post("/api/keys", json={"name": "v", "role": "viewer"}, headers=tenant.headers)).json()
    assert (await api.get("/metrics", headers={"X-API-Key": viewer["api_key"]})).status_code == 403
    resp = await api.get("/api/projects/00000000-0000-4000-8000-000000000000", headers=tenant.headers)
    assert resp.status_code == 404
    page = await api.get("/metrics", headers=tenant.headers)
    assert page.headers["content-type"].startswith("text/plain")
    assert value(page.text, "specmill_http_requests_total", **route) == before + 1
    assert value(page.text, "specmill_http_refusals_total", reason="forbidden") == refused + 1  # the viewer's 403
    assert value(page.text, "specmill_http_request_duration_seconds_count", method="GET", route=route["route"]) >= 1


async def test_a_run_moves_the_domain_metrics(api, tenant, coder):
    coder.script("metrics_add", first="def metrics_add(a, b):\n    return a + b\n")
    before = metrics.exposition().decode()
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    await _instance(api, tenant, project["id"], "metrics_add", ["assert metrics_add(1, 2) == 3"])
    assert (await api.post(f"/api/projects/{project['id']}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _finished(api, tenant, project["id"]))["state"] == "completed"
    after = metrics.exposition().decode()
    for name, labels in [
        ("specmill_project_transitions_total", {"from_state": "integration", "to_state": "debugging"}),
        ("specmill_project_state_seconds_count", {"state": "code_generation"}),
        ("specmill_sandbox_runs_total", {"result": "passed"}),
        ("specmill_generations_total", {"model": "openai_api", "techniques": "none", "status": "completed"}),
        ("specmill_generation_tokens_total", {"model": "openai_api", "direction": "out"}),
        ("specmill_run_debugging_rounds_count", {"outcome": "completed"}),
    ]:
        assert value(after, name, **labels) > value(before, name, **labels), (name, labels)


async def test_no_label_is_an_id(api, tenant):
    await api.get("/api/projects/not-a-project", headers=tenant.headers)  # a path with junk in it
    text = (await api.get("/metrics", headers=tenant.headers)).text
    for (name, labels), _ in samples(text).items():
        if not name.startswith("specmill_"):
            continue
        for key, label_value in labels:
            assert key in ALLOWED_LABELS, f"{name}: label {key}"
            assert not ID.search(label_value), f"{name}: {key}={label_value} is an id"
    routes = {dict(labels).get("route") for (name, labels) in samples(text) if name == "specmill_http_requests_total"}
    assert "/api/projects/{project_id}" in routes and "/api/projects/not-a-project" not in routes


def test_a_worker_serves_its_metrics_on_localhost():
    port = embedded.free_port()
    metrics.serve(port)
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert resp.status_code == 200 and "specmill_sandbox_runs" in resp.text
