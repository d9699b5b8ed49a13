"""Training contracts: the tree encoder of tree_transformers (models/techniques/tree_transformers.py), trained
by TrainTreeWorkflow on the `training` task queue (workflows/training.py, activities/training.py)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from models.common import Strict

TRAIN_TREE_WORKFLOW = "TrainTreeWorkflow"


class TreeTraining(Strict):
    """A training run's parameters, each with its range (out of range: a 422, or the CLI's error)."""

    contrastive_steps: int = Field(default=800, ge=1, le=20_000, description="phase 1: steps of the contrastive loss")
    batch_size: int = Field(default=16, ge=2, le=128, description="phase 1: functions per step, each with its mutants")
    lr: float = Field(default=3e-4, ge=1e-5, le=1e-2, description="phase 1: AdamW's learning rate")
    ranking_steps: int = Field(default=300, ge=1, le=20_000, description="phase 2: steps of the pairwise ranking loss")
    pools_per_step: int = Field(default=8, ge=1, le=64, description="phase 2: candidate pools per step")
    stdlib_functions: int = Field(default=800, ge=0, le=20_000, description="phase 1: standard-library functions")
    positions: Literal["tree", "sequential", "none"] = Field(
        default="tree", description="the encoder's positional encodings (sequential and none: the ablations)"
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    checkpoint_every: int = Field(default=50, ge=1, le=10_000, description="steps between the resumable checkpoints")


class TrainTreeInput(BaseModel):
    """`tenant_id` None: the built-in checkpoint (from `pools` and, optionally, MBPP's file at `mbpp`);
    a tenant: its own, fine-tuned from the built-in one on its code."""

    tenant_id: UUID | None = None
    params: TreeTraining = Field(default_factory=TreeTraining)
    pools: str | None = Field(default=None, description="The MBPP-train candidate pools (bench/pools.py's file)")
    mbpp: str | None = Field(default=None, description="MBPP's jsonl: its train and validation solutions join phase 1")


class TrainTreeResult(BaseModel):
    path: str | None = Field(description="The checkpoint written (None: none, see `note`)")
    label: str = Field(description="The checkpoint that now serves: builtin vNNNN or tenant vNNNN")
    note: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class TrainTreeRequest(Strict):
    """POST /api/techniques/tree_transformers/train: a tenant's own checkpoint from its knowledge base."""

    params: TreeTraining = Field(default_factory=TreeTraining)
