"""Choosing among candidates, measured on identical pools (`make eval-selectors`).

    .venv/bin/python bench/choose.py [--pools docs/eval/pools/humaneval-...jsonl.gz]
        [--checkpoint LABEL=PATH ...] [--mbpp PATH] [--out docs/eval/selectors-<pools>.json]

Every selector picks one candidate of each pool (bench/pools.py: greedy plus 10 samples per problem) and is
scored by whether that candidate passes the problem's hidden tests:
- random: the pool's share of passing candidates (the analytic expectation of a random pick);
- greedy: the greedy candidate;
- mean log-probability;
- visible tests, then mean log-probability: the primary baseline;
- tree: the tree encoder's score alone, and combined: the shipped combined score (codegen/tree/checkpoints.py),
  for each checkpoint given (default: the built-in one of the models directory; `--checkpoint` adds the
  ablations, e.g. sequential=.specmill/bench/tree-sequential/tree/builtin/v0001.pt);
- oracle: any passing candidate.
Reported: pass@1, the share of the random-to-oracle gap closed, the pools that mix passing and failing
candidates (only they can tell selectors apart), the mean AUROC within those pools, the tree's cost per
candidate, and against the primary baseline a paired bootstrap 95% interval of the difference (2000
resamples, seed 0) and the exact McNemar p.

With `--mbpp`, the snippet reranker is measured too: each passing candidate of the pools of the last third
of the MBPP-train problems (never trained on) queries MBPP's train and validation reference solutions, and
the rank of its own problem's solution is reported (top-1, mean reciprocal rank) for each checkpoint's
encoder (cosine similarity) against a bag of AST node n-grams (n = 1..3, cosine on counts) over the same
node sequences. A checkpoint trained with --mbpp has seen the corpus's solutions in its first phase; the
queries it has not seen.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codegen.evaluate import mcnemar
from codegen.tree import checkpoints
from codegen.tree.build import read_pools
from codegen.tree.nodes import linearize
from codegen.tree.select import features
from models.settings import Settings

PRIMARY = "visible tests, then mean log-probability"
ORDER = "parses, visible tests, then candidate order"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pools", type=Path, default=None, help="a bench/pools.py file (default: the HumanEval pools)")
    p.add_argument("--checkpoint", action="append", default=[], help="LABEL=PATH of another tree checkpoint")
    p.add_argument("--mbpp", type=Path, default=None, help="MBPP's jsonl: measure the snippet reranker too")
    p.add_argument("--train-pools", type=Path, default=None, help="the MBPP-train pools (snippet reranking)")
    p.add_argument(
        "--ablate",
        action="store_true",
        help="also train the encoder with sequential positions and with none, with the built-in one's parameters "
        "and data (--train-pools, --mbpp), into .specmill/bench/tree-<positions>/, and compare them",
    )
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def _share(c: dict) -> float:
    return c["visible_passed"] / c["visible_total"] if c.get("visible_total") else 0.0


def _logprob(c: dict) -> float:
    return c["mean_logprob"] if c.get("mean_logprob") is not None else -math.inf


def auroc(scores: list[float], passed: list[bool]) -> float:
    """The probability that a passing candidate scores above a failing one (ties count half)."""
    pos = [s for s, ok in zip(scores, passed, strict=True) if ok]
    neg = [s for s, ok in zip(scores, passed, strict=True) if not ok]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def bootstrap(a: list[bool], b: list[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A paired bootstrap 95% interval of mean(a) - mean(b), in problems."""
    rng = random.Random(seed)
    n, diffs = len(a), []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(sum(a[i] - b[i] for i in idx) / n)
    diffs.sort()
    return round(diffs[int(0.025 * resamples)], 4), round(diffs[int(0.975 * resamples) - 1], 4)


def tree_scores(
    selector: checkpoints.Selector, records: list[dict]
) -> tuple[list[list[float]], list[list[float]], float]:
    """Per pool, each candidate's tree score and combined score; and the seconds per candidate."""
    trees, combined, started, count = [], [], time.perf_counter(), 0
    for r in records:
        cands = r["candidates"]
        scores, _ = checkpoints.encode(selector.encoder, [c["code"] for c in cands])
        tree = [float(s) for s in scores]
        trees.append(tree)
        combined.append(
            [
                selector.combiner(features({**c, "visible_share": _share(c) if c.get("visible_total") else None}, t))
                for c, t in zip(cands, tree, strict=True)
            ]
        )
        count += len(cands)
    return trees, combined, (time.perf_counter() - started) / max(1, count)


