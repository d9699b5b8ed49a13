"""bench/choose.py's arithmetic: the selectors' pass@1, the gap closed, AUROC within pools, the paired
interval, on pools small enough to check by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import choose  # noqa: E402


def _cand(passed: bool, logprob: float, visible: int, total: int = 2) -> dict:
    return {
        "code": "x = 1",
        "passed": passed,
        "mean_logprob": logprob,
        "visible_passed": visible,
        "visible_total": total,
    }


POOLS = [
    # greedy fails; the likeliest fails; the one passing the visible tests passes
    {"task_id": "a", "candidates": [_cand(False, -0.5, 0), _cand(False, -0.1, 1), _cand(True, -0.9, 2)]},
    # every candidate fails: no selector can solve it
    {"task_id": "b", "candidates": [_cand(False, -0.2, 0), _cand(False, -0.3, 0)]},
    # greedy passes
    {"task_id": "c", "candidates": [_cand(True, -0.2, 2), _cand(False, -0.4, 0)]},
]


def test_the_selectors_on_pools_checked_by_hand():
    out = choose.evaluate(POOLS, {}, {})
    rows = out["selectors"]
    assert out["problems"] == 3 and out["mixed_pools"] == 2
    assert rows["random"]["pass@1"] == pytest.approx(round((1 / 3 + 0 + 1 / 2) / 3, 4))
    assert rows["greedy"]["solved"] == 1 and rows["mean log-probability"]["solved"] == 1
    assert rows[choose.PRIMARY]["solved"] == 2 and rows["oracle"]["solved"] == 2
    assert rows[choose.PRIMARY]["gap_closed"] == 1.0
    assert rows["greedy"]["vs_primary"]["losses"] == 1 and rows["greedy"]["vs_primary"]["wins"] == 0


def test_auroc_counts_ties_as_half():
    assert choose.auroc([3.0, 1.0, 2.0], [True, False, False]) == 1.0
    assert choose.auroc([1.0, 1.0], [True, False]) == 0.5
    assert choose.auroc([0.0, 1.0], [True, False]) == 0.0


def test_the_paired_interval_of_identical_choices_is_zero():
    same = [True, False, True, False]
    assert choose.bootstrap(same, same) == (0.0, 0.0)
    low, high = choose.bootstrap([True] * 10, [False] * 10)
    assert low == high == 1.0
