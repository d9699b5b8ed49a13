"""Traces (OpenTelemetry): one trace per user action, from the gateway through the workflow to each
activity, its model calls and its database queries.

- The gateway's FastAPI app is instrumented (its SSE stream's per-message send and receive spans left
  out), asyncpg (never a query's parameters) and httpx (the remote models' calls) in every process, and
  Temporal's `TracingInterceptor` sits on the one client factory (infra/temporal.py), so the workflow
  and activity spans continue the caller's trace through the workflow's headers.
- Spans carry the ids a trace is looked up by: `specmill.tenant_id`, `specmill.project_id`,
  `specmill.generation_id`, `specmill.request_id` (`annotate`).
- Export: OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set (the standard OTEL_* variables apply);
  otherwise no provider is installed and every span is a no-op. asyncpg and httpx are then left
  uninstrumented, and the gateway's requests skip the FastAPI instrumentation (`instrument_app`), at no cost.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

log = logging.getLogger("specmill.tracing")
_instrumented = False


def configure(service: str, endpoint: str | None) -> None:
    """Install the exporting provider for this process (`service`: its name in the traces), once, and
    instrument asyncpg and httpx. Without an endpoint nothing is exported, and nothing is instrumented."""
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
    """FastAPI's instrumentation, taken by each request only while a tracer provider is installed: without
    one its spans are no-ops, but its middleware would still cost every request (it matches the route
    again to name the span); so the app keeps its plain stack beside the instrumented one."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    build_plain = app.build_middleware_stack
    FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"], excluded_urls="/metrics")
    build_traced = app.build_middleware_stack
    app.build_middleware_stack = lambda: _WhenTracing(traced=build_traced(), plain=build_plain())


def tracing_installed() -> bool:
    """Whether a tracer provider is installed (configure's, or another's): spans can be recorded."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class _WhenTracing:
    """The app's middleware stack: the instrumented one while a tracer provider is installed, else the plain.
    `app` is the instrumented one: FastAPI looks down the stack's `app`s for OpenTelemetry's middleware,
    and leaves the request's spans to it when it finds one (else it would add server spans of its own)."""

    def __init__(self, *, traced, plain) -> None:
        self.traced, self.plain = traced, plain
        self.app = traced

    async def __call__(self, scope, receive, send) -> None:
        await (self.traced if tracing_installed() else self.plain)(scope, receive, send)


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
