"""Structured logs (infra/logs.py): JSON lines with the request id, tenant and Temporal ids, and no secret
in any line, whatever logged it."""

from __future__ import annotations

import io
import json
import logging
import uuid
from contextlib import contextmanager

from infra import logs

PROVIDER_KEY = "sk-test-" + uuid.uuid4().hex


@contextmanager
def captured():
    """Every line the process logs meanwhile, as the JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_line_carries_the_ids_known_where_it_is_logged_and_no_secret():
    token = logs.REQUEST_ID.set("req-1")
    tenant = logs.TENANT_ID.set("t-1")
    try:
        with captured() as out:
            logging.getLogger("specmill.test").warning(
                "calling with sm_0123abcd_supersecretvalue1234 and %s, Authorization: Bearer abc.def-ghi, "
                "invited by smi_89abcdef_invitationsecret99",
                PROVIDER_KEY,
                extra={"model": "openai_api"},
            )
    finally:
        logs.REQUEST_ID.reset(token)
        logs.TENANT_ID.reset(tenant)
    [line] = lines(out)
    assert (line["request_id"], line["tenant_id"], line["model"], line["level"]) == (
        "req-1",
        "t-1",
        "openai_api",
        "warning",
    )
    assert line["time"].endswith("+00:00")
    text = out.getvalue()
    assert "supersecretvalue" not in text and PROVIDER_KEY not in text and "abc.def-ghi" not in text
    assert "invitationsecret" not in text
    assert "sm_[redacted]" in line["message"] and "sk-[redacted]" in line["message"]
    assert "smi_[redacted]" in line["message"]


def test_the_format_follows_the_setting_and_the_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert logs.wants_json("auto", io.StringIO()) and not logs.wants_json("auto", Tty())
    assert logs.wants_json("json", Tty()) and not logs.wants_json("text", io.StringIO())


async def test_a_request_is_logged_with_its_ids_and_neither_key_appears(api, tenant):
    with captured() as out:
        resp = await api.put(
            "/api/providers/openai/key",
            json={"api_key": PROVIDER_KEY},
            headers={**tenant.headers, "X-Request-ID": "console-42"},
        )
        bad_id = await api.get("/api/projects", headers={**tenant.headers, "X-Request-ID": "not ok\u0000"})
        logging.getLogger("specmill.test").info("a careless line: %s %s", tenant.api_key, PROVIDER_KEY)
    assert resp.status_code in (200, 204), resp.text
    assert resp.headers["x-request-id"] == "console-42"
    assert bad_id.headers["x-request-id"] != "not ok" and len(bad_id.headers["x-request-id"]) == 32
    access = [line for line in lines(out) if line["logger"] == "specmill.access"]
    mine = next(line for line in access if line["request_id"] == "console-42")
    assert mine["tenant_id"] == str(tenant.tenant_id) and mine["status"] == resp.status_code
    assert mine["route"] == "/api/providers/{provider}/key" and mine["method"] == "PUT"
    text = out.getvalue()
    assert tenant.api_key not in text and PROVIDER_KEY not in text


async def test_an_activitys_lines_carry_its_workflow_and_tenant(api, tenant):
    with captured() as out:
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
    [line] = [line for line in lines(out) if line.get("generation_id") == gid]
    assert line["workflow_id"] == f"generation-{gid}" and line["tenant_id"] == str(tenant.tenant_id)
    assert line["activity"] and line["attempt"] == 1 and line["tokens_out"] >= 0
