"""Where the tree encoder's trained checkpoints live, their versions, and which one a tenant uses.

Under the models directory (`Settings.models_path`):

    tree/builtin/v0001.pt            the built-in encoder (`specmill models train-tree`), one file per version
    tree/tenants/<tenant id>/v0001.pt  a tenant's own (`specmill models train-tree --tenant ID`)
    tree/work/<run id>/              a training run's resumable state (removed when the run is done)

A checkpoint (`Selector`) is the encoder in TreeEncoder.save's format plus the combined score's weights and
what it was trained on. The latest version wins. A tenant without a checkpoint, or whose checkpoint cannot
be read, uses the built-in one (and the answer says so); without a built-in one the technique is
unavailable, saying which command makes it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import torch

from codegen.tree.model import FORMAT as ENCODER_FORMAT
from codegen.tree.model import VERSION as ENCODER_VERSION
from codegen.tree.model import TreeEncoder, TreeEncoderConfig, read_checkpoint, write_checkpoint

FORMAT = "specmill-tree-selector"
VERSION = 1
TRAIN_COMMAND = "specmill models train-tree"
_VERSION = re.compile(r"^v(\d{4,})\.pt$")


class TreeUnavailable(Exception):
    """No usable checkpoint: the message says which command makes one."""


# features of the combined score, in this order (codegen/tree/combine.py fits their weights)
FEATURES = ("tree", "mean_logprob", "visible_share", "parses")


@dataclass
class Combiner:
    """A linear score over FEATURES, each standardised by its mean and scale on the fitting data; a missing
    feature (an API model's log-probability, a spec without tests) counts as its mean."""

    weights: list[float]
    bias: float
    means: list[float]
    scales: list[float]

    def __call__(self, features: list[float | None]) -> float:
        total = self.bias
        for value, w, mean, scale in zip(features, self.weights, self.means, self.scales, strict=True):
            total += w * (((mean if value is None else value) - mean) / scale)
        return total

    def as_dict(self) -> dict:
        return {"weights": self.weights, "bias": self.bias, "means": self.means, "scales": self.scales}


@dataclass
class Selector:
    encoder: TreeEncoder
    combiner: Combiner
    meta: dict  # what it was trained on, and how
    label: str  # "builtin v0001", "tenant v0002"

    def payload(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "encoder": self.encoder.payload(),
            "combiner": self.combiner.as_dict(),
            "meta": self.meta,
        }


def root(models_path: Path) -> Path:
    return Path(models_path) / "tree"


def builtin_dir(models_path: Path) -> Path:
    return root(models_path) / "builtin"


def tenant_dir(models_path: Path, tenant_id: UUID) -> Path:
    return root(models_path) / "tenants" / str(UUID(str(tenant_id)))


def versions(directory: Path) -> list[Path]:
    """The checkpoints of a directory, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found)]


def next_version(directory: Path) -> Path:
    existing = versions(directory)
    number = int(_VERSION.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
    return directory / f"v{number:04d}.pt"


def save(selector: Selector, directory: Path) -> Path:
    """The selector as the directory's next version (written whole or not at all)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = next_version(directory)
    write_checkpoint(path, selector.payload())
    return path


def read(path: Path, label: str) -> Selector:
    """The selector in `path`. ValueError: not such a file, or a broken one; OSError: unreadable."""
    payload = read_checkpoint(path, FORMAT, VERSION, "tree-selector")
    try:
        saved = payload["encoder"]
        if saved.get("format") != ENCODER_FORMAT or saved.get("version") != ENCODER_VERSION:
            raise ValueError("its encoder is of another format")
        encoder = TreeEncoder(TreeEncoderConfig.model_validate(saved["config"]))
        encoder.load_state_dict(saved["state"], strict=True)
        combiner = Combiner(**payload["combiner"])
        if not len(combiner.weights) == len(combiner.means) == len(combiner.scales) == len(FEATURES):
            raise ValueError("its combined score has the wrong number of features")
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: a broken tree-selector checkpoint: {err}") from err
    return Selector(encoder.eval(), combiner, dict(payload.get("meta") or {}), label)


_cache: dict[tuple[str, float], Selector] = {}
_lock = threading.Lock()


def _cached(path: Path, label: str) -> Selector:
    key = (str(path), path.stat().st_mtime)
    with _lock:
        if key not in _cache:
            _cache[key] = read(path, label)
        return _cache[key]


def missing(models_path: Path) -> str | None:
    """Why the technique cannot run here (no built-in checkpoint), or None. Reads no weights."""
    if versions(builtin_dir(models_path)):
        return None
    return (
        f"tree_transformers has no built-in checkpoint on this machine (none under {builtin_dir(models_path)}): "
        f"an operator runs `{TRAIN_COMMAND}` once"
    )


def builtin(models_path: Path) -> Selector:
    """The latest built-in selector. TreeUnavailable: none on this machine, or it cannot be read."""
    found = versions(builtin_dir(models_path))
    if not found:
        raise TreeUnavailable(missing(models_path))
    try:
        return _cached(found[-1], f"builtin {found[-1].stem}")
    except (OSError, ValueError) as err:
        raise TreeUnavailable(
            f"the built-in tree checkpoint cannot be used ({err}): run `{TRAIN_COMMAND}` again"
        ) from err


def for_tenant(models_path: Path, tenant_id: UUID | None) -> tuple[Selector, str | None]:
    """The tenant's latest selector, else the built-in one, with a note when the tenant's could not be read."""
    if tenant_id is not None:
        found = versions(tenant_dir(models_path, tenant_id))
        if found:
            try:
                return _cached(found[-1], f"tenant {found[-1].stem}"), None
            except (OSError, ValueError) as err:
                return builtin(
                    models_path
                ), f"the tenant's tree checkpoint cannot be used ({err}): the built-in one scored"
    return builtin(models_path), None


@torch.no_grad()
def encode(encoder: TreeEncoder, codes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each code's score [B] and unit embedding [B, width]."""
    from codegen.tree.model import batch
    from codegen.tree.nodes import linearize

    linears = [linearize(code, encoder.config.max_nodes) for code in codes]
    embedded = encoder.embed(batch(linears))
    scores = encoder.head(embedded).squeeze(-1)
    return scores, torch.nn.functional.normalize(embedded, dim=-1)