def evaluate(records: list[dict], selectors: dict[str, list[list[float]]], cost: dict[str, float]) -> dict:
    records = [r for r in records if r["candidates"]]
    passed = [[bool(c["passed"]) for c in r["candidates"]] for r in records]
    mixed = [i for i, p in enumerate(passed) if any(p) and not all(p)]
    rand = sum(sum(p) / len(p) for p in passed) / len(records)
    oracle = sum(any(p) for p in passed) / len(records)
    base = {
        "greedy": [[1.0] + [0.0] * (len(r["candidates"]) - 1) for r in records],
        "mean log-probability": [[_logprob(c) for c in r["candidates"]] for r in records],
        PRIMARY: [[_share(c) * 1e3 + max(_logprob(c), -1e2) for c in r["candidates"]] for r in records],
        # the rule before: parses, visible tests, then the earlier candidate (greedy first)
        ORDER: [
            [_share(c) * 1e3 + (c.get("parses") is True) * 1e4 - i for i, c in enumerate(r["candidates"])]
            for r in records
        ],
    }
    every = {**base, **selectors}
    chosen = {name: [p[_pick_scores(s)] for p, s in zip(passed, scores, strict=True)] for name, scores in every.items()}
    primary = chosen[PRIMARY]
    rows = {
        "random": {"pass@1": round(rand, 4), "solved": round(rand * len(records), 1)},
        **{
            name: {
                "pass@1": round(sum(picks) / len(records), 4),
                "solved": sum(picks),
                "gap_closed": round((sum(picks) / len(records) - rand) / (oracle - rand), 3) if oracle > rand else None,
                "auroc_within_mixed": round(sum(auroc(every[name][i], passed[i]) for i in mixed) / len(mixed), 3)
                if mixed and name != "greedy"
                else None,
                "vs_primary": None
                if name == PRIMARY
                else {
                    "difference_ci95": bootstrap(picks, primary),
                    "mcnemar_p": round(mcnemar(picks, primary), 4),
                    "wins": sum(a and not b for a, b in zip(picks, primary, strict=True)),
                    "losses": sum(b and not a for a, b in zip(picks, primary, strict=True)),
                },
                "seconds_per_candidate": round(cost[name], 5) if name in cost else None,
            }
            for name, picks in chosen.items()
        },
        "oracle": {"pass@1": round(oracle, 4), "solved": sum(any(p) for p in passed)},
    }
    return {"problems": len(records), "mixed_pools": len(mixed), "selectors": rows}


