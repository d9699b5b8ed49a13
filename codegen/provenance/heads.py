"""The estimate's fitted head weights as tensors: one non-negative weight per layer and head of a model,
fitted by `bench/provenance.py fit` on MBPP-train prompts and shipped with the technique
(models/techniques/attention_heads/<model>.json) with the command and data that made them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.techniques.multi_head_attention import heads_file as heads_path


def write_weights(model: str, weights: torch.Tensor, meta: dict) -> Path:
    path = heads_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model,
        "layers": weights.shape[0],
        "heads": weights.shape[1],
        "command": "bench/provenance.py fit --mbpp $MBPP",
        "meta": meta,
        "weights": [[round(float(w), 6) for w in row] for row in weights],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def read_weights(model: str) -> torch.Tensor | None:
    """The model's fitted weights (layers x heads), None when none were fitted for it.
    ValueError: the file is there but is not a weights file."""
    path = heads_path(model)
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        weights = torch.tensor(payload["weights"], dtype=torch.float32)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a head-weights file: {err}") from err
    if weights.dim() != 2 or (weights < 0).any():
        raise ValueError(f"{path} does not hold non-negative layers x heads weights")
    return weights
