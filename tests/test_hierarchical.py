"""hierarchical_generation: the plan's checks and retries, the module's assembly, and the workflow.

`ScriptedBackend` below is a test double of our own interface, `codegen.base.Backend`: it answers
from a script (and records the prompts it was given), so the planning, retry and assembly logic is
tested exactly. It stands in for no third-party service. The end-to-end test through the API runs
the real engine on the tiny random Llama, whose plans never validate.
"""

from __future__ import annotations

import ast
import json
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from codegen.base import Completion, GenerationParams, Message, ModelStatus
from codegen.hierarchical import (
    PlanError,
    assemble,
    body_messages,
    build_piece,
    item_blocks,
    make_plan,
    parse_plan,
)
from models.generation import Plan
from models.spec_view import spec_view
from models.techniques import TECHNIQUES
from models.techniques.base import JsonSchema
from tests.conftest import wait_for
from tests.techniques import ATTENTION, HIERARCHICAL, RETRIEVAL

MODULE_SCHEMA = {
    "type": "object",
    "x-specmill": {"language": "python", "path": "{module_name}.py"},
    "properties": {
        "module_name": {"type": "string", "x-specmill": {"role": "name"}},
        "description": {"type": "string", "x-specmill": {"role": "description"}},
    },
}
MODULE_VALUES = {"module_name": "shapes", "description": "Areas of shapes."}
VIEW = spec_view(MODULE_SCHEMA, MODULE_VALUES)

GOOD_PLAN = json.dumps(
    {
        "items": [
            {
                "kind": "function",
                "name": "circle_area",
                "signature": "def circle_area(r: float) -> float",
                "docstring": "Area of a circle.",
            },
            {"kind": "class", "name": "Square", "signature": "class Square", "docstring": "A square."},
        ]
    }
)


class ScriptedBackend:
    """A `codegen.base.Backend` test double: `reply(messages)` scripts each answer; prompts are recorded."""

    name = "local_llama"
    capabilities = frozenset({"chat"})

    def __init__(self, reply: Callable[[list[Message]], str]) -> None:
        self.reply, self.calls = reply, []

    def status(self) -> ModelStatus:
        return ModelStatus(self.name, "scripted", "script", "loaded")

    def load(self) -> None:
        pass

    def chat(self, messages: list[Message], params: GenerationParams, *, api_key: str | None = None) -> Completion:
        self.calls.append(messages)
        text = self.reply(messages)
        return Completion(text=text, tokens_in=10, tokens_out=len(text.split()), latency_s=0.01)


def sequence(*answers: str) -> ScriptedBackend:
    it = iter(answers)
    return ScriptedBackend(lambda messages: next(it))


def chat_of(backend: ScriptedBackend):
    return lambda messages: backend.chat(messages, GenerationParams())


# --- the plan -----------------------------------------------------------------------------------


def test_a_valid_plan_is_parsed_and_normalised():
    items = parse_plan("Here it is:\n```json\n" + GOOD_PLAN + "\n```")
    assert [(i.kind, i.name, i.signature, i.docstring) for i in items] == [
        ("function", "circle_area", "def circle_area(r: float) -> float", "Area of a circle."),
        ("class", "Square", "class Square", "A square."),
    ]
    bare = parse_plan(
        '{"items": [{"kind": "function", "name": "f", "signature": "f(x, *a, k=1, **kw):", '
        '"docstring": "First line.\\nSecond."}]}'
    )
    assert bare[0].signature == "def f(x, *a, k=1, **kw)" and bare[0].docstring == "First line."
    assert (
        parse_plan('{"items": [{"kind": "function", "name": "g", "signature": "async def g()"}]}')[0].signature
        == "async def g()"
    )


