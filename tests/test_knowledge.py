"""Knowledge base: snippets, project knowledge, similarity search over real MiniLM embeddings in a
real qdrant-client local store, indexing through the knowledge worker on Temporal, tenant isolation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from urllib.parse import quote

import numpy as np
import pytest

from infra import embedded
from knowledge import service
from knowledge.runtime import get_runtime
from knowledge.vectors import Point, VectorStore
from models.knowledge import (
    IndexItem,
    IndexRequest,
    IndexWorkflowInput,
    ReindexInput,
    ReindexResult,
    index_workflow_id,
)
from tests.conftest import wait_for

COLLECTION = "kb_minilm"
RESULT_FIELDS = {"id", "score", "kind", "language", "description", "content", "tags"}

# Distinct snippets, each with a paraphrased query that shares (almost) no words with it.
CORPUS = {
    "factorial": dict(
        language="python",
        tags=["math"],
        description="Compute the factorial of a non-negative integer recursively",
        content="def factorial(n):\n    return 1 if n <= 1 else n * factorial(n - 1)\n",
    ),
    "csv": dict(
        language="python",
        tags=["io", "files"],
        description="Read a CSV file and return its rows as dictionaries",
        content="import csv\n\ndef read_rows(path):\n    with open(path, newline='') as f:\n"
        "        return list(csv.DictReader(f))\n",
    ),
    "debounce": dict(
        language="javascript",
        tags=["ui"],
        description="Debounce a function so that it only fires after calls stop for a while",
        content="function debounce(fn, ms) {\n  let t;\n  return (...args) => {\n    clearTimeout(t);\n"
        "    t = setTimeout(() => fn(...args), ms);\n  };\n}\n",
    ),
    "orders": dict(
        language="sql",
        tags=["reporting"],
        description="Number of orders placed by every customer",
        content="SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY customer_id ORDER BY n DESC;\n",
    ),
    "bigfiles": dict(
        language="bash",
        tags=["ops", "files"],
        description="Find files larger than 100 megabytes under a directory",
        content='find "$1" -type f -size +100M -exec ls -lh {} \\;\n',
    ),
}
PARAPHRASES = {
    "factorial": "product of all positive integers up to a given value",
    "csv": "parse comma separated values from disk into a list of records",
    "debounce": "wait until the user stops typing before invoking the callback",
    "orders": "how many purchases has each client made",
    "bigfiles": "search the disk for huge space-hogging items",
}


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture
async def rt(api, stack):
    """The process's knowledge runtime (shared by the gateway and the in-process knowledge worker)."""
    runtime = get_runtime(stack.settings)
    await runtime.store.ensure_collection("minilm", runtime.embedder("minilm").dimension)
    return runtime


