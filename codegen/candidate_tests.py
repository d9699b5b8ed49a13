"""Candidates against a spec's visible tests, in the sandbox: what `rank` (models.generation_steps)
orders them by after whether they parse.

The integration worker's `test_candidates` activity and `make eval` both call `run_candidates`. The
visible tests are those the user showed the model: a spec's `tests` values, or, for a HumanEval
problem, the examples of its docstring (`docstring_tests`). A benchmark's hidden tests never choose.
"""

from __future__ import annotations

import ast
import doctest
import re
from collections.abc import Callable

from models.generation import CandidateTests
from sandbox import SandboxConfig, compared, run_tests

TIMEOUT_S = 10.0
MEMORY_MB = 512
FAILURE_CHARS = 600
_ARROW = re.compile(r"\s*(?:==|➞|=>|->|→)\s*")


def result_of(run, total: int) -> CandidateTests:
    """A sandbox run as a count: the harness stops at the first failing test, whose index is the number
    of tests that passed before it (0 when the code itself failed)."""
    if run.status == "passed":
        return CandidateTests(passed=total, total=total, status="passed")
    failed = run.failed_test or {}
    index = failed.get("index")
    passed = index if failed.get("stage") == "tests" and isinstance(index, int) else 0
    why = failed.get("error") or run.reason or (run.stderr.strip().splitlines() or [run.status])[-1]
    values = compared(failed)
    why += f" ({values})" if values else ""
    test = f"{failed['test']}: " if failed.get("test") else ""
    return CandidateTests(passed=passed, total=total, status=run.status, failure=f"{test}{why}"[:FAILURE_CHARS])


def run_candidates(
    codes: list[str],
    tests: list[str],
    *,
    prefix: str = "",
    config: SandboxConfig | None = None,
    timeout_s: float = TIMEOUT_S,
    memory_mb: int = MEMORY_MB,
    progress: Callable[[int], None] | None = None,
) -> list[CandidateTests]:
    """Each code (after `prefix`, a benchmark's own setup) against the tests; SandboxUnavailable when
    there is no sandbox (nothing ever runs unconfined)."""
    out = []
    for i, code in enumerate(codes):
        program = f"{prefix}\n\n{code}\n" if prefix else code + "\n"
        run = run_tests(program, tests, timeout_s=timeout_s, memory_mb=memory_mb, config=config)
        out.append(result_of(run, len(tests)))
        if progress:
            progress(i + 1)
    return out


def docstring_tests(source: str, function: str) -> list[str]:
    """The examples in the docstring of `function` in `source`, as asserts: doctest examples
    (`>>> f(1)` then `2`), and lines of the form `f(1) == 2`, `f(1) ➞ 2`, `f(1) => 2` or `f(1) -> 2`.
    Each side must be a Python expression; anything else is left out."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function), None)
    doc = ast.get_docstring(node) if node is not None else None
    if not doc:
        return []
    pairs: list[tuple[str, str]] = []
    try:
        examples = doctest.DocTestParser().get_examples(doc)
    except ValueError:  # a malformed doctest
        examples = []
    pairs += [(e.source.strip(), e.want.strip()) for e in examples if e.want.strip()]
    if not pairs:
        for line in doc.splitlines():
            line = line.strip()
            if line.startswith(f"{function}(") and _ARROW.search(line):
                left, right = _ARROW.split(line, maxsplit=1)
                pairs.append((left, right))
    tests = []
    for call, want in pairs:
        test = f"assert ({call}) == ({want})"
        if _expression(call) and _expression(want) and test not in tests:
            tests.append(test)
    return tests


def _expression(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    return True
