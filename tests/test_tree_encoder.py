"""codegen/tree/: node sequences, tree positions, the encoder, mutants and rewrites."""

from __future__ import annotations

import ast
import difflib
import itertools
import re

import pytest
import torch

from codegen.tree import nodes
from codegen.tree.model import TreeEncoder, TreeEncoderConfig, batch
from codegen.tree.mutants import KINDS, mutants, renameable, rewrites
from codegen.tree.nodes import MAX_CHILDREN, PARSE_ERROR, Linear, linearize
from codegen.tree.positions import sequential_positions, tree_positions

# A site for every mutant kind: comparisons, range(...) and index constants, a call with two different
# arguments, bodies of several statements, operators, and a returned local among others.
FUNCTION = '''
def moving_sums(values, size):
    """The sum of each run of `size` consecutive values."""
    if size <= 0 or size > len(values):
        return []
    total = 0
    for i in range(1, size + 1):
        total += values[i - 1]
    sums = [total]
    for j in range(size, len(values)):
        total = total + values[j] - values[j - size]
        sums.append(total)
    return sums
'''
SMALL = TreeEncoderConfig(width=32, heads=4, ff=64, layers=2)


def _kinds(tokens) -> list[str]:
    return [token.split(":", 1)[0] for token in tokens]


def _changed(a: Linear, b: Linear) -> tuple[list[str], list[str]]:
    """The tokens of `a` and of `b` that a diff of the two sequences does not match."""
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a.tokens, b=b.tokens, autojunk=False).get_opcodes():
        if op != "equal":
            left += a.tokens[i1:i2]
            right += b.tokens[j1:j2]
    return left, right


def _model(seed: int = 0, **overrides) -> TreeEncoder:
    torch.manual_seed(seed)
    return TreeEncoder(SMALL.model_copy(update=overrides)).eval()


# --- node sequences -----------------------------------------------------------------------------------


def test_the_vocabulary():
    source = (
        "import math\n"
        "def f(xs, k):\n"
        "    out = []\n"
        "    for x in xs:\n"
        "        if x < k <= 3 and not x:\n"
        "            out.append(math.floor(x) + 12345)\n"
        "        k += len('ab') - xs.size * -2.5\n"
        "    return out, '', 'a long string', None\n"
    )
    tokens = linearize(source).tokens
    for expected in (
        "alias:math", "FunctionDef:v0", "arg:v1", "arg:v2", "Name:v3", "Compare:<,<=", "Constant:3",
        "BoolOp:and", "UnaryOp:not", "Attribute:append", "Attribute:floor", "Name:math", "BinOp:+",
        "Constant:int+big", "AugAssign:+=", "Name:len", "Constant:str-short", "Attribute:v5", "UnaryOp:-",
        "Constant:float+mid", "Constant:str0", "Constant:str-long", "Constant:None",
    ):  # fmt: skip
        assert expected in tokens, expected
    assert not {"Load", "Store", "Del", "Add", "Lt", "And"} & set(tokens)
    assert tokens[0] == "Module" and "Name:out" not in tokens and "Name:v1" in tokens  # xs: renamed as its arg


def test_paths_are_child_indices_in_pre_order():
    linear = linearize(FUNCTION)
    assert linear.parsed and not linear.truncated and linear.paths[0] == ()
    seen: set[tuple[int, ...]] = {()}
    for path in linear.paths[1:]:
        assert path[:-1] in seen, f"{path}: its parent comes first"
        assert path[-1] == 0 or (*path[:-1], path[-1] - 1) in seen, f"{path}: its elder sibling comes first"
        seen.add(path)
    assert len(seen) == len(linear.paths)


def test_a_child_index_is_clipped_at_max_children():
    args = ", ".join(f"a{i}" for i in range(MAX_CHILDREN + 4))
    linear = linearize(f"f({args})")
    call = linear.tokens.index("Call")
    children = [p[-1] for p in linear.paths if len(p) == len(linear.paths[call]) + 1]
    assert children == [*range(MAX_CHILDREN), *[MAX_CHILDREN - 1] * 5]  # the callee, then 20 arguments


