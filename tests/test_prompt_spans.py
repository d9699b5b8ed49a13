"""The prompt is built from labelled spans (codegen/prompts.py): each spec field, test, snippet, plan
item and failure lands where its span says, and labelling changes no character of the prompt."""

from __future__ import annotations

from codegen.hierarchical import body_messages, parse_plan
from codegen.prompts import Labelled, build_messages
from models.builtin_templates import PYTHON_FUNCTION
from models.generation import Plan
from models.spec_view import spec_view

VALUES = {
    "function_name": "clamp",
    "description": "Clamp x into [lo, hi].",
    "signature": "def clamp(x: int, lo: int, hi: int) -> int",
    "tests": ["assert clamp(5, 0, 3) == 3", "assert clamp(-1, 0, 3) == 0"],
}
SNIPPETS = [("7f0c", "def bound(v, a, b):\n    return max(a, min(v, b))"), ("9e1d", "x = 1")]

# the prompt as it was written before it was labelled: the spans must not change a character of it
EXPECTED = (
    "Write a python function named `clamp`.\n\n"
    "Description: Clamp x into [lo, hi].\n\n"
    "Signature:\ndef clamp(x: int, lo: int, hi: int) -> int\n\n"
    "It must pass these tests:\nassert clamp(5, 0, 3) == 3\nassert clamp(-1, 0, 3) == 0\n\n"
    "Related code from this team's knowledge base (reuse what helps):\n"
    "```python\ndef bound(v, a, b):\n    return max(a, min(v, b))\n```\n\n```python\nx = 1\n```\n\n"
    "A previous attempt failed:\nAssertionError: clamp(5, 0, 3) returned 5\nFix it."
)


def _texts(message) -> dict[str, str]:
    return {s.label: message.content[s.start : s.end] for s in message.spans}


def test_each_labelled_part_is_where_its_span_says_and_the_text_is_unchanged():
    system, user = build_messages(
        spec_view(PYTHON_FUNCTION, VALUES),
        references=SNIPPETS,
        feedback="AssertionError: clamp(5, 0, 3) returned 5",
    )
    assert user.content == EXPECTED
    assert system.spans == ()  # the system prompt and the template's own text are not spans
    assert _texts(user) == {
        "description": VALUES["description"],
        "signature": VALUES["signature"],
        "test:1": VALUES["tests"][0],
        "test:2": VALUES["tests"][1],
        "snippet:7f0c": SNIPPETS[0][1],
        "snippet:9e1d": SNIPPETS[1][1],
        "failure": "AssertionError: clamp(5, 0, 3) returned 5",
    }
    ends = [(s.start, s.end) for s in user.spans]
    assert ends == sorted(ends) and all(a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False))


def test_a_repeated_value_gets_a_span_for_each_place():
    values = {**VALUES, "tests": ["assert clamp(1, 0, 3) == 1", "assert clamp(1, 0, 3) == 1"]}
    _, user = build_messages(spec_view(PYTHON_FUNCTION, values))
    spans = {s.label: s for s in user.spans}
    assert spans["test:1"].start != spans["test:2"].start
    assert _texts(user)["test:1"] == _texts(user)["test:2"] == values["tests"][0]


def test_joining_blocks_shifts_their_spans():
    block = Labelled.join([Labelled("a: ").add("one", "first"), Labelled("b: ").add("two", "second")], sep=" | ")
    assert block.text == "a: one | b: two"
    assert {s.label: block.text[s.start : s.end] for s in block.spans} == {"first": "one", "second": "two"}


def test_a_body_prompt_labels_its_plan_item_and_snippets():
    plan = Plan(
        items=parse_plan(
            '{"items": [{"kind": "function", "name": "area", "signature": "def area(r: float) -> float", '
            '"docstring": "Area of a circle."}]}'
        )
    )
    view = spec_view(PYTHON_FUNCTION, {**VALUES, "function_name": "area"})
    _, user = body_messages(view, plan, plan.items[0], references=SNIPPETS[:1])
    texts = _texts(user)
    assert texts["plan_item"] == "function `def area(r: float) -> float`: Area of a circle."
    assert texts["snippet:7f0c"] == SNIPPETS[0][1]
    assert texts["test:1"] == VALUES["tests"][0]
