"""`make eval` and the product share one generation path: asked the same job, they ask the model the same.

The product's side is POST /api/generate through the gateway, the generation workflow and its
activities on the workers; the eval's side is codegen.evaluate.solve in this process. Both talk to
`openai_api`, whose server here is tests/coder_fake.py (OpenAI's wire protocol, answering from a
script): it records every request body, so the two runs' requests (messages, token budget,
temperature, seed, in order) are compared whole. Retrieval: the tenant's knowledge base holds one
snippet, and the eval's retriever answers with the same snippet.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from codegen import evaluate as ev
from codegen.manager import ModelManager
from sandbox import SandboxConfig
from tests.conftest import wait_for
from tests.techniques import HIERARCHICAL, RETRIEVAL

pytestmark = pytest.mark.slow

NAME = "scaled_sum"
VALUES = {
    "function_name": NAME,
    "description": "Sum a list of integers, then multiply by a factor.",
    "signature": "def scaled_sum(xs: list[int], k: int) -> int",
    "tests": ["assert scaled_sum([1, 2], 3) == 9"],
}
CODE = "def scaled_sum(xs, k):\n    return sum(xs) * k\n"
PLAN = {
    "items": [
        {"kind": "function", "name": "total", "signature": "def total(xs: list[int]) -> int", "docstring": "Sum."},
        {"kind": "function", "name": NAME, "signature": VALUES["signature"], "docstring": "Scaled sum."},
    ]
}
SNIPPET = "def running_total(values):\n    out = 0\n    for v in values:\n        out += v\n    return out\n"


class _OneSnippet:
    """The eval's retriever, holding what the tenant's knowledge base holds."""

    def __init__(self, snippet_id: str, content: str) -> None:
        self.hit = (snippet_id, content)
        self.queries: list[tuple[str, int]] = []

    def search(self, query: str, top_k: int) -> list[tuple[str, str]]:
        self.queries.append((query, top_k))
        return [self.hit]


async def _product(api, tenant, coder, techniques: list[str]) -> tuple[list[dict], dict]:
    mark = len(coder.requests)
    body = {
        "template": {"name": "python-function"},
        "values": VALUES,
        "model": "openai_api",
        "techniques": techniques,
        "max_new_tokens": 96,
    }
    resp = await api.post("/api/generate", json=body, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return coder.requests[mark:], resp.json()


async def _eval(stack, coder, techniques: list[str], retriever=None) -> tuple[list[dict], dict]:
    problem = ev.Problem("path/1", "test", dict(VALUES), "", list(VALUES["tests"]))
    cfg = ev.EvalConfig(
        model="openai_api",
        techniques=techniques,
        max_new_tokens=96,
        sandbox=SandboxConfig.from_settings(stack.settings),
    )
    backend = ModelManager(stack.settings).backend("openai_api")
    mark = len(coder.requests)
    record = await asyncio.to_thread(ev.solve, problem, backend, cfg, retriever)
    return coder.requests[mark:], record


@pytest.mark.parametrize("techniques", [[], [HIERARCHICAL]], ids=["baseline", "hierarchical"])
async def test_the_eval_asks_the_model_what_the_product_asks(api, tenant, coder, stack, techniques):
    coder.script(NAME, first=CODE)
    coder.plans[NAME] = json.dumps(PLAN)
    product, generated = await _product(api, tenant, coder, techniques)
    evaluated, record = await _eval(stack, coder, techniques)
    assert generated["status"] == "completed", generated
    assert len(product) == (1 if not techniques else 1 + len(PLAN["items"]))
    assert evaluated == product
    assert record["code"] == generated["files"][0]["content"] and record["parses"] is generated["parses"] is True
    if not techniques:  # the scripted answer is right; the plan's bodies are answered by the fake's default
        assert record["status"] == "passed" and record["passed"] is True, record


async def test_retrieval_augmentation_takes_the_same_steps(api, tenant, coder, stack):
    coder.script(NAME, first=CODE)
    resp = await api.post("/api/snippets", json={"language": "python", "content": SNIPPET}, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    snippet = resp.json()

    async def indexed():
        found = await api.post("/api/similar", json={"query": "running total"}, headers=tenant.headers)
        return [h for h in found.json()["items"] if h["id"] == snippet["id"]]

    await wait_for(indexed, timeout=30)
    product, generated = await _product(api, tenant, coder, [RETRIEVAL])
    retriever = _OneSnippet(snippet["id"], SNIPPET)
    evaluated, record = await _eval(stack, coder, [RETRIEVAL], retriever)
    assert generated["provenance"]["retrieved_snippets"] == [snippet["id"]]
    assert record["references"] == [snippet["id"]]
    assert len(product) == 1  # the re-query with the draft found nothing new: no second round
    assert SNIPPET.strip() in product[0]["messages"][-1]["content"]
    assert evaluated == product
    assert [q for q, _ in retriever.queries] == [
        "\n".join([VALUES["description"], VALUES["signature"]]),  # the spec's query
        CODE.strip("\n"),  # RepoCoder: then the first draft
    ]
    catalog = {t["name"]: t for t in (await api.get("/api/techniques", headers=tenant.headers)).json()["items"]}
    shown = catalog[RETRIEVAL]["parameters"]
    assert {k for _, k in retriever.queries} == {shown["top_k"]["default"]} == {3}  # what runs is what is shown
    assert shown["budget_tokens"]["default"] == 512 and shown["requery"]["default"] is True
    assert "budget_chars" not in shown