def test_a_docstring_is_dropped_and_other_strings_are_not():
    documented = (
        '"""Module."""\nclass C:\n    """Class."""\n    def m(self):\n        """Method."""\n        return 1\n'
    )
    bare = "class C:\n    def m(self):\n        return 1\n"
    assert linearize(documented) == linearize(bare)
    assert linearize(FUNCTION) == linearize(
        FUNCTION.replace('"""The sum of each run of `size` consecutive values."""', "")
    )
    with_note = "def f():\n    x = 1\n    'a note'\n    return x\n"
    assert linearize(with_note) != linearize(with_note.replace("    'a note'\n", ""))


def test_a_parse_failure_starts_with_parse_error():
    linear = linearize("def f(:\n    return x + 1\n")
    assert linear.tokens[0] == PARSE_ERROR and not linear.parsed and not linear.truncated
    assert linear.paths[0] == () and all(path[:1] == (0,) for path in linear.paths[1:])
    assert linear.tokens[1] == "ts:module" and "ts:binary_operator:+" in linear.tokens  # tree-sitter's tree
    assert linearize(")").tokens[:2] == (PARSE_ERROR, "ts:module")
    assert linearize("x = '\ud800'").tokens[0] == PARSE_ERROR  # a lone surrogate
    assert linearize("-" * 100_000 + "1").tokens[0] == PARSE_ERROR  # too deep for CPython's parser


def test_without_tree_sitter_a_parse_failure_keeps_the_longest_parsing_prefix(monkeypatch):
    monkeypatch.setattr(nodes, "_ts_language", lambda: None)
    prefix = linearize("x = 1\nprint(x)")
    broken = linearize("x = 1\nprint(x)\nif x:\n    y = (\n")
    assert broken.tokens == (PARSE_ERROR, *prefix.tokens) and not broken.parsed
    assert broken.paths == ((), *((0, *path) for path in prefix.paths))
    assert linearize(")").tokens == (PARSE_ERROR, "Module")


def test_truncation_keeps_the_pre_order_prefix():
    full = linearize(FUNCTION)
    cut = linearize(FUNCTION, max_nodes=10)
    assert cut.truncated and not full.truncated and len(full.tokens) > 10
    assert (cut.tokens, cut.paths) == (full.tokens[:10], full.paths[:10])
    assert not linearize(FUNCTION, max_nodes=len(full.tokens)).truncated
    broken = linearize("def f(:\n    return x + 1\n", max_nodes=1)
    assert broken.tokens == (PARSE_ERROR,) and broken.truncated


# --- positions ----------------------------------------------------------------------------------------


def test_tree_positions():
    depth, width = 4, 5
    paths = [(), (0,), (1,), (0, 3), (0, 4), (0, 3, 2, 1), (0, 3, 2, 1, 4, 4), (9,)]
    enc = tree_positions(paths, depth=depth, width=width)
    assert enc.shape == (len(paths), depth * width) and enc.dtype == torch.float32
    assert not enc[0].any(), "the root is all zeros"
    assert enc.sum(1).tolist() == [min(len(p), depth) for p in paths], "one slot per step, none past the end"
    for a, b in [(1, 2), (3, 4)]:
        assert not torch.equal(enc[a], enc[b]), "siblings differ"
    for a, b in itertools.combinations(range(len(paths)), 2):
        shared = next((k for k, (x, y) in enumerate(zip(paths[a], paths[b], strict=False)) if x != y), None)
        shared = min(len(paths[a]), len(paths[b])) if shared is None else shared
        assert torch.equal(enc[a, : shared * width], enc[b, : shared * width]), (paths[a], paths[b])
    assert torch.equal(enc[6], enc[5]), "a path deeper than depth keeps its first depth steps"
    assert enc[7, width - 1] == 1, "a child index past the width is clipped"
    assert not torch.equal(enc[3, width : 2 * width], enc[4, width : 2 * width])


def test_sequential_positions():
    enc = sequential_positions(6, 8)
    assert enc.shape == (6, 8)
    assert enc[0].tolist() == [0.0, 1.0] * 4
    assert len({tuple(row.tolist()) for row in enc}) == 6
    assert sequential_positions(3, 7).shape == (3, 7)


# --- the encoder --------------------------------------------------------------------------------------


