"""The recipes that make a usable tree checkpoint (codegen/tree/checkpoints.py): the built-in one, and a
tenant's own. The training workflow's activity runs them (activities/training.py); each phase checkpoints
into a work directory, so a run killed at any step and started again ends with the same weights.

Built-in (`build_builtin`), deterministic for a given seed and data:
1. phase 1, contrastive (codegen/tree/train.py) on functions against their mutants: functions of this
   machine's standard library (read now, never written anywhere), the passing candidates of the MBPP-train
   pools, and MBPP's train and validation reference solutions when the MBPP file is given;
2. phase 2, ranking (codegen/tree/rank.py) on the mixed pools of the first two thirds of the MBPP-train
   problems;
3. the combined score's weights, fitted on the pools of the last third (pools the encoder never trained
   on).
No HumanEval or MBPP-test problem is read.

A tenant's (`build_tenant`): the built-in checkpoint fine-tuned with phase 1 on the tenant's own code (its
snippets and the generated code that passed its tests) against their mutants; the combined score's weights
stay the built-in ones. A tenant with too little code gets no checkpoint of its own: the built-in one
keeps serving it, and the result says so.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from uuid import UUID

import torch
from pydantic import BaseModel, Field

from codegen.tree import checkpoints
from codegen.tree.model import TreeEncoder, TreeEncoderConfig
from codegen.tree.rank import RankConfig, fit_combiner, mixed_pools, pool_features, train_ranking
from codegen.tree.train import TrainConfig, functions_of, stdlib_functions, train_contrastive, triplets
from models.training import TreeTraining

MIN_TENANT_FUNCTIONS = 8  # fewer of the tenant's own functions than this: the built-in checkpoint serves it


class BuildResult(BaseModel):
    path: str | None
    label: str
    note: str | None = None
    meta: dict = Field(default_factory=dict)


def phases(params: TreeTraining) -> tuple[TrainConfig, RankConfig]:
    """The two phases' configurations from a run's parameters."""
    every = params.checkpoint_every
    return (
        TrainConfig(
            steps=params.contrastive_steps,
            batch_size=params.batch_size,
            lr=params.lr,
            seed=params.seed,
            checkpoint_every=every,
        ),
        RankConfig(
            steps=params.ranking_steps, pools_per_step=params.pools_per_step, seed=params.seed, checkpoint_every=every
        ),
    )


Progress = Callable[[str, int, float], None]  # (phase, step, loss)


def read_pools(path: Path) -> list[dict]:
    """The pool records of a bench/pools.py file (gzipped when complete, plain while partial)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mbpp_functions(path: Path) -> list[str]:
    """MBPP's train and validation reference solutions (task ids 511-974), as functions."""
    found = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line) if line.strip() else None
            if row and 511 <= int(row["task_id"]) <= 974:
                found += functions_of(row["code"].replace("\r", ""))
    return found


def _passing(records: Sequence[dict]) -> list[str]:
    codes = dict.fromkeys(c["code"] for r in records for c in r.get("candidates", []) if c["passed"])
    return [f for code in codes for f in functions_of(code)]


def build_builtin(
    models_path: Path,
    work: Path,
    pools: Sequence[dict],
    params: TreeTraining,
    mbpp: Path | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Train the built-in checkpoint and save it as the next built-in version."""
    work.mkdir(parents=True, exist_ok=True)
    cut = (2 * len(pools)) // 3
    train_part, fit_part = pools[:cut], pools[cut:]
    sources = list(dict.fromkeys(stdlib_functions(params.stdlib_functions, params.seed) + _passing(train_part)))
    if mbpp is not None:
        sources = list(dict.fromkeys(sources + mbpp_functions(mbpp)))
    contrastive, ranking = phases(params)
    torch.manual_seed(params.seed)
    model = TreeEncoder(TreeEncoderConfig(positions=params.positions))
    data = triplets(sources, params.seed)
    first = train_contrastive(model, data, contrastive, work / "phase1.pt", _phase(progress, "contrastive"))
    ranked = mixed_pools(train_part)
    if not ranked or not mixed_pools(fit_part):
        raise ValueError(
            f"the pools mix passing and failing candidates in {len(ranked)} problem(s) of the first two thirds and "
            f"{len(mixed_pools(fit_part))} of the last third: each part needs at least one (more pools: bench/pools.py)"
        )
    second = train_ranking(model, ranked, ranking, work / "phase2.pt", _phase(progress, "ranking"))
    combiner = fit_combiner(pool_features(model, fit_part))
    meta = {
        "kind": "builtin",
        "params": params.model_dump(),
        "phase1": {
            "functions": len(sources),
            "triplets": len(data),
            "final_loss": round(first.final_loss, 4),
            "resumed_from": first.resumed_from,
        },
        "phase2": {
            "pools": len(train_part),
            "mixed_pools": len(ranked),
            "final_loss": round(second.final_loss, 4),
            "resumed_from": second.resumed_from,
        },
        "combiner": {"pools": len(fit_part), "features": list(checkpoints.FEATURES)},
        "mbpp_solutions": mbpp is not None,
    }
    selector = checkpoints.Selector(model, combiner, meta, "builtin")
    path = checkpoints.save(selector, checkpoints.builtin_dir(models_path))
    return BuildResult(path=str(path), label=f"builtin {path.stem}", meta=meta)


def build_tenant(
    models_path: Path,
    tenant_id: UUID,
    work: Path,
    codes: Sequence[str],
    params: TreeTraining,
    progress: Progress | None = None,
) -> BuildResult:
    """Fine-tune the built-in checkpoint on a tenant's own code and save it as the tenant's next version;
    with too little code, nothing is trained and the built-in one keeps serving the tenant."""
    base = checkpoints.builtin(models_path)  # TreeUnavailable without one
    functions = list(dict.fromkeys(f for code in codes for f in functions_of(code)))
    data = triplets(functions, params.seed)
    if len(data) < MIN_TENANT_FUNCTIONS:
        return BuildResult(
            path=None,
            label=base.label,
            note=f"the tenant has {len(data)} function(s) of its own to train on (snippets and code that passed its "
            f"tests), fewer than {MIN_TENANT_FUNCTIONS}: the built-in checkpoint ({base.label}) keeps serving it",
        )
    work.mkdir(parents=True, exist_ok=True)
    model = TreeEncoder(base.encoder.config)
    model.load_state_dict(base.encoder.state_dict())
    contrastive, _ = phases(params)
    result = train_contrastive(model, data, contrastive, work / "phase1.pt", _phase(progress, "contrastive"))
    meta = {
        "kind": "tenant",
        "base": base.label,
        "params": params.model_dump(),
        "phase1": {
            "functions": len(functions),
            "triplets": len(data),
            "final_loss": round(result.final_loss, 4),
            "resumed_from": result.resumed_from,
        },
    }
    directory = checkpoints.tenant_dir(models_path, tenant_id)
    path = checkpoints.save(checkpoints.Selector(model, base.combiner, meta, "tenant"), directory)
    return BuildResult(path=str(path), label=f"tenant {path.stem}", meta=meta)


def _phase(progress: Progress | None, name: str) -> Callable[[int, float], None] | None:
    if progress is None:
        return None
    return lambda step, loss: progress(name, step, loss)
