"""multi_head_attention through the API: POST /api/generate on the local engine (the stack's tiny Llama)
returns, for the kept candidate, each line's reliance on each labelled part of the prompt; the stored
generation keeps it; models that cannot show their attention are a 422 that says why."""

from __future__ import annotations

from tests.techniques import ATTENTION, HIERARCHICAL

FN = {"name": "python-function"}
VALUES = {
    "function_name": "add",
    "description": "Add two integers.",
    "signature": "def add(a: int, b: int) -> int",
    "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"],
}


async def test_the_kept_candidate_carries_its_lines_reliance_on_the_prompt(api, tenant):
    resp = await api.post(
        "/api/generate",
        json={"template": FN, "values": VALUES, "max_new_tokens": 24, "techniques": [ATTENTION]},
        headers=tenant.headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    [kept] = [c for c in body["candidates"] if c["reliance"] is not None]
    assert kept["code"] == body["files"][0]["content"]
    reliance = kept["reliance"]
    assert reliance["method"] == "exact" and reliance["measure"] == "model reliance (exact, leave-one-out)"
    labels = [s["label"] for s in reliance["spans"]]
    assert labels == ["description", "signature", "test:1", "test:2"]
    assert reliance["forward_passes"] == 1 + len(labels)  # the whole prompt, then one pass per span removed
    code_lines = kept["code"].split("\n")
    for line in reliance["lines"]:
        assert line["text"] == code_lines[line["line"] - 1]
        shares = [s["share"] for s in line["spans"]]
        assert all(s["label"] in labels for s in line["spans"]) and shares == sorted(shares, reverse=True)
        assert len(shares) <= 3 and sum(shares) <= 1.001  # the top three parts of shares that sum to 1
    assert body["provenance"]["techniques"][ATTENTION] == {"candidate": 1, "method": "exact"}
    stored = (await api.get(f"/api/generations/{body['id']}", headers=tenant.headers)).json()
    assert [c["reliance"] for c in stored["result"]["candidates"]] == [c["reliance"] for c in body["candidates"]]


async def test_a_model_without_attention_to_read_or_the_unoffered_estimate_is_422(api, tenant):
    for extra, needle in (
        ({"model": "anthropic_api"}, f"{ATTENTION} cannot run on anthropic_api"),
        ({"options": {ATTENTION: {"provenance": "estimate"}}}, "the estimate is not offered"),
        (
            {"values": {**VALUES, "tests": [f"assert add({i}, 0) == {i}" for i in range(30)]}},
            "over the limit of 24",
        ),
    ):
        resp = await api.post(
            "/api/generate",
            json={"template": FN, "values": VALUES, "techniques": [ATTENTION], **extra},
            headers=tenant.headers,
        )
        assert resp.status_code == 422, resp.text
        assert needle in json_detail(resp), json_detail(resp)


def json_detail(resp) -> str:
    detail = resp.json()["detail"]
    return detail if isinstance(detail, str) else str(detail)


async def test_a_projects_artifact_carries_the_reliance_of_its_code(api, tenant):
    from tests.test_pipeline import _finished, _instance, _project

    settings = {"model": "local_llama", "debug_rounds": 0, "max_new_tokens": 16, "techniques": [ATTENTION]}
    project = await _project(api, tenant, settings)
    pid = project["id"]
    await _instance(api, tenant, pid, "add", ["assert add(1, 2) == 3"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _finished(api, tenant, pid))["state"] == "failed"  # the tiny random model never passes
    [artifact] = (await api.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"]
    reliance = artifact["reliance"]
    assert [s["label"] for s in reliance["spans"]] == ["description", "test:1"]
    assert reliance["measure"] == "model reliance (exact, leave-one-out)"
    assert all(line["text"] == artifact["content"].split("\n")[line["line"] - 1] for line in reliance["lines"])


def test_under_hierarchical_generation_the_plan_and_the_item_count_toward_the_limit():
    """Each body's prompt holds the spec (named), the plan and the item asked for; no failure."""
    from models.builtin_templates import PYTHON_FUNCTION
    from models.spec_view import spec_view
    from models.techniques import REGISTRY
    from models.techniques.multi_head_attention import MAX_EXACT_SPANS

    attention, hierarchical = REGISTRY[ATTENTION], REGISTRY[HIERARCHICAL]
    settings = attention.settings({})
    tests = [f"assert add({i}, 0) == {i}" for i in range(MAX_EXACT_SPANS - 4)]
    view = spec_view(PYTHON_FUNCTION, {**VALUES, "tests": tests})
    assert attention.refuses(settings, view, [], {}) is None  # description, signature, the tests, a failure
    refusal = attention.refuses(settings, view, [hierarchical], {})
    assert refusal is not None and f"{MAX_EXACT_SPANS + 1} parts, over the limit of {MAX_EXACT_SPANS}" in refusal