def test_batch_pads_to_the_longest():
    short, long = linearize("x = 1"), linearize(FUNCTION)
    inputs = batch([short, long])
    n = len(long.tokens)
    assert inputs["hashes"].shape == inputs["mask"].shape == (2, n)
    assert inputs["mask"].sum(1).tolist() == [len(short.tokens), n]
    assert inputs["steps"].shape[:2] == (2, n) and (inputs["steps"][0, len(short.tokens) :] == -1).all()
    with pytest.raises(ValueError):
        batch([])


def test_shapes_and_determinism():
    inputs = batch([linearize(FUNCTION), linearize("x = 1"), linearize("def f(:")])
    model = _model()
    with torch.no_grad():
        assert model.embed(inputs).shape == (3, SMALL.width)
        assert model.score(inputs).shape == (3,)
        assert torch.equal(_model().score(inputs), model.score(inputs))
        assert not torch.equal(_model(seed=1).score(inputs), model.score(inputs))


@pytest.mark.parametrize("positions", ["tree", "sequential", "none"])
def test_padding_does_not_change_an_embedding(positions):
    model = _model(positions=positions)
    short, long = linearize("x = [a + 1 for a in range(3)]"), linearize(FUNCTION)
    with torch.no_grad():
        alone = model.embed(batch([short]))[0]
        for together in (model.embed(batch([short, long]))[0], model.embed(batch([long, short]))[1]):
            assert torch.allclose(alone, together, atol=1e-5), (alone - together).abs().max()


def test_the_positional_term_is_what_tells_the_modes_apart():
    """Under one seed the three modes share every other weight; so their different embeddings come from the
    positional term, and each mode sees exactly what its positions carry."""
    models = {mode: _model(positions=mode) for mode in ("tree", "sequential", "none")}
    shared = models["none"].state_dict()
    for model in models.values():
        assert all(torch.equal(model.state_dict()[name], value) for name, value in shared.items())
    linear = linearize(FUNCTION)
    order = [0, *reversed(range(1, len(linear.tokens)))]
    shuffled = Linear(tuple(linear.tokens[i] for i in order), tuple(linear.paths[i] for i in order), True, False)
    moved = Linear(linear.tokens, tuple((*p[:-1], p[-1] + 1) if p else p for p in linear.paths), True, False)
    with torch.no_grad():
        out = {mode: model.embed(batch([linear, shuffled, moved])) for mode, model in models.items()}
    for a, b in itertools.combinations(out, 2):
        assert not torch.allclose(out[a][0], out[b][0], atol=1e-4), (a, b)
    same, differ = (lambda x, y: torch.allclose(x, y, atol=1e-5)), (lambda x, y: not torch.allclose(x, y, atol=1e-4))
    assert same(out["none"][0], out["none"][1]) and same(out["none"][0], out["none"][2])
    assert same(out["tree"][0], out["tree"][1]) and differ(out["tree"][0], out["tree"][2])
    assert differ(out["sequential"][0], out["sequential"][1]) and same(out["sequential"][0], out["sequential"][2])


def test_save_and_load_give_identical_scores(tmp_path):
    model = _model(positions="tree")
    with torch.no_grad():
        model.tree.p_logit.fill_(0.7)  # a weight that differs from a fresh model's
    inputs = batch([linearize(FUNCTION), linearize("y = 2")])
    path = tmp_path / "encoder.pt"
    model.save(path)
    loaded = TreeEncoder.load(path)
    assert loaded.config == model.config and not loaded.training
    assert [p.name for p in tmp_path.iterdir()] == ["encoder.pt"]
    with torch.no_grad():
        assert torch.equal(loaded.score(inputs), model.score(inputs))


@pytest.mark.parametrize(
    "payload",
    [
        b"not a checkpoint\n",
        b"",
        b"PK\x03\x04 a broken zip",
        {"weights": torch.zeros(2)},
        {"format": "specmill-tree-encoder", "version": 2, "config": {}, "state": {}},
        {"format": "specmill-tree-encoder", "version": 1, "config": {"width": 30}, "state": {}},
        {"format": "specmill-tree-encoder", "version": 1, "config": {}, "state": {}},
    ],
    ids=["text", "empty", "zip", "other-dict", "version", "config", "state"],
)
def test_loading_anything_else_is_a_value_error_naming_the_file(tmp_path, payload):
    path = tmp_path / "not-an-encoder.pt"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        TreeEncoder.load(path)


# --- mutants and rewrites -----------------------------------------------------------------------------


