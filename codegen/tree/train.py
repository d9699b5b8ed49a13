"""Phase 1 of training the tree encoder: contrastive, on functions and their mutants, with checkpoints and resume.

Data: `functions_of` cuts a module's top-level functions out as standalone sources, `stdlib_functions` takes
them from this machine's Python standard library (read at call time, never written anywhere), and
`triplets` pairs each with a positive, one of its `rewrites` (`codegen/tree/mutants.py`), and its `mutants`
as the negatives. The rewrites leave the node sequence unchanged (identifiers are renamed by first
occurrence and docstrings are not nodes: `codegen/tree/nodes.py`), so the positive differs from the anchor
only by dropout in training, and the mutants, which always change the sequence, are what the encoder learns
to tell apart.

`train_contrastive` minimises, for each anchor of a batch, an InfoNCE loss on the cosine similarities of
`TreeEncoder.embed` (`codegen/tree/model.py`): its positive against its own mutants and the other anchors'
positives. It is deterministic given `TrainConfig.seed`: `torch.manual_seed` for dropout, and a
`torch.Generator` for the batches, each step drawing `batch_size` distinct triplets. Every
`checkpoint_every` steps, and at the last step, it replaces one checkpoint file whole (a temporary file in
the same directory, then `os.replace`): the encoder in the format of `TreeEncoder.save` under "model", with
the optimizer's state, the step, both random states, the losses so far, the configuration and a digest of
the triplets. Started with that file present, it resumes from it, so that a run killed at any step and
started again ends with the weights of a run never killed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from pydantic import BaseModel, ConfigDict, Field

from codegen.tree.model import TreeEncoder, TreeEncoderConfig, batch, read_checkpoint, write_checkpoint
from codegen.tree.mutants import mutants, rewrites
from codegen.tree.nodes import Linear, linearize, parse_python

CHECKPOINT_FORMAT = "specmill-tree-training"
CHECKPOINT_VERSION = 1
MAX_LINES = 200  # a longer function is left out
PER_FILE = 3  # stdlib_functions: functions taken from one module at most


# --- data -----------------------------------------------------------------------------------------------


def functions_of(source: str, max_nodes: int = TreeEncoderConfig().max_nodes) -> list[str]:
    """The module's top-level function definitions, each as its own source (decorators left out), but those
    over MAX_LINES lines or of more than `max_nodes` nodes. Source that does not parse has none."""
    tree = parse_python(source)
    if tree is None:
        return []
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_LINES:
            continue
        segment = ast.get_source_segment(source, node)
        if segment is None:
            continue
        linear = linearize(segment, max_nodes)
        if linear.parsed and not linear.truncated:
            found.append(segment)
    return found


def stdlib_functions(limit: int, seed: int, max_nodes: int = TreeEncoderConfig().max_nodes) -> list[str]:
    """Up to `limit` functions of the standard library's top-level modules (the *.py files beside `os`'s),
    the modules visited in an order the seed shuffles and at most PER_FILE functions, drawn by the seed, from
    each. Read when called; nothing is written."""
    if limit < 1:
        return []
    files = sorted(Path(os.__file__).resolve().parent.glob("*.py"))
    rng = random.Random(seed)
    rng.shuffle(files)
    found: list[str] = []
    seen: set[str] = set()
    for file in files:
        try:
            with tokenize.open(file) as handle:  # honours a module's coding declaration
                source = handle.read()
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        functions = [function for function in functions_of(source, max_nodes) if function not in seen]
        for function in rng.sample(functions, min(PER_FILE, len(functions))):
            found.append(function)
            seen.add(function)
            if len(found) == limit:
                return found
    return found


@dataclass(frozen=True, slots=True)
class Triplet:
    anchor: str
    positive: str
    negatives: tuple[str, ...]
    kinds: tuple[str, ...]  # the mutant kind of each negative


def triplets(sources: Sequence[str], seed: int) -> list[Triplet]:
    """One triplet per source that has a mutant: a rewrite of it (drawn by the seed; itself when it has none)
    as the positive, its mutants as the negatives."""
    rng = random.Random(seed)
    found = []
    for source in sources:
        broken = mutants(source, seed)
        if not broken:
            continue
        same = rewrites(source, seed)
        positive = rng.choice(same) if same else source
        found.append(Triplet(source, positive, tuple(m.source for m in broken), tuple(m.kind for m in broken)))
    return found


# --- training -------------------------------------------------------------------------------------------


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(default=1000, ge=1, le=100_000)
    batch_size: int = Field(default=16, ge=1, le=256)
    lr: float = Field(default=3e-4, ge=1e-5, le=1e-1)
    temperature: float = Field(default=0.1, ge=0.01, le=1.0)
    seed: int = 0
    checkpoint_every: int = Field(default=100, ge=1, le=10_000)


class RunConfig(Protocol):
    """What a checkpointed run's configuration offers (TrainConfig here, RankConfig in codegen/tree/rank.py)."""

    steps: int
    lr: float
    seed: int
    checkpoint_every: int

    def model_dump(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class TrainResult:
    steps: int
    final_loss: float
    losses: tuple[float, ...]  # one per step, the resumed run's included
    resumed_from: int = 0  # the checkpoint's step this run started from (0: from the start)


def train_contrastive(
    model: TreeEncoder,
    data: Sequence[Triplet],
    config: TrainConfig,
    checkpoint: Path,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `model` in place for `config.steps` steps, resuming from `checkpoint` when it exists, and
    leave it in eval mode. ValueError: no triplets, or a checkpoint of another configuration, encoder or
    data. An exception from `progress` stops the run; the last checkpoint stays."""
    if not data:
        raise ValueError("train_contrastive: no triplets")
    linears = [_linears(triplet, model.config.max_nodes) for triplet in data]
    return checkpointed_steps(
        model,
        config,
        _digest(data),
        Path(checkpoint),
        len(data),
        config.batch_size,
        lambda chosen: _info_nce(model, [linears[i] for i in chosen], config.temperature),
        progress,
    )


def checkpointed_steps(
    model: TreeEncoder,
    config: RunConfig,
    digest: str,
    checkpoint: Path,
    items: int,
    per_step: int,
    loss_of: Callable[[list[int]], torch.Tensor],
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """The training loop both phases share: AdamW over `model`, `config.steps` steps each drawing `per_step`
    distinct items of `items` (a seeded generator) and minimising `loss_of(their indices)`, checkpointed
    every `config.checkpoint_every` steps and at the last, resumed from `checkpoint` when it exists (see
    the module docstring); `model` is left in eval mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    step, losses = 0, []
    if checkpoint.exists():
        step, losses = resume_state(checkpoint, model, optimizer, generator, config, digest)
    resumed_from = step
    size = min(per_step, items)
    model.train()
    try:
        while step < config.steps:
            chosen = torch.randperm(items, generator=generator)[:size].tolist()
            loss = loss_of(chosen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_state(checkpoint, model, optimizer, generator, config, digest, step, losses)
            if progress is not None:
                progress(step, losses[-1])
    finally:
        model.eval()
    return TrainResult(steps=step, final_loss=losses[-1], losses=tuple(losses), resumed_from=resumed_from)


def _linears(triplet: Triplet, max_nodes: int) -> tuple[Linear, Linear, list[Linear]]:
    return (
        linearize(triplet.anchor, max_nodes),
        linearize(triplet.positive, max_nodes),
        [linearize(negative, max_nodes) for negative in triplet.negatives],
    )


def _info_nce(model: TreeEncoder, rows: list[tuple[Linear, Linear, list[Linear]]], temperature: float) -> torch.Tensor:
    """The mean over anchors of -log softmax of (anchor, own positive) among (anchor, every positive of the
    batch) and (anchor, each of its own mutants), on cosine similarities over the temperature."""
    size, most = len(rows), max(len(negatives) for _, _, negatives in rows)
    sequences = [a for a, _, _ in rows] + [p for _, p, _ in rows] + [n for _, _, ns in rows for n in ns]
    embedded = F.normalize(model.embed(batch(sequences)), dim=-1)
    anchors, positives, negatives = embedded[:size], embedded[size : 2 * size], embedded[2 * size :]
    own = torch.zeros(size, most, embedded.shape[-1], dtype=embedded.dtype)
    present = torch.zeros(size, most, dtype=torch.bool)
    start = 0
    for row, (_, _, ns) in enumerate(rows):
        own[row, : len(ns)] = negatives[start : start + len(ns)]
        present[row, : len(ns)] = True
        start += len(ns)
    mutant_sims = torch.einsum("bd,bmd->bm", anchors, own).masked_fill(~present, float("-inf"))
    logits = torch.cat([anchors @ positives.T, mutant_sims], dim=1) / temperature
    return F.cross_entropy(logits, torch.arange(size))


def _digest(data: Sequence[Triplet]) -> str:
    rows = [[t.anchor, t.positive, list(t.negatives), list(t.kinds)] for t in data]
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()


def save_state(
    path: Path,
    model: TreeEncoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: RunConfig,
    digest: str,
    step: int,
    losses: list[float],
) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model.payload(),  # what TreeEncoder.save writes
        "optimizer": optimizer.state_dict(),
        "step": step,
        "losses": list(losses),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "config": config.model_dump(),
        "data": digest,
    }
    write_checkpoint(path, payload)


def resume_state(
    path: Path,
    model: TreeEncoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: RunConfig,
    digest: str,
) -> tuple[int, list[float]]:
    """Load the checkpoint into the model, the optimizer and both random states; its step and losses."""
    payload: Any = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "tree-training")
    if payload.get("config") != config.model_dump():
        raise ValueError(f"{path} was written with another training configuration: {payload.get('config')}")
    saved = payload.get("model") or {}
    if saved.get("config") != model.config.model_dump():
        raise ValueError(f"{path} holds an encoder of another configuration: {saved.get('config')}")
    if payload.get("data") != digest:
        raise ValueError(f"{path} was written for other triplets")
    try:
        model.load_state_dict(saved["state"], strict=True)
        optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        step, losses = int(payload["step"]), [float(loss) for loss in payload["losses"]]
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: a broken tree-training checkpoint: {err}") from err
    if not 1 <= step <= config.steps or len(losses) != step:
        raise ValueError(f"{path}: step {step} with {len(losses)} losses, for a run of {config.steps} steps")
    return step, losses


# --- evaluation -----------------------------------------------------------------------------------------


@torch.no_grad()
def pair_accuracy(model: TreeEncoder, data: Sequence[Triplet]) -> float:
    """The share of (anchor, negative) pairs in which the anchor's embedding is closer (cosine) to its
    positive's than to the negative's, in eval mode. 0.0 without pairs."""
    pairs = correct = 0
    training = model.training
    model.eval()
    try:
        for triplet in data:
            a, p, ns = _linears(triplet, model.config.max_nodes)
            embedded = F.normalize(model.embed(batch([a, p, *ns])), dim=-1)
            sims = embedded[1:] @ embedded[0]
            correct += int((sims[0] > sims[1:]).sum())
            pairs += len(ns)
    finally:
        model.train(training)
    return correct / pairs if pairs else 0.0
