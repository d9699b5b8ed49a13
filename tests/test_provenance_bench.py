"""bench/provenance.py's arithmetic: the fit of head weights recovers the head that carries the signal,
the ranks and Spearman handle ties, and the per-line metrics are read the way the docstring says."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import provenance as pv  # noqa: E402


def _record(mass: torch.Tensor, loo: torch.Tensor) -> dict:
    """mass: lines x layers x heads x spans; loo: lines x spans."""
    return {"mass": mass.tolist(), "loo": loo.tolist()}


def test_the_fit_puts_its_weight_on_the_head_whose_mass_predicts_the_drops():
    g = torch.Generator().manual_seed(0)
    records = []
    for _ in range(20):
        mass = torch.rand(6, 2, 3, 4, generator=g)  # 6 lines, 2 layers x 3 heads, 4 spans
        loo = 5.0 * mass[:, 1, 2] + 0.01 * torch.randn(6, 4, generator=g)  # only layer 1, head 2 matters
        records.append(_record(mass, loo))
    weights, stats = pv.fit(records, steps=1500)
    assert weights.shape == (2, 3) and (weights >= 0).all()
    assert int(weights.argmax()) == 1 * 3 + 2
    assert weights[1, 2] == pytest.approx(5.0, rel=0.1)
    assert stats["within_line_r2"] > 0.95


def test_ranks_and_spearman_with_ties():
    assert pv._ranks([3.0, 1.0, 1.0, 2.0]) == [3.0, 0.5, 0.5, 2.0]
    assert pv._spearman([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert pv._spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert pv._spearman([1.0, 1.0], [1.0, 2.0]) is None  # no spread: undefined
    assert pv._spearman([1.0], [1.0]) is None


def test_line_metrics_read_the_top_span_its_pair_and_the_argmax():
    record = {"loo": [[0.5, 2.0, 0.1], [1.0, 0.0, 0.0]], "lines": [1, 2]}
    top2 = {(0, 1): {1: 2.3, 2: 1.1}, (1, 2): {1: 2.05, 2: 0.0}}
    got = pv._line_metrics([[0.2, 0.9, 0.1], [0.1, 0.5, 0.3]], record, top2)
    assert got["top1"] == pytest.approx((2.0 + 0.0) / 2)  # line 1 picks span 1, line 2 picks span 1
    assert got["top2"] == pytest.approx((2.3 + 0.0) / 2)  # pairs (0, 1) and (1, 2)
    assert got["hit1"] == pytest.approx(0.5)  # right on line 1, wrong on line 2


def test_the_bootstrap_interval_of_a_constant_difference_is_that_difference():
    assert pv._bootstrap([1.0] * 10, [0.5] * 10) == [0.5, 0.5]
    rng = random.Random(1)
    low, high = pv._bootstrap([rng.random() for _ in range(30)], [0.0] * 30)
    assert 0 < low < high < 1
