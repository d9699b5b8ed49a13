"""The one way every process connects to Temporal: same address, namespace and data converter."""

from __future__ import annotations

import asyncio
import os
import sys
from uuid import UUID

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import Priority
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError

from infra import logs, tracing
from models.settings import Settings

SEARCH_ATTRIBUTES = {
    "SpecmillTenant": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "SpecmillState": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
}


def tenant_priority(tenant_id: UUID) -> Priority:
    """A tenant's workflow, dispatched under the tenant as its fairness key (what it schedules inherits
    the key, and the workflows name it again explicitly: workflows/calls.py)."""
    return Priority(fairness_key=str(tenant_id))


async def connect_temporal(settings: Settings, *, lazy: bool = False) -> Client:
    """`lazy`: connect on first use, so a gateway started before Temporal recovers by itself."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        api_key=settings.temporal_api_key,
        tls=bool(settings.temporal_api_key),
        lazy=lazy,
        # also on every worker made with this client; the first is outermost: the tracing span is open when
        # the log context annotates it
        interceptors=[tracing.interceptor(), logs.interceptor()],
        runtime=_runtime(settings.temporal_metrics_port),
    )


_RUNTIMES: dict[int, Runtime] = {}


def _runtime(metrics_port: int | None) -> Runtime | None:
    """The SDK's runtime with its Prometheus endpoint on 127.0.0.1:`metrics_port` (one per process and
    port: the endpoint binds once); None: the default runtime, no endpoint."""
    if not metrics_port:
        return None
    if metrics_port not in _RUNTIMES:
        telemetry = TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}"))
        _RUNTIMES[metrics_port] = Runtime(telemetry=telemetry)
    return _RUNTIMES[metrics_port]


async def connect_temporal_retry(settings: Settings, wait_seconds: float = 60) -> Client:
    """Connect, waiting up to `wait_seconds` for a Temporal that is still starting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        try:
            return await connect_temporal(settings)
        except RuntimeError:  # the bridge's "Failed client connect"
            if loop.time() > deadline:
                raise
            await asyncio.sleep(1)


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register the search attributes the workflows upsert; idempotent. Returns those added."""
    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in known}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as err:  # e.g. Temporal Cloud: register them in the Cloud UI instead
            raise RuntimeError(f"could not register search attributes {sorted(missing)}: {err.message}") from err
    return sorted(missing)


def exit_without_teardown(code: int | None = 0) -> None:
    """End a short-lived process that used a Temporal client, skipping interpreter teardown: the
    client's Rust threads can outlive the event loop and abort the finalizing interpreter
    (temporalio/sdk-python#300), turning a finished command's exit status into a crash."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