def _pick_scores(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def ngrams(code: str, n_max: int = 3) -> Counter:
    tokens = linearize(code).tokens
    return Counter(tuple(tokens[i : i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1))


def _cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def snippet_ranks(encoders: dict[str, checkpoints.Selector], train_pools: list[dict], mbpp: Path) -> dict:
    """The rank of a query's own reference solution among MBPP train and validation's (see the docstring),
    for each checkpoint's encoder ("encoder (<label>)") and for the bag of AST n-grams."""
    rows = [json.loads(line) for line in mbpp.read_text().splitlines() if line.strip()]
    corpus = [(f"MBPP/{r['task_id']}", r["code"].replace("\r", "")) for r in rows if 511 <= int(r["task_id"]) <= 974]
    held_out = train_pools[(2 * len(train_pools)) // 3 :]
    queries = [(r["task_id"], c["code"]) for r in held_out for c in r["candidates"] if c["passed"]]
    queries = list(dict.fromkeys(queries))
    if not queries:
        return {"queries": 0}
    codes = [code for _, code in corpus]
    corpus_vecs = {label: checkpoints.encode(sel.encoder, codes)[1] for label, sel in encoders.items()}
    corpus_grams = [ngrams(code) for _, code in corpus]
    out: dict[str, list[int]] = {f"encoder ({label})": [] for label in encoders} | {"ast n-grams": []}
    for task, code in queries:
        target = next(i for i, (t, _) in enumerate(corpus) if t == task)
        scored = {}
        for label, sel in encoders.items():
            _, q = checkpoints.encode(sel.encoder, [code])
            scored[f"encoder ({label})"] = (corpus_vecs[label] @ q[0]).tolist()
        grams = ngrams(code)
        scored["ast n-grams"] = [_cosine(grams, g) for g in corpus_grams]
        for name, scores in scored.items():
            out[name].append(1 + sum(s > scores[target] for s in scores))
    return {
        "queries": len(queries),
        "corpus": len(corpus),
        **{
            name: {
                "top1": round(sum(r == 1 for r in ranks) / len(ranks), 3),
                "mrr": round(sum(1 / r for r in ranks) / len(ranks), 3),
            }
            for name, ranks in out.items()
        },
    }


def ablations(builtin: checkpoints.Selector, train_pools: Path | None, mbpp: Path | None) -> dict:
    """The encoder at equal size and data, with sequential positions and with none (trained once, kept)."""
    from codegen.tree.build import build_builtin
    from models.training import TreeTraining

    if train_pools is None:
        raise SystemExit("--ablate needs --train-pools (and --mbpp if the built-in one was trained with it)")
    params = TreeTraining.model_validate(builtin.meta["params"])
    records = read_pools(train_pools)
    if len(records) != builtin.meta["phase2"]["pools"] + builtin.meta["combiner"]["pools"]:
        raise SystemExit(f"{train_pools} is not the data the built-in checkpoint was trained on")
    if builtin.meta.get("mbpp_solutions") and mbpp is None:
        raise SystemExit("the built-in checkpoint read MBPP's solutions: give --mbpp too")
    out = {}
    for positions in ("sequential", "none"):
        root = ROOT / ".specmill" / "bench" / f"tree-{positions}"
        if not checkpoints.versions(checkpoints.builtin_dir(root)):
            variant = params.model_copy(update={"positions": positions})
            build_builtin(root, root / "work", records, variant, mbpp)
        out["no positions" if positions == "none" else f"{positions} positions"] = checkpoints.builtin(root)
    return out


def render(result: dict) -> str:
    """The selectors as a markdown table (docs/generator.md shows it)."""
    lines = [
        "| selector | pass@1 (solved) | gap closed | AUROC within mixed pools | vs primary: difference, 95% CI | "
        "McNemar p (+/-) | s per candidate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in result["selectors"].items():
        versus = row.get("vs_primary")
        diff = f"{versus['difference_ci95'][0]:+.3f} to {versus['difference_ci95'][1]:+.3f}" if versus else "-"
        test = f"{versus['mcnemar_p']} (+{versus['wins']} -{versus['losses']})" if versus else "-"
        cost = row.get("seconds_per_candidate")
        lines.append(
            f"| {name} | {row['pass@1']:.3f} ({row['solved']}) | {_or_dash(row.get('gap_closed'))} | "
            f"{_or_dash(row.get('auroc_within_mixed'))} | {diff} | {test} | {_or_dash(cost)} |"
        )
    return "\n".join(lines)


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    pools_path = args.pools or next(iter(sorted((ROOT / "docs" / "eval" / "pools").glob("humaneval-*.jsonl*"))))
    records = read_pools(pools_path)
    models_path = Settings().models_path
    found = {"built-in": checkpoints.builtin(models_path)}
    for spec in args.checkpoint:
        label, _, path = spec.partition("=")
        found[label] = checkpoints.read(Path(path), label)
    if args.ablate:
        found.update(ablations(found["built-in"], args.train_pools, args.mbpp))
    selectors, cost, meta = {}, {}, {}
    for label, selector in found.items():
        trees, combined, seconds = tree_scores(selector, records)
        selectors[f"tree ({label})"], selectors[f"combined ({label})"] = trees, combined
        cost[f"tree ({label})"] = cost[f"combined ({label})"] = seconds
        meta[label] = {"checkpoint": selector.label, "meta": selector.meta}
    result = {
        "pools": pools_path.name,
        "checkpoints": meta,
        **evaluate(records, selectors, cost),
    }
    if args.mbpp and args.train_pools:
        result["snippets"] = snippet_ranks(found, read_pools(args.train_pools), args.mbpp)
    out = args.out or ROOT / "docs" / "eval" / f"selectors-{pools_path.name.split('.')[0]}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"mixed pools: {result['mixed_pools']} of {result['problems']}; snippets: {result.get('snippets')}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
