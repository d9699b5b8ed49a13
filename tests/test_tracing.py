"""Traces (infra/tracing.py): one POST /api/generate is one trace, from the gateway's request through the
workflow to its activities, with the tenant and generation ids on its spans. The spans are caught by the
OpenTelemetry SDK's in-memory exporter, installed here as the process's provider (what OTLP would send)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Gate(SpanProcessor):
    """Passes spans on only while a test listens (the provider stays for the session once set)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner, self.open = inner, False

    def on_start(self, span, parent_context=None) -> None:
        if self.open:
            self.inner.on_start(span, parent_context)

    def on_end(self, span) -> None:
        if self.open:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@pytest.fixture(scope="session")
def recorder() -> tuple[InMemorySpanExporter, Gate]:
    exporter = InMemorySpanExporter()
    gate = Gate(SimpleSpanProcessor(exporter))
    provider = TracerProvider()
    provider.add_span_processor(gate)
    trace.set_tracer_provider(provider)
    return exporter, gate


@pytest.fixture
def spans(recorder):
    exporter, gate = recorder
    exporter.clear()
    gate.open = True
    yield exporter
    gate.open = False
    exporter.clear()


async def test_one_generation_is_one_trace_across_gateway_workflow_and_activities(api, tenant, spans):
    resp = await api.post(
        "/api/generate",
        json={
            "template": {"name": "python-function"},
            "values": {"function_name": "f", "description": "d"},
            "max_new_tokens": 8,
        },
        headers=tenant.headers,
    )
    assert resp.status_code == 200, resp.text
    gid = resp.json()["id"]
    finished = spans.get_finished_spans()
    [server] = [
        s
        for s in finished
        if s.name.startswith("POST ")
        and s.kind == trace.SpanKind.SERVER
        and s.attributes.get("specmill.generation_id") == gid
    ]
    assert server.attributes["specmill.tenant_id"] == str(tenant.tenant_id)
    same = [s for s in finished if s.context.trace_id == server.context.trace_id]
    names = {s.name for s in same}
    assert "StartWorkflow:GenerationWorkflow" in names and "RunWorkflow:GenerationWorkflow" in names, names
    activities = [s for s in same if s.name.startswith("RunActivity:")]
    assert {s.name for s in activities} >= {"RunActivity:generate_candidates", "RunActivity:record_generation"}, names
    for span in activities:
        assert span.attributes.get("specmill.tenant_id") == str(tenant.tenant_id), span.name
        assert span.attributes.get("specmill.generation_id") == gid, span.name


async def test_a_requests_spans_leave_out_its_send_and_receive(api, tenant, spans):
    spans.clear()
    resp = await api.get("/api/projects", headers=tenant.headers)
    assert resp.status_code == 200
    names = [s.name for s in spans.get_finished_spans()]
    assert names and not any(name.endswith((" http send", " http receive")) for name in names), names


async def test_a_run_keeps_the_trace_of_the_request_that_started_it(api, tenant, spans):
    project = (await api.post("/api/projects", json={"name": "traced"}, headers=tenant.headers)).json()
    [server] = [s for s in spans.get_finished_spans() if s.name.startswith("POST ") and s.kind == trace.SpanKind.SERVER]
    [run] = (await api.get(f"/api/projects/{project['id']}/runs", headers=tenant.headers)).json()["items"]
    assert run["trace_id"] == f"{server.context.trace_id:032x}"
