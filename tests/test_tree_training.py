"""codegen/tree/train.py: functions, triplets, contrastive training, its checkpoints and resume."""

from __future__ import annotations

import ast

import pydantic
import pytest
import torch

from codegen.tree.model import TreeEncoder, TreeEncoderConfig
from codegen.tree.mutants import mutants, rewrites
from codegen.tree.train import (
    MAX_LINES,
    TrainConfig,
    Triplet,
    functions_of,
    pair_accuracy,
    stdlib_functions,
    train_contrastive,
    triplets,
)
from tests.test_tree_encoder import FUNCTION as ENCODER_FUNCTION

SMALL = TreeEncoderConfig(width=32, heads=4, ff=64, layers=1, max_nodes=128)
FUNCTION = ENCODER_FUNCTION.strip("\n")  # the same function, as functions_of cuts it out
NO_REWRITE = "def call():\n    return combine(1, 2)"  # no local and no docstring, but a swap of arguments
NO_MUTANT = "def nothing():\n    pass"


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the tests share two cores, and a thread count fixed within a test keeps runs comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stdlib_triplets() -> list[Triplet]:
    found = triplets(stdlib_functions(20, seed=0, max_nodes=SMALL.max_nodes), seed=0)
    assert len(found) >= 15
    return found


def _model(seed: int = 0) -> TreeEncoder:
    torch.manual_seed(seed)
    return TreeEncoder(SMALL)


# --- data -----------------------------------------------------------------------------------------------


def test_functions_of_cuts_out_the_top_level_functions():
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    many_nodes = "def many():\n    return [" + ", ".join(f"a{i}" for i in range(200)) + "]"
    source = (
        "import os\n\nCONSTANT = 3\n\n\n"
        f"{FUNCTION}\n\n\n"
        "class Box:\n    def method(self):\n        return 1\n\n\n"
        "@decorated\nasync def fetch(url):\n    return await get(url)\n\n\n"
        f"def too_long():\n{long_body}\n    return x0\n\n\n"
        f"{many_nodes}\n\n\n"
        f"{NO_REWRITE}\n"
    )
    found = functions_of(source, max_nodes=SMALL.max_nodes)
    assert found == [FUNCTION, "async def fetch(url):\n    return await get(url)", NO_REWRITE]
    assert all(isinstance(ast.parse(function).body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) for function in found)
    assert functions_of(many_nodes, max_nodes=1000) == [many_nodes]  # left out above only for its size
    assert functions_of("def broken(:\n    pass") == []


def test_stdlib_functions_are_deterministic_functions_of_the_standard_library():
    first = stdlib_functions(12, seed=1, max_nodes=SMALL.max_nodes)
    assert first == stdlib_functions(12, seed=1, max_nodes=SMALL.max_nodes)
    assert len(first) == 12 == len(set(first))
    assert first != stdlib_functions(12, seed=2, max_nodes=SMALL.max_nodes)
    for function in first:
        assert functions_of(function, max_nodes=SMALL.max_nodes) == [function]
    assert stdlib_functions(0, seed=1) == []


def test_triplets_take_a_rewrite_as_positive_and_the_mutants_as_negatives():
    found = triplets([FUNCTION, NO_MUTANT, NO_REWRITE], seed=5)
    assert [triplet.anchor for triplet in found] == [FUNCTION, NO_REWRITE]  # no mutant: no triplet
    full, bare = found
    expected = mutants(FUNCTION, 5)
    assert len(expected) >= 4
    assert full.negatives == tuple(m.source for m in expected) and full.kinds == tuple(m.kind for m in expected)
    assert full.positive in rewrites(FUNCTION, 5) and full.positive != FUNCTION
    assert rewrites(NO_REWRITE, 5) == [] and bare.positive == NO_REWRITE
    assert bare.kinds and set(bare.negatives) == {m.source for m in mutants(NO_REWRITE, 5)}
    assert triplets([FUNCTION, NO_MUTANT, NO_REWRITE], seed=5) == found