@pytest.mark.parametrize(
    "text, needle",
    [
        ("no json here", "no JSON object"),
        ('{"items": [{"kind": "function", "name": "f", "signature": "def f()"},]}', "does not parse"),
        ('{"items": []}', 'non-empty "items"'),
        ('{"plan": 1}', 'non-empty "items"'),
        ('{"items": ["f"]}', "not an object"),
        ('{"items": [{"kind": "method", "name": "f", "signature": "def f()"}]}', "kind must be"),
        ('{"items": [{"kind": "function", "name": "1f", "signature": "def 1f()"}]}', "not a Python identifier"),
        ('{"items": [{"kind": "function", "name": "class", "signature": "def class()"}]}', "not a Python identifier"),
        ('{"items": [{"kind": "function", "name": "f", "signature": "def f(x y)"}]}', "does not parse"),
        ('{"items": [{"kind": "function", "name": "f", "signature": "def g(x)"}]}', "does not define"),
        ('{"items": [{"kind": "class", "name": "C", "signature": "class C(:"}]}', "does not parse"),
        ('{"items": [{"kind": "function", "name": "f", "signature": "def f(): pass; import os"}]}', "does not"),
        ('{"items": [{"kind": "function", "name": "f"}]}', "needs a signature"),
        (
            '{"items": [{"kind": "function", "name": "f", "signature": "def f()"}, '
            '{"kind": "class", "name": "f", "signature": "class f"}]}',
            "planned twice",
        ),
    ],
)
def test_invalid_plans_say_why(text, needle):
    with pytest.raises(PlanError, match=None) as err:
        parse_plan(text)
    assert needle in str(err.value)


def test_make_plan_retries_feeding_back_the_validation_error():
    backend = sequence(
        "not json at all", '{"items": [{"kind": "function", "name": "f", "signature": "def f(x y)"}]}', GOOD_PLAN
    )
    plan = make_plan(chat_of(backend), VIEW)
    assert plan.attempts == 3 and [i.name for i in plan.items] == ["circle_area", "Square"]
    assert plan.tokens_in == 30
    prompts = [m[-1].content for m in backend.calls]
    assert "not a valid plan" not in prompts[0]
    assert "not a valid plan: the answer holds no JSON object" in prompts[1]
    assert "does not parse as a function stub" in prompts[2]
    assert "Areas of shapes." in prompts[0]


def test_make_plan_gives_up_after_its_attempts():
    backend = sequence("{", "{", "{", GOOD_PLAN)
    with pytest.raises(PlanError, match="no valid plan after 3 attempt"):
        make_plan(chat_of(backend), VIEW, attempts=3)
    assert len(backend.calls) == 3


# --- the bodies and the module ----------------------------------------------------------------

PLAN = Plan(items=parse_plan(GOOD_PLAN))


def test_body_prompt_has_the_plan_the_item_and_the_references():
    messages = body_messages(VIEW, PLAN, PLAN.items[1], references=[("s1", "def side(s): return s")])
    user = messages[-1].content
    assert 'def circle_area(r: float) -> float:\n    """Area of a circle."""\n    ...' in user
    assert "Write the complete class `class Square`: A square." in user
    assert "def side(s): return s" in user and "knowledge base" in user


def test_assembly_dedupes_imports_keeps_plan_order_and_helpers():
    first = build_piece(
        PLAN.items[0],
        "```python\nimport math\nfrom __future__ import annotations\n\n"
        "def circle_area(r: float) -> float:\n    return math.pi * r * r\n\n"
        "print(circle_area(1))\n```",
        PLAN,
    )
    second = build_piece(
        PLAN.items[1],
        "import math\n\nUNIT = 1\n\n@dataclass_like\nclass Square:\n"
        "    side: float = UNIT\n\n\ndef circle_area(r):\n    return 0\n",
        PLAN,
    )
    module = assemble([first, second])
    assert module.startswith("from __future__ import annotations\nimport math\n\n\n")
    assert module.count("import math") == 1
    assert module.index("def circle_area") < module.index("UNIT = 1") < module.index("@dataclass_like\nclass Square")
    assert module.count("def circle_area") == 1  # another item's rewrite is dropped
    assert "print(" not in module
    ast.parse(module)


