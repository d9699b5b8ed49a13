"""Phase 2 of training the tree encoder: ranking real candidates, and the combined score's weights.

Data: candidate pools (bench/pools.py) of the default model's own samples on MBPP train, each candidate
labelled by its tests in the sandbox. Only pools that mix passing and failing candidates say anything about
ranking; the others are left out (`mixed_pools`).

`train_ranking` fine-tunes the encoder and its score head so that, within a pool, a passing candidate
scores above a failing one: at each step `pools_per_step` pools are drawn, and the loss is the mean over
their (passing, failing) pairs of softplus(s_fail - s_pass), the pairwise logistic loss. It is
deterministic given the seed and checkpoints and resumes exactly as phase 1 does (codegen/tree/train.py:
`save_state`, `resume_state`).

`fit_combiner` fits the combined score (codegen/tree/checkpoints.py: `Combiner`) on other pools than those
the encoder was trained on: a linear score over the standardised features, trained with the listwise
loss -log(sum over passing candidates of softmax(score)) per mixed pool, plus a small L2 penalty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from pydantic import BaseModel, ConfigDict, Field

from codegen.tree.checkpoints import FEATURES, Combiner, encode
from codegen.tree.model import TreeEncoder, batch
from codegen.tree.nodes import linearize
from codegen.tree.select import features
from codegen.tree.train import TrainResult, checkpointed_steps


class RankConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(default=300, ge=1, le=100_000)
    pools_per_step: int = Field(default=8, ge=1, le=64)
    lr: float = Field(default=1e-4, ge=1e-6, le=1e-1)
    seed: int = 0
    checkpoint_every: int = Field(default=50, ge=1, le=10_000)


def mixed_pools(records: Sequence[dict]) -> list[list[tuple[str, bool]]]:
    """Each pool record's distinct candidates as (code, passed), only the pools with both kinds."""
    out = []
    for record in records:
        seen: dict[str, bool] = {}
        for c in record.get("candidates", []):
            seen.setdefault(c["code"], bool(c["passed"]))
        if any(seen.values()) and not all(seen.values()):
            out.append(list(seen.items()))
    return out


def _digest(pools: Sequence[Sequence[tuple[str, bool]]]) -> str:
    return hashlib.sha256(json.dumps([[list(c) for c in p] for p in pools]).encode("utf-8")).hexdigest()


def _pair_loss(model: TreeEncoder, pool: list[tuple[str, bool]]) -> torch.Tensor:
    scores = model.score(batch([linearize(code, model.config.max_nodes) for code, _ in pool]))
    passed = torch.tensor([ok for _, ok in pool])
    return F.softplus(scores[~passed].unsqueeze(0) - scores[passed].unsqueeze(1)).mean()


def train_ranking(
    model: TreeEncoder,
    pools: Sequence[list[tuple[str, bool]]],
    config: RankConfig,
    checkpoint,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `model` in place for `config.steps` steps on mixed pools, resuming from `checkpoint` when it
    exists, and leave it in eval mode. ValueError: no mixed pool, or a checkpoint of another run."""
    if not pools:
        raise ValueError("train_ranking: no pool mixes passing and failing candidates")
    return checkpointed_steps(
        model,
        config,
        _digest(pools),
        checkpoint,
        len(pools),
        config.pools_per_step,
        lambda chosen: torch.stack([_pair_loss(model, pools[i]) for i in chosen]).mean(),
        progress,
    )


def pool_features(model: TreeEncoder, records: Sequence[dict]) -> list[tuple[list[list[float | None]], list[bool]]]:
    """Per pool record: each candidate's features (the encoder's tree score first) and whether it passed."""
    out = []
    for record in records:
        cands = record.get("candidates", [])
        if not cands:
            continue
        trees, _ = encode(model, [c["code"] for c in cands])
        rows = [features(_as_candidate(c), float(t)) for c, t in zip(cands, trees, strict=True)]
        out.append((rows, [bool(c["passed"]) for c in cands]))
    return out


def _as_candidate(c: dict) -> dict:
    """A pool record's candidate in the shape `select.score` receives."""
    total = c.get("visible_total") or 0
    return {
        "mean_logprob": c.get("mean_logprob"),
        "visible_share": c["visible_passed"] / total if total else None,
        "parses": c.get("parses"),
    }


def fit_combiner(
    pools: Sequence[tuple[list[list[float | None]], list[bool]]], *, steps: int = 500, l2: float = 1e-2, seed: int = 0
) -> Combiner:
    """The combined score's weights, fitted on the mixed pools among `pools` (see the module docstring)."""
    rows = [value for feats, _ in pools for value in feats]
    means, scales = [], []
    for j in range(len(FEATURES)):
        present = [v for r in rows if (v := r[j]) is not None]
        mean = sum(present) / len(present) if present else 0.0
        var = sum((v - mean) ** 2 for v in present) / len(present) if present else 0.0
        means.append(mean)
        scales.append(var**0.5 if var > 1e-12 else 1.0)
    mixed = [(f, y) for f, y in pools if any(y) and not all(y)]
    if not mixed:
        raise ValueError("fit_combiner: no pool mixes passing and failing candidates")
    xs = [
        torch.tensor([[((m if v is None else v) - m) / s for v, m, s in zip(r, means, scales, strict=True)] for r in f])
        for f, _ in mixed
    ]
    ys = [torch.tensor(y) for _, y in mixed]
    torch.manual_seed(seed)
    w = torch.zeros(len(FEATURES), requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        loss = sum(-(torch.logsumexp((x @ w)[y], 0) - torch.logsumexp(x @ w, 0)) for x, y in zip(xs, ys, strict=True))
        loss = loss / len(xs) + l2 * (w**2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Combiner([round(float(v), 6) for v in w.detach()], 0.0, means, scales)
