"""Training worker activities (task queue `training`): tree_transformers' encoder (codegen/tree/build.py)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import permanent_failures
from activities.heartbeat import Progress, heartbeating
from infra.training import REPORT_S
from models.activities import TRAIN_TREE
from models.settings import Settings
from models.training import TrainTreeInput, TrainTreeResult
from store import training


class TrainingActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool, self._settings = pool, settings

    @activity.defn(name=TRAIN_TREE.name)
    @permanent_failures
    async def train_tree(self, inp: TrainTreeInput) -> TrainTreeResult:
        """One training run on a thread, heartbeating its phase and step; its work directory (named after
        the workflow run, so that a retry finds it) holds each phase's checkpoint until the run is done. An
        earlier run of the same workflow id that ended without finishing (terminated, or failed) left its
        own directory: it is removed, never resumed with other parameters."""
        from codegen.tree import build, checkpoints  # torch: only where training runs

        models_path = self._settings.models_path
        info = activity.info()
        runs = checkpoints.root(models_path) / "work" / (info.workflow_id or "run")
        work = runs / (info.workflow_run_id or "run")
        for stale in runs.iterdir() if runs.is_dir() else ():
            if stale != work:
                shutil.rmtree(stale, ignore_errors=True)
        progress = Progress()
        try:
            if inp.tenant_id is None:
                if not inp.pools:
                    raise ValueError("the built-in checkpoint needs the MBPP-train candidate pools (bench/pools.py)")
                pools = await asyncio.to_thread(build.read_pools, Path(inp.pools))
                mbpp = Path(inp.mbpp) if inp.mbpp else None
                run = lambda: build.build_builtin(models_path, work, pools, inp.params, mbpp, progress)  # noqa: E731
            else:
                tenant = inp.tenant_id
                codes = await training.tenant_code(self._pool, tenant_id=tenant)
                run = lambda: build.build_tenant(models_path, tenant, work, codes, inp.params, progress)  # noqa: E731
            result = await heartbeating(asyncio.to_thread(run), progress, every=REPORT_S)
        except checkpoints.TreeUnavailable as err:
            raise ApplicationError(str(err), type="TechniqueUnavailable", non_retryable=True) from err
        except (ValueError, OSError) as err:
            raise ApplicationError(f"tree training: {err}", type="TrainingInvalid", non_retryable=True) from err
        shutil.rmtree(runs, ignore_errors=True)
        return TrainTreeResult(**result.model_dump())
