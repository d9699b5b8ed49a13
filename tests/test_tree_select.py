"""tree_transformers' checkpoints, scoring and training recipes, on small real training runs
(codegen/tree/checkpoints.py, select.py, rank.py, build.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from codegen.technique_steps import StepContext, Unavailable, unavailable
from codegen.tree import build, checkpoints, select
from codegen.tree.rank import RankConfig, mixed_pools, train_ranking
from codegen.tree.train import TrainConfig
from tests.techniques import TREE
from tests.tree_pools import FUNCTIONS, TINY, pools


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models directory with one built-in checkpoint, trained here on the toy pools."""
    root = tmp_path_factory.mktemp("models")
    torch.set_num_threads(1)
    build.build_builtin(root, root / "work", pools(), TINY)
    return root


def test_no_builtin_checkpoint_is_unavailable_naming_the_command(tmp_path):
    why = unavailable(TREE, tmp_path)
    assert why and "specmill models train-tree" in why
    with pytest.raises(Unavailable, match="specmill models train-tree"):
        select.score({"candidates": [{"code": "x = 1"}]}, StepContext(tmp_path))


def test_the_builtin_build_writes_a_versioned_checkpoint_with_its_data(models):
    assert unavailable(TREE, models) is None
    assert [p.name for p in checkpoints.versions(checkpoints.builtin_dir(models))] == ["v0001.pt"]
    selector = checkpoints.builtin(models)
    assert selector.label == "builtin v0001"
    assert selector.meta["phase2"]["mixed_pools"] == 6 and selector.meta["combiner"]["pools"] == 3
    assert len(selector.combiner.weights) == len(checkpoints.FEATURES)


def test_score_gives_every_candidate_a_tree_score_and_a_selection_score(models):
    candidates = [
        {"code": FUNCTIONS[0], "mean_logprob": -0.2, "visible_share": 1.0, "parses": True},
        {"code": "def add(a, b):\n    return a - b\n", "mean_logprob": -0.9, "visible_share": 0.0, "parses": True},
        {"code": "def add(a, b) return", "mean_logprob": None, "visible_share": None, "parses": False},
    ]
    out = select.score({"candidates": candidates}, StepContext(models))
    assert out["checkpoint"] == "builtin v0001" and out["note"] is None
    assert len(out["tree"]) == len(out["selection"]) == 3
    alone = select.score({"candidates": candidates, "selector": "tree"}, StepContext(models))
    assert alone["selection"] == alone["tree"] == out["tree"]
    # the visible tests and the log-probability count: the passing candidate beats the one that fails them
    assert out["selection"][0] > out["selection"][1]


def test_a_missing_feature_counts_as_its_mean():
    combiner = checkpoints.Combiner(
        weights=[1.0, 2.0, 0.0, 0.0], bias=0.0, means=[0.5, -1.0, 0.5, 1.0], scales=[1.0] * 4
    )
    assert combiner([0.5, None, None, None]) == 0.0
    assert combiner([1.5, -0.5, None, 1.0]) == pytest.approx(1.0 + 2.0 * 0.5)


def test_rerank_orders_snippets_by_structural_similarity_to_the_draft(models):
    draft = FUNCTIONS[2]
    renamed = "def summed(values):\n    acc = 0\n    for v in values:\n        acc += v\n    return acc\n"
    other = "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n"
    out = select.rerank({"draft": draft, "snippets": [other, renamed]}, StepContext(models))
    # identifiers are renamed by first occurrence: the renamed loop is the draft's tree exactly
    assert out["order"] == [1, 0]
    assert out["similarity"][1] == pytest.approx(1.0, abs=1e-4) and out["similarity"][0] < out["similarity"][1]


def test_a_corrupt_tenant_checkpoint_falls_back_to_the_builtin_one_and_says_so(models):
    tenant = uuid.uuid4()
    directory = checkpoints.tenant_dir(models, tenant)
    directory.mkdir(parents=True)
    (directory / "v0001.pt").write_bytes(b"not a checkpoint")
    out = select.score({"candidates": [{"code": FUNCTIONS[0]}]}, StepContext(models, tenant))
    assert out["checkpoint"] == "builtin v0001"
    assert "cannot be used" in out["note"] and "built-in" in out["note"]


def test_a_tenant_with_too_little_code_keeps_the_builtin_checkpoint(models, tmp_path):
    result = build.build_tenant(models, uuid.uuid4(), tmp_path / "work", [FUNCTIONS[0]], TINY)
    assert result.path is None and result.label == "builtin v0001"
    assert "keeps serving it" in result.note


def test_a_tenant_checkpoint_is_the_builtin_fine_tuned_and_serves_the_tenant(models, tmp_path):
    tenant = uuid.uuid4()
    codes = [*FUNCTIONS, "def double(x):\n    return 2 * x\n", "def neg(x):\n    return -x if x > 0 else x\n"]
    result = build.build_tenant(models, tenant, tmp_path / "work", codes, TINY)
    assert result.label == "tenant v0001" and Path(result.path).exists()
    assert result.meta["base"] == "builtin v0001"
    out = select.score({"candidates": [{"code": FUNCTIONS[0]}]}, StepContext(models, tenant))
    assert out["checkpoint"] == "tenant v0001" and out["note"] is None
    other = select.score({"candidates": [{"code": FUNCTIONS[0]}]}, StepContext(models, uuid.uuid4()))
    assert other["checkpoint"] == "builtin v0001"  # another tenant's checkpoint is never used


def test_mixed_pools_keeps_only_pools_with_both_outcomes():
    records = pools() + [{"task_id": "all-fail", "candidates": [{"code": "x", "passed": False}]}]
    assert len(mixed_pools(records)) == len(FUNCTIONS)


def test_ranking_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    from codegen.tree.model import TreeEncoder, TreeEncoderConfig

    data = mixed_pools(pools())
    config = TreeEncoderConfig(width=32, heads=2, ff=32, layers=1)

    def fresh():
        torch.manual_seed(0)
        return TreeEncoder(config)

    whole = fresh()
    train_ranking(whole, data, RankConfig(steps=4, pools_per_step=2, checkpoint_every=2), tmp_path / "a.pt")
    part = fresh()
    with pytest.raises(KeyboardInterrupt):

        def stop(step, loss):
            if step == 2:
                raise KeyboardInterrupt  # a kill right after the step-2 checkpoint

        train_ranking(part, data, RankConfig(steps=4, pools_per_step=2, checkpoint_every=2), tmp_path / "b.pt", stop)
    resumed = fresh()
    result = train_ranking(resumed, data, RankConfig(steps=4, pools_per_step=2, checkpoint_every=2), tmp_path / "b.pt")
    assert result.steps == 4
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_ranking_loss_falls_as_it_trains(tmp_path):
    from codegen.tree.model import TreeEncoder

    torch.manual_seed(0)
    model = TreeEncoder()
    data = mixed_pools(pools())
    result = train_ranking(model, data, RankConfig(steps=30, pools_per_step=4, lr=1e-3), tmp_path / "r.pt")
    assert result.losses[-1] < result.losses[0]


def test_training_parameters_out_of_range_are_refused():
    from pydantic import ValidationError

    from models.training import TreeTraining

    with pytest.raises(ValidationError):
        TreeTraining(contrastive_steps=0)
    with pytest.raises(ValidationError):
        TreeTraining(positions="diagonal")
    assert build.phases(TINY)[0] == TrainConfig(steps=6, batch_size=4, lr=TINY.lr, seed=0, checkpoint_every=2)