def test_each_planned_items_block_is_found_in_the_module_with_its_helpers_not_the_imports():
    module = (
        "import math\n\n\ndef circle_area(r: float) -> float:\n    return math.pi * r * r\n\n\n"
        "UNIT = 1\n\n\n@dataclass_like\nclass Square:\n    side: float = UNIT\n"
    )
    [(first, a, b), (second, c, d)] = item_blocks(module, PLAN)
    lines = module.split("\n")
    assert (first.name, lines[a - 1], lines[b - 1]) == (
        "circle_area",
        "def circle_area(r: float) -> float:",
        "    return math.pi * r * r",
    )
    assert (second.name, lines[c - 1], lines[d - 1]) == ("Square", "UNIT = 1", "    side: float = UNIT")
    assert [i.name for i, _, _ in item_blocks("def circle_area(r):\n    return r\n", PLAN)] == ["circle_area"]
    assert item_blocks("class Square(:\n", PLAN) == []


def test_a_bare_body_goes_under_the_planned_header():
    piece = build_piece(PLAN.items[0], "```python\nimport math\nreturn math.pi * r ** 2\n```", PLAN)
    assert piece.written and piece.imports == ["import math"]
    assert piece.code == 'def circle_area(r: float) -> float:\n    """Area of a circle."""\n    return math.pi * r ** 2'


def test_an_item_not_written_is_a_stub_and_is_reported():
    piece = build_piece(PLAN.items[1], "def other():\n    return 1\n", PLAN)
    assert not piece.written and "raise NotImplementedError" in piece.code


def test_code_that_does_not_parse_is_kept_and_the_module_does_not_parse():
    from codegen.prompts import parses

    good = build_piece(PLAN.items[0], "def circle_area(r: float) -> float:\n    return r\n", PLAN)
    bad = build_piece(PLAN.items[1], "class Square(:\n    pass\n", PLAN)
    module = assemble([good, bad])
    assert "class Square(:" in module and parses(module) is False


def test_the_technique_is_implemented_with_its_parameters():
    info = TECHNIQUES[HIERARCHICAL]
    assert info.implemented and "plan_attempts" in info.parameters


# --- through the API and the workflow -----------------------------------------------------------


async def test_generate_with_the_tiny_model_fails_plainly_when_no_plan_validates(api, tenant):
    """The tiny random Llama never writes a valid plan: a 502 saying why, and the failed record stays."""
    resp = await api.post(
        "/api/generate",
        headers=tenant.headers,
        json={
            "template": {"name": "python-function"},
            "max_new_tokens": 8,
            "techniques": [HIERARCHICAL],
            "values": {"function_name": "add", "description": "Add two integers."},
        },
    )
    assert resp.status_code == 502, resp.text
    body = resp.json()
    assert body["status"] == "failed" and body["href"] == f"/api/generations/{body['id']}"
    assert "hierarchical_generation: no valid plan after 3 attempt(s)" in body["detail"]
    stored = (await api.get(body["href"], headers=tenant.headers)).json()
    assert stored["status"] == "failed" and "no valid plan" in stored["error"]
    assert stored["result"]["files"] == [] and stored["result"]["plan"] is None


@pytest.mark.parametrize(
    "techniques, status, needle",
    [
        ([HIERARCHICAL, "magic"], 422, "unknown technique"),
    ],
)
async def test_unknown_or_unimplemented_techniques_beside_it_are_422(api, tenant, techniques, status, needle):
    resp = await api.post(
        "/api/generate",
        headers=tenant.headers,
        json={
            "template": {"name": "python-function"},
            "techniques": techniques,
            "values": {"function_name": "add", "description": "Add two integers."},
        },
    )
    assert resp.status_code == status and needle in resp.json()["detail"], resp.text


