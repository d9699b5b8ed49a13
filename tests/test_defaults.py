"""bench/defaults.py's arithmetic: which candidate each selector keeps, the table over the problems,
and the rule that picks a new tenant's default, on records small enough to check by hand."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import defaults  # noqa: E402

from models.generation import Candidate, CandidateTests  # noqa: E402

N1, BEAM, N4, N8 = (s.label for s in defaults.SETTINGS)
PLAIN, COMBINED = defaults.PRODUCT_RULE, defaults.COMBINED


def _candidate(code: str, passed: int, logprob: float, selection: float | None) -> Candidate:
    return Candidate(
        model="local_llama",
        techniques=[],
        code=code,
        tokens_in=10,
        tokens_out=5,
        latency_s=0.1,
        parses=True,
        finish_reason="stop",
        mean_logprob=logprob,
        selection_score=selection,
        tests=CandidateTests(passed=passed, total=3, status="passed" if passed == 3 else "failed"),
    )


def test_with_tree_scores_both_selectors_choose_from_the_same_candidates():
    tree_setting = next(s for s in defaults.SETTINGS if s.label == N4)
    pool = [
        _candidate("a", passed=1, logprob=-0.1, selection=0.9),  # the tree's favourite
        _candidate("b", passed=3, logprob=-0.5, selection=0.2),  # passes the spec's tests
    ]
    chosen = defaults.selectors(tree_setting, pool)
    assert chosen[COMBINED].code == "a"
    assert chosen[PLAIN].code == "b"
    assert pool[0].selection_score == 0.9  # the candidates themselves are left as they were

    greedy_setting = next(s for s in defaults.SETTINGS if s.label == N1)
    plain = [c.model_copy(update={"selection_score": None}) for c in pool]
    assert set(defaults.selectors(greedy_setting, plain)) == {PLAIN}


def _line(task: str, outcomes: dict[str, tuple[float, dict[str, bool]]]) -> dict:
    return {"task_id": task} | {
        label: {"seconds": seconds, "selectors": selectors, "tokens_out": 1}
        for label, (seconds, selectors) in outcomes.items()
    }


def test_the_table_and_the_rule_by_hand():
    records = [
        _line(
            "p1",
            {
                N1: (6.0, {PLAIN: False}),
                BEAM: (12.0, {PLAIN: True}),
                N4: (24.0, {COMBINED: True, PLAIN: True}),
                N8: (48.0, {COMBINED: True, PLAIN: True}),
            },
        ),
        _line(
            "p2",
            {
                N1: (6.0, {PLAIN: True}),
                BEAM: (12.0, {PLAIN: False}),
                N4: (24.0, {COMBINED: False, PLAIN: True}),
                N8: (48.0, {COMBINED: True, PLAIN: True}),
            },
        ),
    ]
    rows = {(r["setting"], r["selector"]): r for r in defaults.table(records)}
    assert rows[(N1, PLAIN)]["solved"] == 1 and rows[(N1, PLAIN)]["solved_per_minute"] == 5.0  # 1 in 12 s
    assert rows[(BEAM, PLAIN)]["solved_per_minute"] == 2.5  # 1 in 24 s
    assert rows[(N4, PLAIN)]["solved_per_minute"] == 2.5  # 2 in 48 s
    assert rows[(N4, COMBINED)]["solved"] == 1
    assert rows[(N8, COMBINED)]["solved_per_minute"] == 1.25  # 2 in 96 s
    # the most solved per minute among what a fresh install can use: greedy here
    assert defaults.choice(list(rows.values())) is rows[(N1, PLAIN)]
    # the tree's selector needs a trained checkpoint: never the default, however fast
    assert rows[(N4, PLAIN)]["fresh_install"] and not rows[(N4, COMBINED)]["fresh_install"]
    rows[(N8, COMBINED)]["solved_per_minute"] = 99.0
    assert defaults.choice(list(rows.values())) is rows[(N1, PLAIN)]
    # ties go to the setting that solved more
    rows[(N4, PLAIN)]["solved_per_minute"] = 5.0
    assert defaults.choice(list(rows.values())) is rows[(N4, PLAIN)]
