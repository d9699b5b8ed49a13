"""A technique's own work on the generation worker: the functions its module names in `activities`
("module:function"), found and run here for the `technique_step` activity (activities/generation.py) and
for `make eval` alike.

A function takes the step's payload (a JSON object) and a `StepContext`, and returns a JSON object. It
raises `Unavailable` when what it needs is missing on this machine (a trained checkpoint): no retry
changes that, and the generation fails saying what to do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from models.techniques import REGISTRY


class Unavailable(Exception):
    """What the technique needs is missing here; the message says which command makes it."""


@dataclass(frozen=True)
class StepContext:
    models_path: Path
    tenant_id: UUID | None = None
    backend: Callable[[str], Any] | None = None  # the worker's model backends, by model name


def _load(entry: str) -> Callable:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def function(technique: str, step: str) -> Callable[[dict, StepContext], dict]:
    """The function behind a technique's step. ValueError: no such technique or step."""
    entry = REGISTRY[technique].activities.get(step) if technique in REGISTRY else None
    if entry is None:
        raise ValueError(f"no step {step!r} for technique {technique!r}")
    return _load(entry)


def unavailable(technique: str, models_path: Path) -> str | None:
    """Why the technique cannot run on this machine (what it `needs` is missing), or None."""
    entry = REGISTRY[technique].needs
    return _load(entry)(models_path) if entry else None


def run(technique: str, step: str, payload: dict, context: StepContext) -> dict:
    return function(technique, step)(payload, context)
