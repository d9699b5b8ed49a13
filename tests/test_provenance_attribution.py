"""The aggregation of attention into per-line, per-span reliance (codegen/provenance/attribution.py), on
hand-made attention tensors whose answers are worked out by hand."""

from __future__ import annotations

import pytest
import torch

from codegen.provenance import attribution as at
from codegen.provenance.spans import TokenSpan

# a prompt of 4 tokens: token 0 is the template's (a sink, in no span), span A is token 1, span B tokens 2-3
SPANS = [TokenSpan("A", 1, 2, 5), TokenSpan("B", 2, 4, 9)]
# layers x heads x G (2 code tokens) x P (4 prompt tokens)
TO_PROMPT = torch.tensor(
    [
        [  # layer 0
            [[0.5, 0.5, 0.0, 0.0], [0.2, 0.0, 0.4, 0.4]],  # head 0: token 1 on A 0.5; token 2 on B 0.8
            [[0.1, 0.0, 0.9, 0.0], [0.0, 1.0, 0.0, 0.0]],  # head 1: token 1 on B 0.9; token 2 on A 1.0
        ],
        [  # layer 1
            [[1.0, 0.0, 0.0, 0.0], [0.5, 0.25, 0.25, 0.0]],  # head 0: all on the sink; then A .25, B .25
            [[0.0, 0.3, 0.3, 0.4], [0.0, 0.0, 0.0, 1.0]],  # head 1: A .3, B .7; then B 1.0
        ],
    ]
)


def test_span_mass_sums_each_span_and_leaves_the_sink_out():
    mass = at.span_mass(TO_PROMPT, SPANS)
    assert mass.shape == (2, 2, 2, 2)
    torch.testing.assert_close(mass[0, 0], torch.tensor([[0.5, 0.0], [0.0, 0.8]]))
    torch.testing.assert_close(mass[1, 0], torch.tensor([[0.0, 0.0], [0.25, 0.25]]))


def test_the_mean_over_layers_and_heads():
    got = at.mean(at.span_mass(TO_PROMPT, SPANS))
    # token 1: A (0.5 + 0 + 0 + 0.3) / 4, B (0 + 0.9 + 0 + 0.7) / 4
    # token 2: A (0 + 1 + .25 + 0) / 4, B (.8 + 0 + .25 + 1) / 4
    torch.testing.assert_close(got, torch.tensor([[0.2, 0.4], [0.3125, 0.5125]]))


def test_weighted_heads_pick_what_they_weigh_and_never_go_negative():
    mass = at.span_mass(TO_PROMPT, SPANS)
    only_first = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(at.weighted(mass, only_first), mass[0, 0])
    negative = torch.tensor([[1.0, -5.0], [0.0, 0.0]])  # a negative weight counts as 0
    torch.testing.assert_close(at.weighted(mass, negative), mass[0, 0])
    with pytest.raises(ValueError):
        at.weighted(mass, torch.ones(3, 2))


def test_rollout_by_hand():
    # T = 3 (a prompt of 2, one code token), the same attention in both layers; spans: token 0 and token 1
    attention = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    spans = [TokenSpan("first", 0, 1, 1), TokenSpan("second", 1, 2, 1)]
    one = at.rollout(attention[None], 2, spans)
    # (A + I) / 2, row of position 1 (it predicts the code token): [0.25, 0.75, 0]
    torch.testing.assert_close(one, torch.tensor([[0.25, 0.75]]))
    two = at.rollout(torch.stack([attention, attention]), 2, spans)
    # the same mix squared, row 1: [0.25 * 1 + 0.75 * 0.25, 0.75 * 0.75] = [0.4375, 0.5625]
    torch.testing.assert_close(two, torch.tensor([[0.4375, 0.5625]]))


def test_lines_average_their_tokens_and_shares_sum_to_one():
    scores = torch.tensor([[0.2, 0.6], [0.4, 0.0], [0.0, 0.0], [9.0, 9.0]])
    lines = at.by_line(scores, [1, 1, 2, None])
    assert set(lines) == {1, 2}
    torch.testing.assert_close(lines[1], torch.tensor([0.3, 0.3]))
    torch.testing.assert_close(at.shares(lines[1]), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(at.shares(lines[2]), torch.tensor([0.0, 0.0]))  # nothing relied on: no shares


def test_token_lines_follow_the_extracted_code_and_skip_the_fence():
    pieces = ["```", "python", "\n", "def", " f", "():", "\n", "   ", " return", " 1", "\n", "```"]
    text = "".join(pieces)
    offsets, pos = [], 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    code = "def f():\n    return 1"
    assert at.token_lines(offsets, text, code) == [None, None, None, 1, 1, 1, None, 2, 2, 2, None, None]


def test_combined_explanations_put_each_answers_lines_at_its_offset_and_match_spans_by_label():
    from codegen.provenance.explain import Explained, combine

    a = Explained("exact", [SPANS[0], SPANS[1]], {1: torch.tensor([1.0, 3.0])}, torch.tensor([[1.0, 3.0]]), [1], 2, 0.5)
    plan_item = TokenSpan("plan_item", 4, 6, 7)
    b = Explained(
        "exact",
        [SPANS[1], plan_item],
        {1: torch.tensor([2.0, 0.0]), 2: torch.tensor([0.0, 5.0])},
        torch.tensor([[2.0, 0.0], [0.0, 5.0]]),
        [1, 2],
        3,
        0.25,
    )
    both = combine([(a, 0), (b, 4)])
    assert [s.label for s in both.spans] == ["A", "B", "plan_item"]
    assert {line: row.tolist() for line, row in both.lines.items()} == {
        1: [1.0, 3.0, 0.0],
        5: [0.0, 2.0, 0.0],
        6: [0.0, 0.0, 5.0],
    }
    assert both.token_scores.tolist() == [[1.0, 3.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]]
    assert (both.token_lines, both.forward_passes, both.seconds) == ([1, 5, 6], 5, 0.75)