async def _snippet(api, tenant, **body) -> dict:
    resp = await api.post("/api/snippets", json=body, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _project(api, tenant, name="p") -> dict:
    resp = await api.post("/api/projects", json={"name": name}, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _search(api, tenant, query, **extra) -> list[dict]:
    resp = await api.post("/api/similar", json={"query": query, **extra}, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


async def _wait_count(rt, tenant, n, timeout=5.0):
    async def reached():
        return await rt.store.count(COLLECTION, tenant.tenant_id) == n

    await wait_for(reached, timeout)


async def _index_idle(temporal, tenant_id, timeout: float = 10.0) -> None:
    """The tenant's index workflow has nothing left to do: every request sent to it is taken (its
    `pending` query, which sees every signal already in its history, is 0) and no index activity is
    scheduled or running (none pending in its description)."""
    handle = temporal.get_workflow_handle(index_workflow_id(tenant_id))

    async def idle():
        if await handle.query("pending", result_type=int):
            return False
        return not (await handle.describe()).raw_description.pending_activities

    await wait_for(idle, timeout)


async def _enqueued(temporal, tenant_id) -> int:
    """How many index requests (`enqueue` signals) the tenant's index workflow has received."""
    history = await temporal.get_workflow_handle(index_workflow_id(tenant_id)).fetch_history()
    return sum(
        1
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
        and e.workflow_execution_signaled_event_attributes.signal_name == "enqueue"
    )


def _utc(stamp: str) -> datetime:
    """An API timestamp as a naive UTC datetime (as PostgreSQL's `now() at time zone 'utc'`)."""
    parsed = datetime.fromisoformat(stamp)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


async def _point_ids(rt, tenant_id) -> set[str]:
    return {str(i) for i in await rt.store.point_ids(COLLECTION, tenant_id)}


async def _corpus(api, rt, tenant) -> dict[str, dict]:
    made = {name: await _snippet(api, tenant, **body) for name, body in CORPUS.items()}
    await _wait_count(rt, tenant, len(made), timeout=10)
    return made


async def _events(api, tenant, **params) -> list[dict]:
    resp = await api.get("/api/events", params={"limit": 100, **params}, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def _assert_json_4xx(resp, code=None):
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    if code is not None:
        assert resp.status_code == code, (resp.status_code, resp.text)
    assert "detail" in resp.json(), resp.text


# --- snippets CRUD ----------------------------------------------------------------------


async def test_snippet_crud_roundtrip(api, tenant):
    h = tenant.headers
    resp = await api.post(
        "/api/snippets",
        json={"language": "python", "content": "print('hi')", "description": "greet", "tags": ["demo", "demo", "io"]},
        headers=h,
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["X-Specmill-Index"] == "queued"
    snip = resp.json()
    assert snip["tenant_id"] == str(tenant.tenant_id) and snip["user_id"] == str(tenant.user_id)
    assert snip["tags"] == ["demo", "io"]  # duplicates dropped
    sid = snip["id"]
    assert (await api.get(f"/api/snippets/{sid}", headers=h)).json() == snip

    # a partial update changes only what it names; null clears the description
    resp = await api.put(f"/api/snippets/{sid}", json={"content": "print('hello')"}, headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {**snip, "content": "print('hello')"}
    resp = await api.put(
        f"/api/snippets/{sid}", json={"language": "ruby", "description": None, "tags": ["x"]}, headers=h
    )
    assert resp.status_code == 200, resp.text
    updated = resp.json()
    assert (updated["language"], updated["description"], updated["tags"], updated["content"]) == (
        "ruby",
        None,
        ["x"],
        "print('hello')",
    )
    assert (await api.get(f"/api/snippets/{sid}", headers=h)).json() == updated

    resp = await api.delete(f"/api/snippets/{sid}", headers=h)
    assert resp.status_code == 204 and resp.content == b""
    for method in ("GET", "PUT", "DELETE"):
        resp = await api.request(
            method, f"/api/snippets/{sid}", json={"content": "x"} if method == "PUT" else None, headers=h
        )
        _assert_json_4xx(resp, 404)
    assert (await api.get("/api/snippets", headers=h)).json()["items"] == []


async def test_snippet_list_filters_and_pagination(api, tenant, pool):
    h = tenant.headers
    # a second user of the same tenant (an editor key made by the owner)
    key = await api.post("/api/keys", json={"role": "editor"}, headers=h)
    assert key.status_code == 201, key.text
    h2 = {"X-API-Key": key.json()["api_key"]}
    a = await _snippet(api, tenant, language="python", content="def Alpha(): pass", tags=["one", "shared"])
    b = await _snippet(
        api, tenant, language="go", content="func beta() {}", description="The ALPHA helper", tags=["two"]
    )
    resp = await api.post(
        "/api/snippets", json={"language": "python", "content": "gamma = 3", "tags": ["shared"]}, headers=h2
    )
    assert resp.status_code == 201, resp.text
    c = resp.json()
    assert c["user_id"] != a["user_id"]

    async def ids(**params):
        resp = await api.get("/api/snippets", params=params, headers=h)
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()["items"]]

    assert await ids() == [a["id"], b["id"], c["id"]]
    assert await ids(language="python") == [a["id"], c["id"]]
    assert await ids(language="rust") == []
    assert await ids(tag="shared") == [a["id"], c["id"]]
    assert await ids(tag="two") == [b["id"]]
    assert await ids(tag="nope") == []
    assert await ids(user_id=c["user_id"]) == [c["id"]]
    assert await ids(user_id=a["user_id"]) == [a["id"], b["id"]]
    assert await ids(user_id=str(uuid.uuid4())) == []
    assert await ids(q="alpha") == [a["id"], b["id"]]  # content or description, case-insensitive
    assert await ids(q="GAMMA") == [c["id"]]
    assert await ids(q="alpha", language="go") == [b["id"]]
    assert await ids(q="zzz-not-there") == []
    assert await ids(q="%") == [] and await ids(q="_") == []  # literal text, not LIKE patterns

    # cursor pagination: every row once, in creation order
    more = [await _snippet(api, tenant, language="text", content=f"row {i}") for i in range(3)]
    expected = [a["id"], b["id"], c["id"]] + [m["id"] for m in more]
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/snippets", params=params, headers=h)).json()
        assert len(page["items"]) <= 2
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    # a filter and a cursor together
    first = (await api.get("/api/snippets", params={"limit": 1, "language": "python"}, headers=h)).json()
    assert [s["id"] for s in first["items"]] == [a["id"]] and first["next_cursor"]
    rest = (
        await api.get(
            "/api/snippets", params={"limit": 5, "language": "python", "cursor": first["next_cursor"]}, headers=h
        )
    ).json()
    assert [s["id"] for s in rest["items"]] == [c["id"]] and rest["next_cursor"] is None
    _assert_json_4xx(await api.get("/api/snippets", params={"cursor": "garbage"}, headers=h), 422)
    _assert_json_4xx(await api.get("/api/snippets", params={"limit": 0}, headers=h), 422)


async def test_viewer_reads_and_searches_but_cannot_write(api, tenant, rt):
    resp = await api.post("/api/keys", json={"role": "viewer"}, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    viewer = {"X-API-Key": resp.json()["api_key"]}
    snip = await _snippet(api, tenant, language="python", content="x = 1")
    assert (await api.get(f"/api/snippets/{snip['id']}", headers=viewer)).status_code == 200
    assert (await api.post("/api/similar", json={"query": "x"}, headers=viewer)).status_code == 200
    _assert_json_4xx(await api.post("/api/snippets", json={"language": "python", "content": "y"}, headers=viewer), 403)
    _assert_json_4xx(await api.put(f"/api/snippets/{snip['id']}", json={"content": "y"}, headers=viewer), 403)
    _assert_json_4xx(await api.delete(f"/api/snippets/{snip['id']}", headers=viewer), 403)
    _assert_json_4xx(await api.get("/api/snippets"), 401)
    assert (await api.get(f"/api/snippets/{snip['id']}", headers=tenant.headers)).json()["content"] == "x = 1"


# --- project knowledge CRUD -------------------------------------------------------------


async def test_knowledge_upsert_list_delete(api, tenant, pool):
    h = tenant.headers
    project = await _project(api, tenant)
    base = f"/api/knowledge/{project['id']}"
    assert (await api.get(base, headers=h)).json() == {"items": [], "next_cursor": None}

    resp = await api.post(base, json={"key": "stack", "value": {"db": "postgres", "queue": ["temporal"]}}, headers=h)
    assert resp.status_code == 201, resp.text
    first = resp.json()
    assert first["project_id"] == project["id"] and first["tenant_id"] == str(tenant.tenant_id)
    assert first["value"] == {"db": "postgres", "queue": ["temporal"]}
    assert first["created_at"] == first["updated_at"]

    async def clock_past_first():  # so the next write's now() is later than the first one's
        return await pool.fetchval("select now() at time zone 'utc'") > _utc(first["updated_at"])

    await wait_for(clock_past_first, timeout=5, interval=0.001)
    resp = await api.post(base, json={"key": "stack", "value": {"db": "sqlite"}}, headers=h)
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second["id"] == first["id"] and second["value"] == {"db": "sqlite"}
    assert second["created_at"] == first["created_at"]
    assert _utc(second["updated_at"]) > _utc(first["updated_at"])

    # other JSON values: scalars, lists, strings
    for key, value in [("n", 3), ("names", ["a", "b"]), ("motto", "ship it"), ("flag", False)]:
        resp = await api.post(base, json={"key": key, "value": value}, headers=h)
        assert resp.status_code == 201, resp.text
        assert resp.json()["value"] == value

    page = (await api.get(base, headers=h)).json()
    assert [e["key"] for e in page["items"]] == ["stack", "n", "names", "motto", "flag"]
    assert page["items"][0] == second
    only = (await api.get(base, params={"key": "names"}, headers=h)).json()["items"]
    assert [e["value"] for e in only] == [["a", "b"]]
    # pagination
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        p = (await api.get(base, params=params, headers=h)).json()
        seen += [e["key"] for e in p["items"]]
        cursor = p["next_cursor"]
        if cursor is None:
            break
    assert seen == ["stack", "n", "names", "motto", "flag"]

    resp = await api.delete(f"{base}/n", headers=h)
    assert resp.status_code == 204, resp.text
    _assert_json_4xx(await api.delete(f"{base}/n", headers=h), 404)
    assert [e["key"] for e in (await api.get(base, headers=h)).json()["items"]] == ["stack", "names", "motto", "flag"]

    # an unknown project: 404 for every call
    ghost = f"/api/knowledge/{uuid.uuid4()}"
    _assert_json_4xx(await api.get(ghost, headers=h), 404)
    _assert_json_4xx(await api.post(ghost, json={"key": "k", "value": 1}, headers=h), 404)
    _assert_json_4xx(await api.delete(f"{ghost}/stack", headers=h), 404)


async def test_knowledge_keys_with_reserved_characters_round_trip(api, tenant):
    """Any key the POST accepts can be read by ?key= and deleted through the path."""
    h = tenant.headers
    project = await _project(api, tenant)
    base = f"/api/knowledge/{project['id']}"
    for key in ["docs/api", "a b?c#d", "ünï"]:
        resp = await api.post(base, json={"key": key, "value": 1}, headers=h)
        assert resp.status_code == 201, resp.text
        assert [e["key"] for e in (await api.get(base, params={"key": key}, headers=h)).json()["items"]] == [key]
        resp = await api.delete(f"{base}/{quote(key, safe='')}", headers=h)
        assert resp.status_code == 204, (key, resp.status_code, resp.text)
    assert (await api.get(base, headers=h)).json()["items"] == []


async def test_knowledge_null_value_is_a_json_value(api, tenant):
    h = tenant.headers
    project = await _project(api, tenant)
    resp = await api.post(f"/api/knowledge/{project['id']}", json={"key": "nothing", "value": None}, headers=h)
    assert resp.status_code == 201, resp.text
    assert resp.json()["value"] is None
    items = (await api.get(f"/api/knowledge/{project['id']}", headers=h)).json()["items"]
    assert [(e["key"], e["value"]) for e in items] == [("nothing", None)]


async def test_embedders_endpoint(api, tenant):
    resp = await api.get("/api/knowledge/embedders", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["next_cursor"] is None
    by_name = {e["name"]: e for e in resp.json()["items"]}
    minilm = by_name["minilm"]
    assert minilm["loaded"] is True and minilm["default"] is True and minilm["error"] is None
    assert minilm["dimension"] == 384 and minilm["collection"] == COLLECTION
    assert "codebert" not in by_name  # not configured in this session
    _assert_json_4xx(await api.get("/api/knowledge/embedders"), 401)


# --- similarity search ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def test_paraphrased_queries_find_the_right_snippet(api, tenant, rt, mode):
    made = await _corpus(api, rt, tenant)
    for name, query in PARAPHRASES.items():
        results = await _search(api, tenant, query, mode=mode, top_k=5)
        assert results and results[0]["id"] == made[name]["id"], (mode, name, [r["description"] for r in results])
        top = results[0]
        assert set(top) == RESULT_FIELDS
        assert (top["kind"], top["language"], top["description"], top["content"], top["tags"]) == (
            "snippet",
            CORPUS[name]["language"],
            CORPUS[name]["description"],
            CORPUS[name]["content"],
            CORPUS[name]["tags"],
        )
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        assert len({r["id"] for r in results}) == len(results) == 5  # top_k honoured, no duplicates
    resp = await api.post("/api/similar", json={"query": "factorial", "mode": mode, "top_k": 2}, headers=tenant.headers)
    body = resp.json()
    assert body["mode"] == mode and body["embedder"] == "minilm" and len(body["items"]) == 2


async def test_similar_defaults_and_filters(api, tenant, rt):
    made = await _corpus(api, rt, tenant)
    js_fact = await _snippet(
        api,
        tenant,
        language="javascript",
        tags=["math", "recursion"],
        description="Factorial in JavaScript",
        content="const fact = n => (n <= 1 ? 1 : n * fact(n - 1));",
    )
    await _wait_count(rt, tenant, len(made) + 1)
    assert len(await _search(api, tenant, "anything at all")) == 5  # default top_k

    for mode in ("dense", "hybrid"):
        query = PARAPHRASES["factorial"]
        py = await _search(api, tenant, query, mode=mode, language="python", top_k=50)
        assert py[0]["id"] == made["factorial"]["id"]
        assert {r["language"] for r in py} == {"python"} and js_fact["id"] not in {r["id"] for r in py}
        js = await _search(api, tenant, query, mode=mode, language="javascript", top_k=50)
        assert js[0]["id"] == js_fact["id"] and {r["language"] for r in js} == {"javascript"}
        assert {r["id"] for r in js} == {js_fact["id"], made["debounce"]["id"]}
        assert await _search(api, tenant, query, mode=mode, language="rust") == []

        files = await _search(api, tenant, query, mode=mode, tags=["files"], top_k=50)
        assert {r["id"] for r in files} == {made["csv"]["id"], made["bigfiles"]["id"]}
        either = await _search(api, tenant, query, mode=mode, tags=["recursion", "reporting"], top_k=50)
        assert {r["id"] for r in either} == {js_fact["id"], made["orders"]["id"]}
        both = await _search(api, tenant, query, mode=mode, tags=["math"], language="python", top_k=50)
        assert [r["id"] for r in both] == [made["factorial"]["id"]]


async def test_similar_edge_queries(api, tenant, rt):
    """Queries with no lexical terms (stop words, one letter, symbols) still answer in hybrid mode."""
    made = await _corpus(api, rt, tenant)
    for query in ["the", "a", "?!", "x", "的"]:
        for mode in ("dense", "hybrid"):
            results = await _search(api, tenant, query, mode=mode, top_k=3)
            assert len(results) == 3 and {r["id"] for r in results} <= {s["id"] for s in made.values()}


async def test_project_knowledge_in_similar(api, tenant, rt):
    h = tenant.headers
    p1, p2 = await _project(api, tenant, "p1"), await _project(api, tenant, "p2")
    made = await _corpus(api, rt, tenant)
    e1 = (
        await api.post(
            f"/api/knowledge/{p1['id']}",
            json={"key": "deployment", "value": {"target": "kubernetes", "tool": "helm chart", "replicas": 3}},
            headers=h,
        )
    ).json()
    e2 = (
        await api.post(
            f"/api/knowledge/{p2['id']}",
            json={"key": "deployment", "value": {"target": "kubernetes", "tool": "helm chart", "replicas": 5}},
            headers=h,
        )
    ).json()
    await _wait_count(rt, tenant, len(made) + 2)

    query = "roll out the service to a kubernetes cluster with helm"
    for mode in ("dense", "hybrid"):
        # without project_id: snippets only
        plain = await _search(api, tenant, query, mode=mode, top_k=50)
        assert {r["kind"] for r in plain} == {"snippet"} and len(plain) == len(made)
        # with project_id: that project's entries can appear, another project's never do
        results = await _search(api, tenant, query, mode=mode, top_k=50, project_id=p1["id"])
        ids = [r["id"] for r in results]
        assert ids[0] == e1["id"] and e2["id"] not in ids
        hit = results[0]
        assert set(hit) == RESULT_FIELDS
        assert (hit["kind"], hit["language"], hit["description"], hit["tags"]) == (
            "knowledge",
            "json",
            "deployment",
            [],
        )
        assert "kubernetes" in hit["content"] and "3" in hit["content"]
        other = await _search(api, tenant, query, mode=mode, top_k=50, project_id=p2["id"])
        assert e2["id"] in {r["id"] for r in other} and e1["id"] not in {r["id"] for r in other}
        # a language filter excludes knowledge entries (they are "json")
        py = await _search(api, tenant, query, mode=mode, top_k=50, project_id=p1["id"], language="python")
        assert {r["kind"] for r in py} == {"snippet"}

    # an entry's new value is searchable; a deleted entry leaves results and the index
    resp = await api.post(
        f"/api/knowledge/{p1['id']}",
        json={"key": "deployment", "value": {"target": "bare metal servers", "tool": "ansible playbooks"}},
        headers=h,
    )
    assert resp.status_code == 200, resp.text

    async def updated():
        results = await _search(
            api, tenant, "provision physical machines with ansible", mode="dense", project_id=p1["id"], top_k=1
        )
        return results and results[0]["id"] == e1["id"] and "ansible" in results[0]["content"]

    await wait_for(updated, timeout=5)
    assert (await api.delete(f"/api/knowledge/{p1['id']}/deployment", headers=h)).status_code == 204
    await _wait_count(rt, tenant, len(made) + 1)
    results = await _search(api, tenant, "ansible", project_id=p1["id"], top_k=50)
    assert e1["id"] not in {r["id"] for r in results}


# --- writes reach the index within 5 seconds --------------------------------------------


async def test_create_update_delete_are_reflected_within_5s(api, tenant, rt):
    h = tenant.headers
    fib = await _snippet(
        api,
        tenant,
        language="python",
        description="Fibonacci numbers",
        content="def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    )
    await _wait_count(rt, tenant, 1)

    # a create
    body = CORPUS["factorial"]
    fact = await _snippet(api, tenant, **body)

    async def found(query, sid, mode="dense"):
        results = await _search(api, tenant, query, mode=mode, top_k=1)
        return bool(results) and results[0]["id"] == sid

    await wait_for(lambda: found(PARAPHRASES["factorial"], fact["id"]), timeout=5)
    assert await found(PARAPHRASES["factorial"], fact["id"], mode="hybrid")

    # an update that changes the content: a different query now finds it, the old one no longer does
    resp = await api.put(
        f"/api/snippets/{fact['id']}",
        json={
            "description": "Send an e-mail through an SMTP server",
            "content": "import smtplib\n\ndef send(msg):\n    with smtplib.SMTP('localhost') as s:\n"
            "        s.send_message(msg)\n",
        },
        headers=h,
    )
    assert resp.status_code == 200, resp.text

    async def reindexed():  # the new meaning finds it, and the old meaning now ranks the other snippet first
        return await found("dispatch a mail message to a recipient", fact["id"]) and await found(
            PARAPHRASES["factorial"], fib["id"]
        )

    await wait_for(reindexed, timeout=5)
    assert await found("dispatch a mail message to a recipient", fact["id"], mode="hybrid")
    assert await rt.store.count(COLLECTION, tenant.tenant_id) == 2

    # a language change moves it between language filters
    resp = await api.put(f"/api/snippets/{fact['id']}", json={"language": "text"}, headers=h)
    assert resp.status_code == 200, resp.text

    async def moved():
        return [r["id"] for r in await _search(api, tenant, "mail", language="text")] == [fact["id"]]

    await wait_for(moved, timeout=5)
    assert fact["id"] not in {r["id"] for r in await _search(api, tenant, "mail", language="python", top_k=50)}

    # a delete: out of the results, and its vector gone
    exact = resp.json()["content"]
    assert (await api.delete(f"/api/snippets/{fact['id']}", headers=h)).status_code == 204
    await _wait_count(rt, tenant, 1)
    assert await _point_ids(rt, tenant.tenant_id) == {fib["id"]}
    for mode in ("dense", "hybrid"):
        assert [r["id"] for r in await _search(api, tenant, exact, mode=mode, top_k=50)] == [fib["id"]]


# --- idempotent indexing ----------------------------------------------------------------


async def test_retried_indexing_leaves_one_point_per_snippet(api, tenant, rt, pool, temporal, stack):
    made = await _corpus(api, rt, tenant)
    project = await _project(api, tenant)
    entry = (
        await api.post(f"/api/knowledge/{project['id']}", json={"key": "k", "value": {"a": 1}}, headers=tenant.headers)
    ).json()
    expected = {s["id"] for s in made.values()} | {entry["id"]}
    await _wait_count(rt, tenant, len(expected))
    items = [IndexItem(kind="snippet", id=s["id"]) for s in made.values()] + [
        IndexItem(kind="knowledge", id=entry["id"])
    ]

    # the same activity body, again and again, and concurrently
    for _ in range(3):
        result = await service.index_items(pool, rt, tenant.tenant_id, items)
        assert (result.upserted, result.deleted) == (len(expected), 0)
    await asyncio.gather(*[service.index_items(pool, rt, tenant.tenant_id, items + items) for _ in range(3)])
    assert await rt.store.count(COLLECTION, tenant.tenant_id) == len(expected)
    assert await _point_ids(rt, tenant.tenant_id) == expected

    # the same ids through the index workflow, repeatedly
    for _ in range(3):
        await temporal.start_workflow(
            "KnowledgeIndexWorkflow",
            IndexWorkflowInput(tenant_id=tenant.tenant_id, batch_size=2),
            id=f"knowledge-index-{tenant.tenant_id}",
            task_queue=stack.settings.queue("knowledge"),
            start_signal="enqueue",
            start_signal_args=[IndexRequest(items=items)],
        )
    await _index_idle(temporal, tenant.tenant_id)  # every batch taken, and its activity finished
    assert await rt.store.count(COLLECTION, tenant.tenant_id) == len(expected)
    assert await _point_ids(rt, tenant.tenant_id) == expected
    # a search still returns each snippet once
    results = await _search(api, tenant, "code", top_k=50)
    assert sorted(r["id"] for r in results) == sorted(s["id"] for s in made.values())


async def test_reindex_restores_missing_and_prunes_stray_points(api, tenant, other_tenant, rt, temporal, stack):
    made = await _corpus(api, rt, tenant)
    project = await _project(api, tenant)
    entry = (
        await api.post(f"/api/knowledge/{project['id']}", json={"key": "k", "value": "v"}, headers=tenant.headers)
    ).json()
    theirs = await _snippet(api, other_tenant, language="python", content="print('other tenant')")
    expected = {s["id"] for s in made.values()} | {entry["id"]}
    await _wait_count(rt, tenant, len(expected))
    await _wait_count(rt, other_tenant, 1)

    # by hand: lose one point, add a stray one for the tenant
    lost = made["csv"]["id"]
    await rt.store.delete(COLLECTION, [uuid.UUID(lost)], tenant_id=tenant.tenant_id)
    stray = uuid.uuid4()
    vec = np.asarray(rt.embedder("minilm").encode(["stray vector"])[0])
    await rt.store.upsert(
        COLLECTION,
        [
            Point(
                stray,
                vec,
                "stray vector",
                {"tenant_id": str(tenant.tenant_id), "kind": "snippet", "language": "python", "tags": []},
            )
        ],
    )
    ids = await _point_ids(rt, tenant.tenant_id)
    assert lost not in ids and str(stray) in ids

    result = await temporal.execute_workflow(
        "KnowledgeReindexWorkflow",
        ReindexInput(tenant_id=tenant.tenant_id),
        id=f"reindex-{uuid.uuid4()}",
        task_queue=stack.settings.queue("knowledge"),
        result_type=ReindexResult,
    )
    assert (result.indexed, result.removed) == (len(expected), 1)
    assert await _point_ids(rt, tenant.tenant_id) == expected
    assert await rt.store.count(COLLECTION, tenant.tenant_id) == len(expected)
    assert await _point_ids(rt, other_tenant.tenant_id) == {theirs["id"]}  # another tenant untouched
    results = await _search(api, tenant, PARAPHRASES["csv"], top_k=1)
    assert results[0]["id"] == lost


# --- tenant isolation -------------------------------------------------------------------


async def test_cross_tenant_matrix(api, tenant, other_tenant, rt, temporal):
    a, b = tenant.headers, other_tenant.headers
    mine = await _corpus(api, rt, tenant)
    project = await _project(api, tenant)
    entry = (
        await api.post(f"/api/knowledge/{project['id']}", json={"key": "secret", "value": {"plan": "x"}}, headers=a)
    ).json()
    theirs = await _snippet(api, other_tenant, language="python", content="print('b')")
    b_project = await _project(api, other_tenant)
    await _wait_count(rt, tenant, len(mine) + 1)
    await _wait_count(rt, other_tenant, 1)
    before_snips = {s["id"]: (await api.get(f"/api/snippets/{s['id']}", headers=a)).json() for s in mine.values()}
    before_entries = (await api.get(f"/api/knowledge/{project['id']}", headers=a)).json()
    b_events_before = await _events(api, other_tenant, type="knowledge.updated")
    tenants = (tenant.tenant_id, other_tenant.tenant_id)
    enqueued_before = [await _enqueued(temporal, tid) for tid in tenants]

    a_ids = {s["id"] for s in mine.values()} | {entry["id"]}
    for s in mine.values():
        for mode in ("dense", "hybrid"):
            for query in (s["content"], s["description"]):
                results = await _search(api, other_tenant, query, mode=mode, top_k=50)
                assert [r["id"] for r in results] == [theirs["id"]], (mode, query)
    # searching with B's own project: still nothing of A's
    results = await _search(api, other_tenant, "secret plan", top_k=50, project_id=b_project["id"])
    assert not a_ids & {r["id"] for r in results}

    sid = mine["factorial"]["id"]
    kbase = f"/api/knowledge/{project['id']}"
    attempts = [
        ("GET", f"/api/snippets/{sid}", None),
        ("PUT", f"/api/snippets/{sid}", {"content": "stolen"}),
        ("DELETE", f"/api/snippets/{sid}", None),
        ("GET", kbase, None),
        ("POST", kbase, {"key": "secret", "value": "stolen"}),
        ("POST", kbase, {"key": "new", "value": "planted"}),
        ("DELETE", f"{kbase}/secret", None),
        ("POST", "/api/similar", {"query": "plan", "project_id": project["id"]}),
    ]
    for method, path, body in attempts:
        resp = await api.request(method, path, json=body, headers=b)
        _assert_json_4xx(resp, 404)

    # nothing of A's changed
    for sid, before in before_snips.items():
        assert (await api.get(f"/api/snippets/{sid}", headers=a)).json() == before
    assert (await api.get(kbase, headers=a)).json() == before_entries
    # nothing was queued for indexing, for either tenant (an index request is sent before the
    # response), and what had been queued before is done: the index is as it will stay
    assert [await _enqueued(temporal, tid) for tid in tenants] == enqueued_before
    for tid in tenants:
        await _index_idle(temporal, tid)
    assert await _point_ids(rt, tenant.tenant_id) == a_ids
    assert [s["id"] for s in (await api.get("/api/snippets", headers=b)).json()["items"]] == [theirs["id"]]
    assert await _events(api, other_tenant, type="knowledge.updated") == b_events_before
    # and the list filters never cross over either
    assert (await api.get("/api/snippets", params={"user_id": str(tenant.user_id)}, headers=b)).json()["items"] == []


async def test_indexing_for_one_tenant_never_touches_another_tenants_points(api, tenant, other_tenant, rt, pool):
    """Indexing is state-based (absent rows are deleted from the index); another tenant's ids are
    absent for this tenant, and must not take that tenant's vectors with them."""
    mine = await _snippet(api, tenant, **CORPUS["csv"])
    await _wait_count(rt, tenant, 1)
    result = await service.index_items(pool, rt, other_tenant.tenant_id, [IndexItem(kind="snippet", id=mine["id"])])
    assert result.upserted == 0
    assert await _point_ids(rt, tenant.tenant_id) == {mine["id"]}
    assert (await _search(api, tenant, PARAPHRASES["csv"], top_k=1))[0]["id"] == mine["id"]


# --- events -----------------------------------------------------------------------------


async def test_knowledge_updated_events(api, tenant):
    h = tenant.headers
    snip = await _snippet(api, tenant, language="python", content="a = 1")
    assert (await api.put(f"/api/snippets/{snip['id']}", json={"content": "a = 2"}, headers=h)).status_code == 200
    assert (await api.delete(f"/api/snippets/{snip['id']}", headers=h)).status_code == 204
    project = await _project(api, tenant)
    base = f"/api/knowledge/{project['id']}"
    e1 = (await api.post(base, json={"key": "k", "value": 1}, headers=h)).json()
    assert (await api.post(base, json={"key": "k", "value": 2}, headers=h)).status_code == 200
    assert (await api.delete(f"{base}/k", headers=h)).status_code == 204

    events = await _events(api, tenant, type="knowledge.updated")
    assert {e["schema_name"] for e in events} == {"knowledge_update_event"}
    got = [(e["payload"]["kind"], e["payload"]["action"], e["subject_id"], e["payload"]["id"]) for e in events]
    assert got == [
        ("snippet", "created", snip["id"], snip["id"]),
        ("snippet", "updated", snip["id"], snip["id"]),
        ("snippet", "deleted", snip["id"], snip["id"]),
        ("knowledge", "created", e1["id"], e1["id"]),
        ("knowledge", "updated", e1["id"], e1["id"]),
        ("knowledge", "deleted", e1["id"], e1["id"]),
    ]
    for e in events:
        assert e["payload"]["tenant_id"] == str(tenant.tenant_id)
        assert e["payload"]["user_id"] == str(tenant.user_id)
    assert events[0]["payload"]["language"] == "python"
    assert {(e["payload"]["project_id"], e["payload"]["key"]) for e in events[3:]} == {(project["id"], "k")}
    # failed writes emit nothing
    _assert_json_4xx(await api.post("/api/snippets", json={"language": "python", "content": " "}, headers=h), 422)
    _assert_json_4xx(await api.delete(f"{base}/missing", headers=h), 404)
    assert len(await _events(api, tenant, type="knowledge.updated")) == 6


# --- bad input --------------------------------------------------------------------------


async def test_bad_input_is_4xx_with_detail_and_stores_nothing(api, tenant, other_tenant, rt):
    h = tenant.headers
    snip = await _snippet(api, tenant, language="python", content="ok = True", tags=["t"])
    project = await _project(api, tenant)
    b_project = await _project(api, other_tenant)
    sid = snip["id"]
    bad_posts = [
        {"language": "python", "content": ""},
        {"language": "python", "content": "   \n\t "},
        {"language": "python"},
        {"content": "x = 1"},
        {"language": "klingon", "content": "x = 1"},
        {"language": "Python", "content": "x = 1"},
        {"language": "python", "content": "x = 1", "owner": "me"},
        {"language": "python", "content": "x = 1", "tags": ["-bad"]},
        {"language": "python", "content": "x = 1", "tags": "notalist"},
        {"language": "python", "content": "x = 1", "tenant_id": str(other_tenant.tenant_id)},
    ]
    for body in bad_posts:
        _assert_json_4xx(await api.post("/api/snippets", json=body, headers=h), 422)
    for body in [
        {"content": ""},
        {"content": "  "},
        {"content": None},
        {"language": None},
        {"language": "klingon"},
        {"colour": "red"},
    ]:
        _assert_json_4xx(await api.put(f"/api/snippets/{sid}", json=body, headers=h), 422)
    _assert_json_4xx(await api.get("/api/snippets", params={"language": "klingon"}, headers=h), 422)
    _assert_json_4xx(await api.get("/api/snippets", params={"user_id": "nope"}, headers=h), 422)
    for method in ("GET", "PUT", "DELETE"):
        _assert_json_4xx(await api.request(method, "/api/snippets/not-a-uuid", json={"content": "x"}, headers=h), 422)
        _assert_json_4xx(
            await api.request(method, f"/api/snippets/{uuid.uuid4()}", json={"content": "x"}, headers=h), 404
        )
    _assert_json_4xx(await api.get("/api/knowledge/not-a-uuid", headers=h), 422)
    _assert_json_4xx(await api.post("/api/knowledge/not-a-uuid", json={"key": "k", "value": 1}, headers=h), 422)
    kbase = f"/api/knowledge/{project['id']}"
    for body in [
        {"key": "", "value": 1},
        {"value": 1},
        {"key": "k"},
        {"key": "k", "value": 1, "extra": 2},
        {"key": "a\nb", "value": 1},
    ]:
        _assert_json_4xx(await api.post(kbase, json=body, headers=h), 422)
    _assert_json_4xx(await api.post(f"/api/knowledge/{b_project['id']}", json={"key": "k", "value": 1}, headers=h), 404)
    _assert_json_4xx(await api.get(f"/api/knowledge/{b_project['id']}", headers=h), 404)

    similar_bad = [
        ({"query": "x", "top_k": 0}, 422),
        ({"query": "x", "top_k": 51}, 422),
        ({"query": ""}, 422),
        ({"query": "   "}, 422),
        ({}, 422),
        ({"query": "x", "language": "klingon"}, 422),
        ({"query": "x", "unknown": 1}, 422),
        ({"query": "x", "mode": "sparse"}, 422),
        ({"query": "x", "project_id": "not-a-uuid"}, 422),
        ({"query": "x", "project_id": b_project["id"]}, 404),
        ({"query": "x", "project_id": str(uuid.uuid4())}, 404),
        ({"query": "x", "embedder": "word2vec"}, 422),
        ({"query": "x", "embedder": "codebert"}, 422),  # not configured here
    ]
    for body, code in similar_bad:
        _assert_json_4xx(await api.post("/api/similar", json=body, headers=h), code)
    await _wait_count(rt, tenant, 1)
    assert len(await _search(api, tenant, "x", top_k=50)) == 1
    assert len(await _search(api, tenant, "x", top_k=1)) == 1

    # nothing stored, nothing changed
    assert [s["id"] for s in (await api.get("/api/snippets", headers=h)).json()["items"]] == [sid]
    assert (await api.get(f"/api/snippets/{sid}", headers=h)).json() == snip
    assert (await api.get(kbase, headers=h)).json()["items"] == []
    assert (await api.get(f"/api/knowledge/{b_project['id']}", headers=other_tenant.headers)).json()["items"] == []


async def test_content_byte_limit(make_app, stack, new_tenant):
    tenant = await new_tenant("limit")
    h = tenant.headers
    async for client in make_app(stack.with_(snippet_max_bytes=100)):
        ok = await client.post("/api/snippets", json={"language": "text", "content": "x" * 100}, headers=h)
        assert ok.status_code == 201, ok.text
        for content in ["x" * 101, "é" * 51, "x" * 5000]:  # bytes, not characters: 51 x 'é' is 102 bytes
            _assert_json_4xx(
                await client.post("/api/snippets", json={"language": "text", "content": content}, headers=h), 422
            )
        assert (
            await client.post("/api/snippets", json={"language": "text", "content": "é" * 50}, headers=h)
        ).status_code == 201
        sid = ok.json()["id"]
        _assert_json_4xx(await client.put(f"/api/snippets/{sid}", json={"content": "y" * 101}, headers=h), 422)
        assert (await client.get(f"/api/snippets/{sid}", headers=h)).json()["content"] == "x" * 100
        items = (await client.get("/api/snippets", headers=h)).json()["items"]
        assert sorted(len(s["content"]) for s in items) == [50, 100]


# --- Qdrant unavailable -----------------------------------------------------------------


async def test_qdrant_unavailable_writes_land_search_is_503(make_app, stack, new_tenant, api):
    tenant = await new_tenant("noqdrant")
    h = tenant.headers
    settings = stack.with_(qdrant_url=f"http://127.0.0.1:{embedded.free_port()}")
    async for client in make_app(settings):
        resp = await client.post("/api/snippets", json={"language": "python", "content": "still = 'saved'"}, headers=h)
        assert resp.status_code == 201, resp.text
        sid = resp.json()["id"]
        assert (await client.get(f"/api/snippets/{sid}", headers=h)).json()["content"] == "still = 'saved'"
        assert (await api.get(f"/api/snippets/{sid}", headers=h)).status_code == 200  # it is in PostgreSQL
        resp = await client.put(f"/api/snippets/{sid}", json={"content": "still = 'updated'"}, headers=h)
        assert resp.status_code == 200, resp.text

        for mode in ("dense", "hybrid"):
            resp = await client.post("/api/similar", json={"query": "saved", "mode": mode}, headers=h)
            assert resp.status_code == 503, resp.text
            assert isinstance(resp.json()["detail"], str) and resp.json()["detail"]

        resp = await client.get("/health/knowledge", headers=h)
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["checks"]["vector_store"]["ok"] is False and "detail" in body
        assert body["checks"]["database"]["ok"] is True
        resp = await client.get("/health", headers=h)
        assert resp.status_code == 503 and resp.json()["checks"]["vector_store"]["ok"] is False
    # the healthy app still reports a healthy vector store
    resp = await api.get("/health/knowledge", headers=h)
    assert resp.json()["checks"]["vector_store"]["ok"] is True, resp.text


# --- the knowledge API as its own service behind the gateway (how `make run` serves it) ---


@pytest.fixture
async def knowledge_gateway(stack, api, make_app):
    """The knowledge service on a real socket (uvicorn in this process, sharing its runtime), and a
    gateway that forwards /api/snippets, /api/knowledge and /api/similar to it."""
    import uvicorn

    from api.app import create_app

    port = embedded.free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(stack.settings, service="knowledge"), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, timeout=30)
    try:
        async for client in make_app(stack.with_(knowledge_url=f"http://127.0.0.1:{port}")):
            yield client
    finally:
        server.should_exit = True
        await task


async def test_knowledge_through_the_gateway_proxy(knowledge_gateway, tenant, other_tenant, rt):
    gw, h = knowledge_gateway, tenant.headers
    made = {name: (await gw.post("/api/snippets", json=body, headers=h)) for name, body in CORPUS.items()}
    assert {r.status_code for r in made.values()} == {201}
    assert made["csv"].headers["X-Specmill-Index"] == "queued"
    await _wait_count(rt, tenant, len(made))
    results = (await gw.post("/api/similar", json={"query": PARAPHRASES["csv"]}, headers=h)).json()["items"]
    assert results[0]["id"] == made["csv"].json()["id"]
    listed = await gw.get("/api/snippets", params={"language": "python", "tag": "io"}, headers=h)
    assert [s["id"] for s in listed.json()["items"]] == [made["csv"].json()["id"]]
    assert (await gw.get("/api/knowledge/embedders", headers=h)).json()["items"][0]["loaded"] is True

    project = await gw.post("/api/projects", json={"name": "p"}, headers=h)  # the orchestrator, in the gateway
    base = f"/api/knowledge/{project.json()['id']}"
    for key in ["docs/api", "a b?c#d", "100%", "ünï"]:
        assert (await gw.post(base, json={"key": key, "value": key}, headers=h)).status_code == 201
    assert (await gw.post(base, json={"key": "a b", "value": "decoy"}, headers=h)).status_code == 201
    for key in ["docs/api", "a b?c#d", "100%", "ünï"]:
        got = (await gw.get(base, params={"key": key}, headers=h)).json()["items"]
        assert [(e["key"], e["value"]) for e in got] == [(key, key)]
        resp = await gw.delete(f"{base}/{quote(key, safe='')}", headers=h)
        assert resp.status_code == 204, (key, resp.status_code, resp.text)
    assert [e["key"] for e in (await gw.get(base, headers=h)).json()["items"]] == ["a b"]

    # tenant isolation and errors survive the hop
    sid = made["csv"].json()["id"]
    for method, path in [("GET", f"/api/snippets/{sid}"), ("DELETE", f"/api/snippets/{sid}"), ("GET", base)]:
        _assert_json_4xx(await gw.request(method, path, headers=other_tenant.headers), 404)
    _assert_json_4xx(await gw.post("/api/similar", json={"query": "x", "top_k": 0}, headers=h), 422)
    _assert_json_4xx(await gw.post("/api/snippets", json={"language": "python", "content": ""}, headers=h), 422)
    exact = CORPUS["csv"]["content"]
    theirs = await gw.post("/api/similar", json={"query": exact, "top_k": 50}, headers=other_tenant.headers)
    assert theirs.status_code == 200 and theirs.json()["items"] == []


async def test_the_gateway_documents_and_checks_the_knowledge_service(knowledge_gateway, tenant):
    """The routes it forwards are in its /openapi.json, and /health/knowledge is the service's own answer."""
    gw = knowledge_gateway
    paths = (await gw.get("/openapi.json")).json()["paths"]
    for path in ("/api/snippets", "/api/snippets/{snippet_id}", "/api/knowledge/{project_id}", "/api/similar"):
        assert path in paths, path
    assert {"/api/knowledge/embedders", "/api/knowledge/{project_id}/{key}", "/health/knowledge"} <= set(paths)
    resp = await gw.get("/health/knowledge", headers=tenant.headers)  # an owner: every check
    assert resp.status_code == 200, resp.text
    assert resp.json()["service"] == "knowledge"
    checks = resp.json()["checks"]
    assert checks["vector_store"]["ok"] and checks["embedders"]["loaded"] == ["minilm"]
    assert checks["workers:knowledge"]["ok"] and checks["database"]["ok"]
    assert (await gw.get("/health/knowledge")).json() == {"status": "ok"}  # anyone else: up or down


# --- the upgrade from local mode to Qdrant Edge ---------------------------------------------------


async def test_an_old_local_mode_index_is_rebuilt_from_postgresql_once(
    api, tenant, rt, temporal, stack, pool, tmp_path, caplog
):
    """A data dir with a local-mode index from before Qdrant Edge: on the knowledge worker's start every
    tenant's vectors are rebuilt from PostgreSQL (reindex workflows), the log says so, and only once."""
    from knowledge.runtime import REBUILT_MARK, pending_rebuild
    from workers.queues import _rebuilt_if_needed

    made = await _snippet(api, tenant, language="python", content="def upgraded():\n    return 'edge'\n")
    await _wait_count(rt, tenant, 1)
    await rt.store.delete(COLLECTION, [uuid.UUID(made["id"])], tenant_id=tenant.tenant_id)  # as if never in Edge
    settings = stack.settings.model_copy(update={"qdrant_path": tmp_path / "qdrant", "edge_path": tmp_path / "edge"})
    assert pending_rebuild(settings) is None  # no old index: nothing to do
    old = VectorStore.open(url=None, api_key=None, path=str(settings.qdrant_local_path))
    await old.ensure_collection("minilm", 4)
    await old.close()
    assert "local-mode index from before Qdrant Edge" in pending_rebuild(settings)

    with caplog.at_level("WARNING", logger="specmill.worker"):
        async with _rebuilt_if_needed(temporal, settings, pool):
            pass
    assert "rebuilding the vectors of" in caplog.text and (settings.edge_dir / REBUILT_MARK).exists()
    await _wait_count(rt, tenant, 1, timeout=30)  # the reindex workflow brought the point back
    assert await _point_ids(rt, tenant.tenant_id) == {made["id"]}
    assert pending_rebuild(settings) is None  # once