# --- training -------------------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_raises_pair_accuracy(stdlib_triplets, tmp_path):
    model = _model()
    before = pair_accuracy(model, stdlib_triplets)
    seen = []
    config = TrainConfig(steps=30, batch_size=8, lr=3e-3, temperature=0.1, seed=0, checkpoint_every=10)
    result = train_contrastive(model, stdlib_triplets, config, tmp_path / "run.pt", lambda s, loss: seen.append(s))
    after = pair_accuracy(model, stdlib_triplets)
    assert result.steps == 30 and len(result.losses) == 30 and result.final_loss == result.losses[-1]
    assert seen == list(range(1, 31))
    assert sum(result.losses[-5:]) / 5 < 0.8 * sum(result.losses[:5]) / 5
    assert after > before, (before, after)
    assert not model.training
    assert [path.name for path in tmp_path.iterdir()] == ["run.pt"]  # one file, no temporary left


class Killed(Exception):
    pass


def _kill_at(step: int, seen: list[int]):
    def progress(at: int, loss: float) -> None:
        seen.append(at)
        if at == step:
            raise Killed

    return progress


def test_a_killed_run_resumed_ends_with_the_weights_of_an_uninterrupted_one(stdlib_triplets, tmp_path):
    data = stdlib_triplets[:8]
    config = TrainConfig(steps=8, batch_size=4, lr=3e-3, temperature=0.1, seed=3, checkpoint_every=3)
    whole = _model(seed=1)
    expected = train_contrastive(whole, data, config, tmp_path / "whole.pt")

    killed, seen = _model(seed=1), []
    with pytest.raises(Killed):
        train_contrastive(killed, data, config, tmp_path / "killed.pt", _kill_at(5, seen))
    assert seen == [1, 2, 3, 4, 5]
    saved = torch.load(tmp_path / "killed.pt", weights_only=True)
    assert saved["step"] == 3 and len(saved["losses"]) == 3

    torch.manual_seed(1234)  # the resumed run must not depend on the state it starts in
    resumed, seen = _model(seed=2), []
    result = train_contrastive(resumed, data, config, tmp_path / "killed.pt", _kill_at(-1, seen))
    assert seen == [4, 5, 6, 7, 8]  # from the checkpoint at step 3
    assert result.losses == expected.losses and result.steps == 8
    whole_state, resumed_state = whole.state_dict(), resumed.state_dict()
    assert whole_state.keys() == resumed_state.keys()
    for name, tensor in whole_state.items():
        assert torch.equal(tensor, resumed_state[name]), name

    # a finished run resumes to nothing, and its checkpoint holds an encoder in TreeEncoder.save's format
    again = train_contrastive(resumed, data, config, tmp_path / "killed.pt", _kill_at(-1, seen))
    assert again.losses == expected.losses and seen == [4, 5, 6, 7, 8]
    torch.save(torch.load(tmp_path / "whole.pt", weights_only=True)["model"], tmp_path / "encoder.pt")
    loaded = TreeEncoder.load(tmp_path / "encoder.pt")
    for name, tensor in whole_state.items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_a_checkpoint_of_another_configuration_refuses_to_resume(stdlib_triplets, tmp_path):
    data = stdlib_triplets[:4]
    config = TrainConfig(steps=2, batch_size=2, lr=1e-3, seed=0, checkpoint_every=1)
    train_contrastive(_model(), data, config, tmp_path / "run.pt")
    model = _model()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ValueError, match="another training configuration"):
        train_contrastive(model, data, config.model_copy(update={"lr": 2e-3}), tmp_path / "run.pt")
    with pytest.raises(ValueError, match="other triplets"):
        train_contrastive(model, stdlib_triplets[4:8], config, tmp_path / "run.pt")
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in weights.items())
    (tmp_path / "foreign.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a tree-training checkpoint"):
        train_contrastive(model, data, config, tmp_path / "foreign.pt")


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0), ("steps", 100_001), ("batch_size", 0), ("batch_size", 257), ("lr", 1e-6), ("lr", 0.2),
        ("temperature", 0.001), ("temperature", 1.5), ("checkpoint_every", 0), ("checkpoint_every", 10_001),
        ("epochs", 3),
    ],
)  # fmt: skip
def test_train_config_out_of_range_is_a_validation_error(field, value):
    with pytest.raises(pydantic.ValidationError):
        TrainConfig(**{field: value})
