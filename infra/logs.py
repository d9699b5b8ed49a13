"""Structured logs: one JSON object per line, carrying the ids of what the line is about.

- `context`: the request id, tenant and project of the work at hand, set where they become known (the
  gateway's middleware and its authentication; an activity's input) and read by the formatter. Inside a
  Temporal activity the formatter also adds its workflow id, run id, activity id and attempt; inside a
  workflow, the SDK's `workflow.logger` passes the same as the record's `temporal_workflow` extra.
- `redact`: every line goes through it. API keys (`sm_...`), invitations (`smi_...`), provider keys
  (`sk-...`, `sk-ant-...`), bearer tokens and JWTs are replaced before the line is written, whatever
  logged them.
- `configure(settings)`: JSON unless LOG_FORMAT says text, or says auto and stderr is a terminal (what
  `make run` shows on the terminal is for reading; what its children write to their log files is JSON).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
TENANT_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)
PROJECT_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("project_id", default=None)

SECRETS = [
    (re.compile(r"\bsm_[0-9a-f]{8}_[A-Za-z0-9_\-]{8,}"), "sm_[redacted]"),  # specmill API keys
    (re.compile(r"\bsmi_[0-9a-f]{8}_[A-Za-z0-9_\-]{8,}"), "smi_[redacted]"),  # invitations (store/invitations.py)
    (re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{8,}"), "sk-[redacted]"),  # OpenAI / Anthropic keys
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9_\-\.=]+"), r"\1 [redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"), "[jwt redacted]"),
    (re.compile(r"(?i)(api[_-]?key|password|secret|token)(\"?\s*[:=]\s*\"?)[^\s\",}]{6,}"), r"\1\2[redacted]"),
]
STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# What each pattern of SECRETS needs in a text to match, lowercased: most lines hold none of these, and
# a few substring tests (far cheaper than a regular expression's scan) spare them the substitutions.
_NEEDED = ("sm_", "smi_", "sk-", "bearer", "eyj", "apikey", "api_key", "api-key", "password", "secret", "token")


def redact(text: str) -> str:
    lowered = text.lower()
    if not any(needle in lowered for needle in _NEEDED):
        return text
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _temporal_ids() -> dict[str, Any]:
    """The activity's ids when the line is logged inside one (the SDK knows them there)."""
    try:
        from temporalio import activity

        if not activity.in_activity():
            return {}
        info = activity.info()
    except Exception:  # noqa: BLE001 - a log line never fails for want of its ids
        return {}
    return {
        "workflow_id": info.workflow_id,
        "run_id": info.workflow_run_id,
        "activity_id": info.activity_id,
        "activity": info.activity_type,
        "attempt": info.attempt,
    }


def ids() -> dict[str, Any]:
    """The ids known where the line is logged."""
    out: dict[str, Any] = {}
    for key, var in (("request_id", REQUEST_ID), ("tenant_id", TENANT_ID), ("project_id", PROJECT_ID)):
        value = var.get()
        if value is not None:
            out[key] = value
    return out | _temporal_ids()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **ids(),
        }
        workflow = getattr(record, "temporal_workflow", None)  # workflow.logger's extra
        if isinstance(workflow, dict):
            line.update({"workflow_id": workflow.get("workflow_id"), "run_id": workflow.get("run_id")})
        for key, value in vars(record).items():
            if key not in STANDARD and key not in line and not key.startswith("temporal_"):
                line[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """For a terminal: the usual line, with the ids it has at the end, and the same redaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        known = ids()
        if known:
            text += "  " + " ".join(f"{k}={v}" for k, v in known.items())
        return redact(text)


def wants_json(log_format: str, stream=None) -> bool:
    if log_format == "json":
        return True
    if log_format == "text":
        return False
    stream = stream or sys.stderr
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure(log_format: str = "auto", level: int = logging.INFO) -> None:
    """The root logger's one handler, on stderr (replacing any basicConfig)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if wants_json(log_format) else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _field(value: Any, name: str) -> Any:
    """`value.name`, or that of one of its fields (an input that wraps another: RecordGenerationInput.inp)."""
    found = getattr(value, name, None)
    if found is not None or not hasattr(value, "__dict__"):
        return found
    return next((getattr(v, name) for v in vars(value).values() if getattr(v, name, None) is not None), None)


def interceptor():
    """A Temporal client and worker interceptor: an activity's log lines carry the tenant and project of
    its input (its first argument's `tenant_id` and `project_id`, or those of a model it wraps)."""
    from temporalio import activity
    from temporalio import client as temporal_client
    from temporalio import worker as temporal_worker

    from infra import tracing

    class Inbound(temporal_worker.ActivityInboundInterceptor):
        async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
            first = input.args[0] if input.args else None
            owner = activity.info().workflow_id or ""  # generation-<id>, project-<id>: business ids
            kind, _, owner_id = owner.partition("-")
            tenant_id = _field(first, "tenant_id")
            project_id = _field(first, "project_id")
            tracing.annotate(  # the activity's span (Temporal's tracing interceptor runs first)
                tenant_id=tenant_id,
                project_id=project_id or (owner_id if kind == "project" else None),
                generation_id=_field(first, "generation_id") or (owner_id if kind == "generation" else None),
            )
            tokens = [
                (var, var.set(str(value)))
                for var, value in ((TENANT_ID, tenant_id), (PROJECT_ID, project_id))
                if value is not None
            ]
            try:
                return await super().execute_activity(input)
            finally:
                for var, token in reversed(tokens):
                    var.reset(token)

    class LogContext(temporal_client.Interceptor, temporal_worker.Interceptor):
        def intercept_activity(self, next: temporal_worker.ActivityInboundInterceptor):
            return Inbound(next)

    return LogContext()
