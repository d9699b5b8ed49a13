"""Positional encodings for tree nodes, and the sequential one they are compared with.

The tree encoding follows Shiv & Quirk, "Novel positional encodings to enable tree-based transformers"
(NeurIPS 2019): a node's position is its path from the root, written
as one one-hot vector of `width` slots per step, root first, `depth` steps in all, zeros past the end of
the path. A path deeper than `depth` keeps its first `depth` steps, and a child index past `width - 1`
is clipped to it. So the root is all zeros, siblings differ, and two nodes whose paths share a prefix of
length L agree on the first L * width entries. The per-depth weighting of the paper, which the model
learns, is in `codegen/tree/model.py`.

Paths travel as a step tensor (`step_tensor`): child indices padded with -1, one row per node, which
`encode_steps` turns into the encodings of a whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling


def step_tensor(paths: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
    """The paths as a long tensor [len(paths), length], padded with -1 (length: the longest path's, at least 1)."""
    longest = max((len(path) for path in paths), default=0)
    length = max(1, longest if length is None else length)
    rows = [list(path[:length]) + [-1] * (length - len(path[:length])) for path in paths]
    return torch.tensor(rows, dtype=torch.long).reshape(len(paths), length)


def encode_steps(steps: torch.Tensor, depth: int = 16, width: int = 16) -> torch.Tensor:
    """Steps [..., S] (-1: none) as tree encodings [..., depth * width], float32."""
    steps = steps[..., :depth]
    if steps.shape[-1] < depth:
        steps = F.pad(steps, (0, depth - steps.shape[-1]), value=-1)
    present = (steps >= 0).unsqueeze(-1)
    hot = F.one_hot(steps.clamp(0, width - 1), width) * present
    return hot.flatten(-2).to(torch.float32)


def tree_positions(paths: Sequence[Sequence[int]], depth: int = 16, width: int = 16) -> torch.Tensor:
    """The tree encodings of `paths`: a float tensor [len(paths), depth * width]."""
    return encode_steps(step_tensor(paths, depth), depth, width)


def sequential_positions(n: int, dim: int) -> torch.Tensor:
    """The sinusoidal encodings of positions 0..n-1 (Vaswani et al. 2017): a float tensor [n, dim]."""
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(n, dim)
    out[:, 0::2] = torch.sin(position * frequency)
    out[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return out