def test_every_mutant_kind_changes_the_sequence_and_parses():
    original = linearize(FUNCTION)
    found = mutants(FUNCTION, seed=0)
    assert [m.kind for m in found] == list(KINDS)
    for mutant in found:
        assert ast.parse(mutant.source) and mutant.source != ast.unparse(ast.parse(FUNCTION))
        changed = linearize(mutant.source)
        assert changed.parsed and changed.tokens != original.tokens, mutant.kind
        old, new = _changed(original, changed)
        if mutant.kind == "flip_comparison":
            assert len(old) == len(new) == 1 and old[0].startswith("Compare:") and new[0].startswith("Compare:")
        elif mutant.kind == "wrong_operator":
            assert len(old) == len(new) == 1 and _kinds(old) == _kinds(new) != ["Compare"]
        elif mutant.kind in ("off_by_one", "wrong_return"):
            prefix = "Constant" if mutant.kind == "off_by_one" else "Name"
            assert len(old) == len(new) == 1 and _kinds(old) == _kinds(new) == [prefix], (old, new)
        elif mutant.kind == "swap_arguments":
            assert sorted(_kinds(original.tokens)) == sorted(_kinds(changed.tokens))
        else:
            assert len(changed.tokens) < len(original.tokens)
    assert mutants(FUNCTION, seed=0) == found
    assert len({m.source for seed in range(8) for m in mutants(FUNCTION, seed) if m.kind == "wrong_return"}) > 1


@pytest.mark.parametrize(
    ("before", "after"),
    [("<", ">="), (">=", "<"), (">", "<="), ("<=", ">"), ("==", "!="), ("!=", "=="), ("in", "not in"),
     ("not in", "in"), ("is", "is not"), ("is not", "is"), ("+", "-"), ("-", "+"), ("*", "//"), ("//", "*"),
     ("and", "or"), ("or", "and")],
)  # fmt: skip
def test_comparisons_flip_and_operators_go_wrong_as_documented(before, after):
    kind = "wrong_operator" if before in {"+", "-", "*", "//", "and", "or"} else "flip_comparison"
    found = {m.kind: m.source for m in mutants(f"def f(a, b):\n    return a {before} b\n")}
    assert found[kind] == f"def f(a, b):\n    return a {after} b"


def test_kinds_without_a_site_are_absent():
    assert mutants("def f(x):\n    return x\n") == []
    no_constants = FUNCTION.replace("range(1, size + 1)", "range(size)").replace("values[i - 1]", "values[i]")
    assert [m.kind for m in mutants(no_constants)] == [k for k in KINDS if k != "off_by_one"]
    assert mutants("def f(:") == [] and rewrites("def f(:") == []


def test_rewrites_leave_the_sequence_and_the_embedding_unchanged():
    found = rewrites(FUNCTION, seed=3)
    assert len(found) == 3  # renamed, undocumented, both
    renamed = found[0]
    assert "def moving_sums(" in renamed and "len(" in renamed and ".append(" in renamed
    assert not {"values", "size", "total", "sums", "i", "j"} & set(re.findall(r"\w+", found[2]))
    assert "consecutive" not in found[1] and "size" in found[1]
    model = _model()
    original = linearize(FUNCTION)
    for source in found:
        assert (linearize(source).tokens, linearize(source).paths) == (original.tokens, original.paths)
    with torch.no_grad():
        embeddings = model.embed(batch([original, *map(linearize, found)]))
    assert all(torch.equal(embeddings[0], row) for row in embeddings[1:])
    assert rewrites(FUNCTION, seed=3) == found and rewrites(FUNCTION, seed=4)[0] != renamed


def test_only_names_safe_to_rename_are_renamed():
    source = (
        "LIMIT = 3\n"
        "def f(xs, key):\n"
        "    out = [x for x in xs if x < LIMIT]\n"
        "    return sorted(out, key=len), key\n"
        "def g(list):\n"
        "    return helper(out, list)\n"
        "def h(point):\n"
        "    return point.y\n"
    )
    assert renameable(ast.parse(source)) == {"xs", "x", "point"}
    renamed = rewrites(source)[0]
    assert "LIMIT" in renamed and "key=len" in renamed and "helper(out, list)" in renamed and ".y" in renamed
    assert linearize(renamed) == linearize(source)