def _scripted_module(messages: list[Message]) -> str:
    if messages[0].content.startswith("You plan"):
        return GOOD_PLAN
    user = messages[-1].content
    if "`def circle_area" in user:
        return "```python\nimport math\n\ndef circle_area(r: float) -> float:\n    return math.pi * r * r\n```"
    return "```python\nimport math\n\nclass Square:\n    def __init__(self, s):\n        self.s = s\n```"


async def _module_workflow(api, t, stack, temporal, pool, backend, techniques: list[str]):
    """The real GenerationWorkflow and activities on a queue of their own, with `backend` as `local_llama`
    and retrieval on the session's knowledge worker; the snippet it retrieves and the result."""
    from temporalio.worker import Worker

    from activities.generation import GenerationActivities
    from codegen.manager import ModelManager
    from models.generation import GenerationInput, GenerationResult, SpecSnapshot
    from store import generations
    from workflows.generation import GenerationWorkflow

    snip = (
        await api.post(
            "/api/snippets",
            headers=t.headers,
            json={
                "language": "python",
                "description": "areas of shapes",
                "content": "def rect_area(w, h):\n    return w * h",
            },
        )
    ).json()

    async def indexed():  # the retrieval below has to find it
        hits = (await api.post("/api/similar", json={"query": "Areas of shapes."}, headers=t.headers)).json()
        return snip["id"] in [r["id"] for r in hits["items"]]

    await wait_for(indexed, timeout=10)
    manager = ModelManager(stack.settings)
    manager._backends["local_llama"] = backend  # our own Backend interface, scripted
    acts = GenerationActivities(pool, manager, stack.settings)
    queue = f"hier-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        temporal,
        task_queue=queue,
        workflows=[GenerationWorkflow],
        activities=[
            acts.generate_candidates,
            acts.plan_module,
            acts.generate_bodies,
            acts.technique_step,
            acts.record_generation,
        ],
    )
    gid = uuid.uuid4()
    await generations.create_generation(
        pool,
        generation_id=gid,
        tenant_id=t.tenant_id,
        user_id=t.user_id,
        model="local_llama",
        techniques=techniques,
        request={},
    )
    spec = SpecSnapshot(
        template_id=None,
        template_name="inline",
        template_version="0",
        schema=MODULE_SCHEMA,
        values=MODULE_VALUES,
        values_hash="0" * 64,
    )
    async with worker:
        result = await temporal.execute_workflow(
            "GenerationWorkflow",
            GenerationInput(
                generation_id=gid,
                tenant_id=t.tenant_id,
                user_id=t.user_id,
                spec=spec,
                model="local_llama",
                techniques=techniques,
                max_new_tokens=64,
                n=1,
                temperature=0.0,
                retrieval_query=VIEW.query(),
                knowledge_queue=stack.settings.queue("knowledge"),
            ),
            id=f"generation-{gid}",
            task_queue=queue,
            result_type=GenerationResult,
            execution_timeout=timedelta(seconds=120),
        )
    return snip, result


async def test_workflow_plans_then_writes_each_body_with_retrieved_snippets(api, new_tenant, stack, temporal, pool):
    techniques = [RETRIEVAL, HIERARCHICAL]
    backend = ScriptedBackend(_scripted_module)
    snip, result = await _module_workflow(api, await new_tenant(), stack, temporal, pool, backend, techniques)
    assert result.status == "completed" and result.parses is True, result
    assert [i.name for i in result.plan.items] == ["circle_area", "Square"] and result.plan.attempts == 1
    code = result.files[0].content
    assert result.files[0].path == "shapes.py"
    assert code.count("import math") == 1 and code.index("def circle_area") < code.index("class Square")
    assert str(snip["id"]) in [str(s) for s in result.provenance.retrieved_snippets]
    bodies = [m for m in backend.calls if not m[0].content.startswith("You plan")]
    assert bodies and all("rect_area" in m[-1].content for m in bodies)  # references go into the body prompts
    assert all(c.techniques == techniques and c.missing_items == [] for c in result.candidates)


