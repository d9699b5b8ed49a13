"""Traces (OpenTelemetry): one trace per user action, from the gateway through the workflow to each
activity, its model calls and its database queries.

- The gateway's FastAPI app is instrumented (its SSE stream's per-message send and receive spans left
  out), asyncpg (never a query's parameters) and httpx (the remote models' calls) in every process, and
  Temporal's `TracingInterceptor` sits on the one client factory (infra/temporal.py), so the workflow
  and activity spans continue the caller's trace through the workflow's headers.
- Spans carry the ids a trace is looked up by: `specmill.tenant_id`, `specmill.project_id`,
  `specmill.generation_id`, `specmill.request_id` (`annotate`).
- Export: OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set (the standard OTEL_* variables apply);
  otherwise no provider is installed and every span is a no-op, at no cost.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

log = logging.getLogger("specmill.tracing")
_instrumented = False


def configure(service: str, endpoint: str | None) -> None:
    """Install the exporting provider for this process (`service`: its name in the traces), once, and
    instrument asyncpg and httpx. Without an endpoint nothing is exported."""
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": f"specmill-{service}"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        log.info("traces go to %s", endpoint)
    instrument_libraries()


def instrument_libraries() -> None:
    """asyncpg (never a query's parameters) and httpx, once per process."""
    global _instrumented
    if _instrumented:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    AsyncPGInstrumentor(capture_parameters=False).instrument()
    HTTPXClientInstrumentor().instrument()
    _instrumented = True


def instrument_app(app) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"], excluded_urls="/metrics")


def annotate(**ids: Any) -> None:
    """Put ids on the current span (`specmill.<name>`), where one is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        for name, value in ids.items():
            if value is not None:
                span.set_attribute(f"specmill.{name}", str(value))


def interceptor():
    """Temporal's tracing interceptor (the client's and, through it, every worker's)."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return TracingInterceptor()


def current_trace_id() -> str | None:
    """The current trace's id as 32 hex digits (None: no trace is recording)."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None
