"""Small candidate pools for the tree encoder's tests, in bench/pools.py's format: each problem's reference
function passes, its mutants (codegen/tree/mutants.py) fail. Deterministic; real code, hand-written here."""

from __future__ import annotations

from codegen.tree.mutants import mutants
from models.training import TreeTraining

FUNCTIONS = [
    "def add(a, b):\n    return a + b\n",
    "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n",
    "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n",
    "def last(xs):\n    return xs[len(xs) - 1]\n",
    "def evens(n):\n    return [i for i in range(n) if i % 2 == 0]\n",
    "def largest(xs):\n    best = xs[0]\n    for x in xs:\n        best = x if x > best else best\n    return best\n",
    "def count(xs, y):\n    n = 0\n    for x in xs:\n        if x == y:\n            n += 1\n    return n\n",
    "def span(xs):\n    return max(xs) - min(xs)\n",
    "def middle(a, b):\n    return (a + b) // 2\n",
]

# small enough to train in seconds on two cores
TINY = TreeTraining(
    contrastive_steps=6,
    batch_size=4,
    ranking_steps=4,
    pools_per_step=2,
    stdlib_functions=12,
    checkpoint_every=2,
)


def pools() -> list[dict]:
    out = []
    for i, source in enumerate(FUNCTIONS):
        broken = [m.source for m in mutants(source, seed=i)][:4]
        candidates = [(source, True)] + [(code, False) for code in broken]
        out.append(
            {
                "task_id": f"toy/{i}",
                "candidates": [
                    {
                        "code": code,
                        "passed": ok,
                        "mean_logprob": -0.3 - 0.1 * j,
                        "visible_passed": int(ok),
                        "visible_total": 1,
                        "parses": True,
                    }
                    for j, (code, ok) in enumerate(candidates)
                ],
            }
        )
    return out
