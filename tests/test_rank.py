"""The one selection rule (models/generation_steps.rank), as the product and the eval apply it."""

from __future__ import annotations

from models.generation import Candidate, CandidateTests
from models.generation_steps import best, rank


def _cand(code: str, passed: int, logprob: float | None, parses: bool = True) -> Candidate:
    return Candidate(
        model="local_llama",
        techniques=[],
        code=code,
        tokens_in=1,
        tokens_out=1,
        latency_s=0.0,
        parses=parses,
        finish_reason="stop",
        mean_logprob=logprob,
        tests=CandidateTests(passed=passed, total=2, status="passed" if passed == 2 else "failed"),
    )


def test_ties_after_the_visible_tests_go_to_the_likelier_candidate():
    greedy, unlikely, likely = _cand("a", 1, -0.5), _cand("b", 2, -0.9), _cand("c", 2, -0.2)
    assert best([greedy, unlikely, likely], by_log_probability=True) is likely
    assert best([greedy, unlikely, likely]) is unlikely  # the rule before: the earlier of the two
    # the visible tests still come first, and a model that reports no log-probability keeps the order
    assert rank([_cand("x", 1, -0.1), _cand("y", 2, -3.0)], True)[0].code == "y"
    assert best([_cand("p", 2, None), _cand("q", 2, None)], by_log_probability=True).code == "p"


def test_code_that_parses_comes_first_whatever_its_log_probability():
    broken, fine = _cand("(", 0, -0.01, parses=False), _cand("x = 1", 0, -2.0)
    assert best([broken, fine], by_log_probability=True) is fine


def test_a_techniques_selection_score_decides_when_every_candidate_has_one():
    a, b = _cand("a", 2, -0.1), _cand("b", 0, -0.9)
    scored = [a.model_copy(update={"selection_score": 0.1}), b.model_copy(update={"selection_score": 0.7})]
    assert best(scored, by_log_probability=True).code == "b"