class ExplainingBackend(ScriptedBackend):
    """Scripted answers (so the plan is valid), explained by the real engine on the tiny random Llama."""

    def __init__(self, reply, engine) -> None:
        super().__init__(reply)
        self.engine = engine

    def explain(self, *args):
        return self.engine.explain(*args)


async def test_attention_explains_each_planned_item_against_its_own_prompt(
    api, new_tenant, stack, temporal, pool, tiny_llama
):
    """multi_head_attention under hierarchical_generation: each item's lines are explained against the
    prompt its body was written from (the plan, the item asked for, the snippet), put back at their lines
    of the module; the imports gathered at the top are not explained, and the reliance says so."""
    from codegen.generate import body_prompt
    from codegen.local_llama import LocalLlamaBackend
    from codegen.provenance.explain import fenced, summary
    from models.generation import Reference
    from models.settings import Settings

    engine = LocalLlamaBackend(Settings(_env_file=None, local_model=str(tiny_llama), local_dtype="fp32"))
    techniques = [RETRIEVAL, HIERARCHICAL, ATTENTION]
    backend = ExplainingBackend(_scripted_module, engine)
    snip, result = await _module_workflow(api, await new_tenant(), stack, temporal, pool, backend, techniques)
    assert result.status == "completed", result
    [kept] = result.candidates
    reliance, code = kept.reliance, kept.code
    assert reliance is not None and reliance.method == "exact"
    module = code.split("\n")
    explained = {line.line for line in reliance.lines}
    assert module[0] == "import math" and 1 not in explained and "imports gathered at the top" in (reliance.note or "")
    assert all(line.text == module[line.line - 1] for line in reliance.lines)
    labels = {s.label for s in reliance.spans}
    assert {"name", "description", "plan", "plan_item", f"snippet:{snip['id']}"} <= labels
    # each item's lines are what explaining its block alone, against its own body prompt, gives
    plan, refs = result.plan, [Reference(id=uuid.UUID(snip["id"]), content="def rect_area(w, h):\n    return w * h")]
    start = next(i for i, text in enumerate(module) if text.startswith("def circle_area"))
    block = "\n".join(module[start : start + 2])
    alone = engine.explain(body_prompt(VIEW, plan, plan.items[0], refs), fenced(block), block, "exact")
    assert reliance.forward_passes > alone.forward_passes  # the class was explained too, with passes of its own
    ours = {line.line - start: line for line in reliance.lines if start < line.line <= start + 2}
    assert sorted(ours) == [1, 2]
    for line in summary(alone, block)["lines"]:
        shares = [(s.label, s.share) for s in ours[line["line"]].spans]
        assert [label for label, _ in shares] == [s["label"] for s in line["spans"]]
        assert [share for _, share in shares] == pytest.approx([s["share"] for s in line["spans"]], abs=0.002)


def test_local_llama_constrains_the_plan_to_its_json_schema(tiny_llama):
    """The real engine on the tiny random Llama: unconstrained it writes bytes at random; with the
    plan's schema (xgrammar) its answer is JSON of that shape from the first token."""
    import xgrammar  # noqa: F401 - a hard dependency (pyproject.toml): missing, this fails rather than skips

    from codegen.hierarchical import PLAN_SCHEMA, plan_messages
    from codegen.local_llama import LocalLlamaBackend
    from models.settings import Settings

    backend = LocalLlamaBackend(Settings(_env_file=None, local_model=str(tiny_llama), local_dtype="fp32"))
    messages = plan_messages(VIEW)
    free = backend.chat(messages, GenerationParams(max_new_tokens=24))
    constrained = backend.chat(
        messages, GenerationParams(max_new_tokens=24, decoding=(JsonSchema(json.dumps(PLAN_SCHEMA)),))
    )
    assert not free.text.startswith('{"items": [{"kind": "')
    assert constrained.text.startswith('{"items": [{"kind": "')
    with pytest.raises(PlanError, match="never closed"):  # cut short at 24 tokens: checked all the same
        parse_plan(constrained.text)
