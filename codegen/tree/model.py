"""A small transformer over syntax-tree node sequences: an embedding of a candidate, and a score for it.

A node's token (`codegen/tree/nodes.py`) becomes an id by a stable hash: 1 + crc32(token) mod
(vocab_buckets - 1), id 0 being padding. Its input vector is the token's embedding plus a positional
term: `tree`, a learned linear map of the node's tree encoding (`codegen/tree/positions.py`) after the
per-depth weighting of Shiv & Quirk (NeurIPS 2019), where step j is scaled by p**j * sqrt(1 - p**2) with
p in (0, 1) learned; `sequential`, the sinusoidal encoding of the node's index in the sequence (the
ablation); or `none`. A pre-norm `torch.nn.TransformerEncoder` follows, padding masked out, and the
masked mean of its outputs is the embedding (`embed`); a linear head of it is the score (`score`).

`batch(...)` does not depend on a model's configuration: it carries the raw crc32 of each token and the
paths as a step tensor, and each model reads them with its own sizes. A checkpoint is one file, written
by `save` and read by `TreeEncoder.load` with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from codegen.tree.nodes import Linear
from codegen.tree.positions import encode_steps, sequential_positions, step_tensor

FORMAT = "specmill-tree-encoder"
VERSION = 1


class TreeEncoderConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vocab_buckets: int = Field(default=8192, ge=2)
    width: int = Field(default=128, ge=1)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    ff: int = Field(default=256, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_nodes: int = Field(default=384, ge=1)
    depth: int = Field(default=16, ge=1)  # tree encoding: steps of a path kept
    branching: int = Field(default=16, ge=1)  # tree encoding: one-hot slots per step
    positions: Literal["tree", "sequential", "none"] = "tree"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TreeEncoderConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self


def batch(linears: Sequence[Linear]) -> dict[str, torch.Tensor]:
    """Node sequences padded to the longest: `hashes` [B, N] (crc32 of each token), `mask` [B, N] (True at a
    node), `steps` [B, N, S] (each node's path, -1 padded)."""
    if not linears:
        raise ValueError("batch: no sequences")
    n = max(1, max(len(linear.tokens) for linear in linears))
    hashes = torch.zeros(len(linears), n, dtype=torch.long)
    mask = torch.zeros(len(linears), n, dtype=torch.bool)
    longest = max((len(path) for linear in linears for path in linear.paths), default=0)
    steps = torch.full((len(linears), n, max(1, longest)), -1, dtype=torch.long)
    for row, linear in enumerate(linears):
        size = len(linear.tokens)
        hashes[row, :size] = torch.tensor([zlib.crc32(token.encode("utf-8")) for token in linear.tokens])
        mask[row, :size] = True
        steps[row, :size] = step_tensor(linear.paths, steps.shape[-1])
    return {"hashes": hashes, "mask": mask, "steps": steps}


class TreePositions(nn.Module):
    """Shiv & Quirk's tree encoding, weighted per depth by a learned p, then a learned linear map."""

    def __init__(self, config: TreeEncoderConfig) -> None:
        super().__init__()
        self.depth, self.branching = config.depth, config.branching
        self.p_logit = nn.Parameter(torch.zeros(()))  # p = sigmoid(p_logit), 0.5 at the start
        self.project = nn.Linear(config.depth * config.branching, config.width)

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.p_logit)
        exponents = torch.arange(self.depth, device=steps.device, dtype=p.dtype)
        weights = (p**exponents * torch.sqrt(1 - p**2)).repeat_interleave(self.branching)
        return self.project(encode_steps(steps, self.depth, self.branching) * weights)


class TreeEncoder(nn.Module):
    def __init__(self, config: TreeEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TreeEncoderConfig()
        self.tokens = nn.Embedding(config.vocab_buckets, config.width, padding_idx=0)
        layer = nn.TransformerEncoderLayer(
            config.width, config.heads, config.ff, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.layers, norm=nn.LayerNorm(config.width), enable_nested_tensor=False
        )
        self.head = nn.Linear(config.width, 1)
        # made last, so that under one seed the three modes share every other initial weight
        self.tree = TreePositions(config) if config.positions == "tree" else None

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, width]: the masked mean of the encoder's outputs."""
        hidden, mask = self._encode(inputs)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def score(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B]: one scalar per sequence."""
        return self.head(self.embed(inputs)).squeeze(-1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score(inputs)

    def _encode(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        device, n = self.tokens.weight.device, self.config.max_nodes
        mask = inputs["mask"][:, :n].to(device)
        ids = torch.where(mask, inputs["hashes"][:, :n].to(device) % (self.config.vocab_buckets - 1) + 1, 0)
        x = self.tokens(ids)
        if self.tree is not None:
            x = x + self.tree(inputs["steps"][:, :n].to(device))
        elif self.config.positions == "sequential":
            x = x + sequential_positions(x.shape[1], self.config.width).to(device=device, dtype=x.dtype)
        return self.encoder(x, src_key_padding_mask=~mask), mask

    def payload(self) -> dict:
        """What `save` writes: the format, its version, the configuration and the weights."""
        return {"format": FORMAT, "version": VERSION, "config": self.config.model_dump(), "state": self.state_dict()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """One file, written whole or not at all (`write_checkpoint`)."""
        write_checkpoint(Path(path), self.payload())

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> TreeEncoder:
        """The encoder `save` wrote to `path`, in eval mode. ValueError: `path` is not such a file."""
        payload = read_checkpoint(path, FORMAT, VERSION, "tree-encoder", map_location)
        try:
            model = cls(TreeEncoderConfig.model_validate(payload.get("config")))
            model.load_state_dict(payload["state"], strict=True)
        except (KeyError, ValueError, RuntimeError, TypeError) as err:  # pydantic's ValidationError is a ValueError
            raise ValueError(f"{path}: a broken tree-encoder checkpoint: {err}") from err
        return model.to(map_location).eval()


def write_checkpoint(path: Path, payload: dict) -> None:
    """`payload` to `path` whole or not at all: a temporary file beside it, then renamed over it."""
    handle, partial = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def read_checkpoint(
    path: str | os.PathLike[str], fmt: str, version: int, what: str, map_location: str | torch.device = "cpu"
) -> dict:
    """The dict a checkpoint of `fmt` and `version` holds, read with `weights_only`. ValueError naming the
    path when it is another file; a missing or unreadable file stays an OSError."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - a foreign file trips the unpickler anywhere (a text file: KeyError)
        raise ValueError(f"{path} is not a {what} checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} checkpoint (no format {fmt!r})")
    if payload.get("version") != version:
        raise ValueError(f"{path}: {what} checkpoint version {payload.get('version')!r}, not {version}")
    return payload
