"""multi_head_attention's figures (`make bench-provenance`): the estimate's head weights fitted on MBPP
train, then every method's faithfulness measured on HumanEval against exact leave-one-out.

    .venv/bin/python bench/provenance.py fit --mbpp PATH [--limit 80] [--threads 1]
    .venv/bin/python bench/provenance.py eval --mbpp PATH [--limit 60] [--threads 1]

Fixed before any result was read:
- A case is a real labelled prompt of the product (codegen/prompts.build_messages): a `python-function`
  spec, its visible tests (HumanEval: the first three examples of the docstring, problems with fewer than
  two are skipped; MBPP: its three asserts), the two snippets the product's MiniLM finds for the spec's
  retrieval query in MBPP's train split (never the problem's own solution), and, for every second case,
  a repair round: the greedy answer ran against the visible tests in the sandbox and, when it failed, the
  failure is told as the product's repair rounds tell it and the model answers again. The answer
  explained is the model's own greedy answer to that prompt (the default model, local_llama).
- Ground truth: per line of the code and span, the drop of the line's log-probability (the sum over its
  tokens) when that span alone is removed (codegen/provenance/exact.py).
- Methods: `estimate` (the fitted head weights), `mean` (over layers and heads), `rollout`; baselines:
  a random span, a length-matched random span (the span whose length is nearest the estimate's choice,
  other than it), the longest span, the lexical overlap of the line's words with the span's.
- Per line: the drop when the method's top span is removed (top-1), and its top two together (top-2, one
  more pass per distinct pair); hit@1 against the leave-one-out argmax; Spearman against leave-one-out.
  Lines are averaged within a case, cases weigh equally; 95% intervals by a paired bootstrap over cases
  (2000 resamples, seed 0).
- Acceptance: the estimate beats lexical overlap and the mean of attention on the top-1 drop with an
  interval excluding 0, and reaches at least 70% of leave-one-out's own top-1 drop (the argmax's) at a
  fraction of its cost. Otherwise the estimate is not offered, only the exact method.

`fit` writes codegen/provenance/heads/<model>.json (one non-negative weight per layer and head, fitted
by least squares to the leave-one-out line drops of the MBPP-train cases: the command above reproduces
it). `eval` writes docs/eval/provenance-<model>.json and prints the table. Cases are cached one per line
under .specmill/bench/provenance/ so a stopped run continues.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from codegen import evaluate as ev  # noqa: E402
from codegen.base import GenerationParams, Message, Span  # noqa: E402
from codegen.local_llama import render_chat  # noqa: E402
from codegen.manager import ModelManager  # noqa: E402
from codegen.prompts import build_messages, extract_code  # noqa: E402
from codegen.provenance import attribution  # noqa: E402
from codegen.provenance.explain import explain, removal_drops  # noqa: E402
from codegen.provenance.heads import heads_path, write_weights  # noqa: E402
from models.builtin_templates import PYTHON_FUNCTION  # noqa: E402
from models.settings import Settings  # noqa: E402
from models.spec_view import spec_view  # noqa: E402
from sandbox import SandboxConfig, run_tests  # noqa: E402

MAX_NEW_TOKENS = 256
BASELINES = ("random span", "length-matched random span", "longest span", "lexical overlap")
METHODS = ("estimate", "mean", "rollout")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


@dataclass
class Case:
    task_id: str
    values: dict
    prefix: str
    references: list[tuple[str, str]]
    repair: bool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["fit", "eval"])
    p.add_argument("--mbpp", type=Path, required=True, help="path to mbpp.jsonl (the snippets' corpus, MBPP train)")
    p.add_argument("--limit", type=int, default=None, help="cases (default: fit 80, eval 60)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "eval")
    return p.parse_args(argv)


def cases(what: str, mbpp: Path, limit: int) -> list[Case]:
    retriever = ev.MbppRetriever(mbpp)
    out: list[Case] = []
    if what == "eval":
        problems = [
            (p.task_id, {**p.values, "tests": p.visible[:3]}, p.prefix)
            for p in ev.load_humaneval()
            if len(p.visible) >= 2
        ]
    else:
        problems = [(p.task_id, p.values, p.prefix) for p in ev.load_mbpp(mbpp, "train")]
    for task_id, values, prefix in problems[:limit]:
        query = spec_view(PYTHON_FUNCTION, values).query()
        found = [(i, c) for i, c in retriever.search(query, 3) if i != task_id][:2]
        out.append(Case(task_id, values, prefix, found, repair=len(out) % 2 == 1))
    return out


def _answer(backend, messages) -> tuple[str, str]:
    text = backend.chat(messages, GenerationParams(max_new_tokens=MAX_NEW_TOKENS)).text
    return text, extract_code(text)


def feedback_of(case: Case, code: str, sandbox: SandboxConfig) -> str | None:
    """The failure a repair round tells the model (models/outcome.feedback_of's shape), None: it passed."""
    program = f"{case.prefix}\n\n{code}\n" if case.prefix else code + "\n"
    run = run_tests(program, case.values["tests"], timeout_s=10.0, config=sandbox)
    if run.passed:
        return None
    failed = run.failed_test or {}
    test, error = failed.get("test"), ev.failure(run)
    if test and failed.get("actual") is not None and failed.get("expected") is not None:
        message = f"{test} failed: expected {failed['expected']}, got {failed['actual']}"
    else:
        message = f"{test} failed: {error}" if test else (error or run.status)
    return f"status: {run.status}\n{message}"


def measure(backend, case: Case, sandbox: SandboxConfig) -> dict | None:
    """One case's answer and, per line and span, every method's score and the leave-one-out drops."""
    view = spec_view(PYTHON_FUNCTION, case.values)
    messages = build_messages(view, references=case.references)
    text, code = _answer(backend, messages)
    feedback = None
    if case.repair and code.strip():
        feedback = feedback_of(case, code, sandbox)
        if feedback:
            messages = build_messages(view, references=case.references, feedback=feedback)
            text, code = _answer(backend, messages)
    if not code.strip() or text.find(code) < 0:
        return None
    loo = backend.explain(messages, text, code, "exact")
    if not loo.lines or not loo.spans:
        return None
    attention = backend.explain(messages, text, code, "mean")
    rollout = backend.explain(messages, text, code, "rollout")
    assert attention.mass is not None  # the mean keeps the per-head masses
    mass = attribution.by_line(attention.mass, attention.token_lines, total=True)
    lines = list(loo.lines)
    code_lines = code.split("\n")
    return {
        "task_id": case.task_id,
        "repair": feedback is not None,
        "spans": [{"label": s.label, "tokens": s.end - s.start} for s in loo.spans],
        "span_text": {s.label: _span_text(messages, s.label) for s in loo.spans},
        "lines": lines,
        "line_text": [code_lines[i - 1] if i - 1 < len(code_lines) else "" for i in lines],
        "loo": [attribution.by_line(loo.token_scores, loo.token_lines, total=True)[i].tolist() for i in lines],
        "mass": [mass[i].tolist() for i in lines],  # lines x layers x heads x spans
        "rollout": [rollout.lines[i].tolist() for i in lines],
        "seconds": {"exact": loo.seconds, "attention": attention.seconds, "rollout": rollout.seconds},
        "passes": {"exact": loo.forward_passes, "attention": 1, "rollout": 1},
        "text": text,
        "code": code,
        "messages": [
            {"role": m.role, "content": m.content, "spans": [[x.label, x.start, x.end] for x in m.spans]}
            for m in messages
        ],
    }


def _span_text(messages, label: str) -> str:
    for m in messages:
        for s in m.spans:
            if s.label == label:
                return m.content[s.start : s.end]
    return ""


def collect(what: str, args: argparse.Namespace) -> tuple[list[dict], dict]:
    settings = Settings()
    backend = ModelManager(settings).backend("local_llama")
    backend.load()
    limit = args.limit or (80 if what == "fit" else 60)
    todo = cases(what, args.mbpp, limit)
    cache = ROOT / ".specmill" / "bench" / "provenance" / f"{what}-{Path(settings.local_model).name}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                break
            done[record["task_id"]] = record
    sandbox = SandboxConfig.from_settings(settings)
    with cache.open("a") as f:
        for i, case in enumerate(todo):
            if case.task_id in done:
                continue
            started = time.perf_counter()
            record = measure(backend, case, sandbox) or {"task_id": case.task_id, "skipped": True}
            f.write(json.dumps(record) + "\n")
            f.flush()
            done[case.task_id] = record
            print(f"[{i + 1}/{len(todo)}] {case.task_id}: {time.perf_counter() - started:.1f} s", flush=True)
    records = [done[c.task_id] for c in todo if not done[c.task_id].get("skipped")]
    meta = {"model": Path(settings.local_model).name, "cases": len(todo), "explained": len(records)}
    return records, {**meta, "backend": backend}


def fit(records: list[dict], steps: int = 3000, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Non-negative head weights by least squares on what a line's choice depends on: within each line,
    the weighted span masses and the leave-one-out drops, both centred on the line's mean."""
    x = torch.tensor([m for r in records for line in r["mass"] for m in _by_span(line)], dtype=torch.float32)
    y = torch.tensor([d for r in records for line in r["loo"] for d in line], dtype=torch.float32)
    line_of = torch.tensor([k for k, n in enumerate(n for r in records for n in map(len, r["loo"])) for _ in range(n)])
    lines = int(line_of.max()) + 1
    counts = torch.zeros(lines).index_add_(0, line_of, torch.ones(len(y)))

    def centred(v: torch.Tensor) -> torch.Tensor:
        return v - (torch.zeros(lines).index_add(0, line_of, v) / counts)[line_of]

    y_c = centred(y)
    layers, heads = len(records[0]["mass"][0]), len(records[0]["mass"][0][0])
    scale = float(centred(x.sum(1)).std()) or 1.0  # features on the targets' scale: Adam's steps then fit
    torch.manual_seed(seed)
    raw = torch.full((layers * heads,), -5.0, requires_grad=True)  # weights start near 0
    optimiser = torch.optim.Adam([raw], lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = ((centred(x @ torch.nn.functional.softplus(raw)) / scale * float(y_c.std()) - y_c) ** 2).mean()
        loss.backward()
        optimiser.step()
    weights = torch.nn.functional.softplus(raw.detach()) / scale * float(y_c.std())
    pred = centred(x @ weights)
    r2 = 1 - float(((pred - y_c) ** 2).sum() / (y_c**2).sum())
    return weights.view(layers, heads), {"rows": len(y), "lines": lines, "within_line_r2": round(r2, 4)}


def _by_span(line_mass: list) -> list[list[float]]:
    """layers x heads x spans (nested lists) -> per span, the layers x heads features, flattened."""
    t = torch.tensor(line_mass)
    return t.permute(2, 0, 1).reshape(t.shape[2], -1).tolist()


def _spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va and vb else None


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _words(text: str) -> set[str]:
    return set(WORD.findall(text))


def scores_of(record: dict, weights: torch.Tensor, rng: random.Random) -> dict[str, list[list[float]]]:
    """Per method and baseline, per line, a score per span (higher: relied on more)."""
    spans = record["spans"]
    out: dict[str, list[list[float]]] = {"estimate": [], "mean": [], "rollout": record["rollout"]}
    for line in record["mass"]:
        t = torch.tensor(line)  # layers x heads x spans
        out["estimate"].append(torch.einsum("lh,lhs->s", weights, t).tolist())
        out["mean"].append(t.mean(dim=(0, 1)).tolist())
    lengths = [s["tokens"] for s in spans]
    out["random span"] = [[rng.random() for _ in spans] for _ in record["lines"]]
    out["longest span"] = [[float(n) for n in lengths] for _ in record["lines"]]
    out["lexical overlap"] = []
    for text in record["line_text"]:
        words = _words(text)
        out["lexical overlap"].append(
            [len(words & _words(record["span_text"][s["label"]])) / (len(words) or 1) for s in spans]
        )
    out["length-matched random span"] = []
    for est in out["estimate"]:
        pick = max(range(len(spans)), key=lambda i: est[i])
        others = [i for i in range(len(spans)) if i != pick] or [pick]
        gap = min(abs(lengths[i] - lengths[pick]) for i in others)
        near = [i for i in others if abs(lengths[i] - lengths[pick]) == gap]
        chosen = rng.choice(near)
        out["length-matched random span"].append([1.0 if i == chosen else 0.0 for i in range(len(spans))])
    return out


def _top(scores: list[float], k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def _line_metrics(lines: list[list[float]], record: dict, top2: dict) -> dict:
    """One case's metrics for one method: `lines` holds its score per span for each line."""
    loo, out = record["loo"], {"top1": [], "top2": [], "hit1": [], "spearman": []}
    for i, scores in enumerate(lines):
        first = _top(scores, 1)[0]
        out["top1"].append(loo[i][first])
        pair = tuple(sorted(_top(scores, 2)))
        out["top2"].append(top2[pair][record["lines"][i]] if len(pair) == 2 else loo[i][first])
        out["hit1"].append(float(first == _top(loo[i], 1)[0]))
        rho = _spearman(scores, loo[i])
        if rho is not None:
            out["spearman"].append(rho)
    return {k: sum(v) / len(v) if v else None for k, v in out.items()}


def evaluate(records: list[dict], weights: torch.Tensor, backend) -> dict:
    rng = random.Random(0)
    per_case: dict[str, list[dict]] = {}
    for record in records:
        scores = scores_of(record, weights, rng)
        scores["leave-one-out"] = record["loo"]
        pairs = sorted({tuple(sorted(_top(line, 2))) for lines in scores.values() for line in lines} - {()})
        top2 = _pair_drops(backend, record, [p for p in pairs if len(p) == 2])
        for name, lines in scores.items():
            per_case.setdefault(name, []).append(_line_metrics(lines, record, top2))
    table: dict[str, dict] = {}
    for name, rows in per_case.items():
        table[name] = {}
        for metric in ("top1", "top2", "hit1", "spearman"):
            values = [r[metric] for r in rows if r[metric] is not None]
            table[name][metric] = round(sum(values) / len(values), 4) if values else None
    est = [r["top1"] for r in per_case["estimate"]]
    for name in ("mean", "rollout", *BASELINES):
        table[name]["estimate_minus_this_top1_ci95"] = _bootstrap(est, [r["top1"] for r in per_case[name]])
    oracle = table["leave-one-out"]["top1"]
    share = round(table["estimate"]["top1"] / oracle, 3) if oracle else None
    table["estimate"]["share_of_leave_one_out_top1"] = share
    accepted = (
        table["lexical overlap"]["estimate_minus_this_top1_ci95"][0] > 0
        and table["mean"]["estimate_minus_this_top1_ci95"][0] > 0
        and (share or 0) >= 0.7
    )
    cost = {
        key: {
            "seconds": round(sum(r["seconds"][key] for r in records) / len(records), 3),
            "forward_passes": round(sum(r["passes"][key] for r in records) / len(records), 2),
        }
        for key in ("exact", "attention", "rollout")
    }
    return {
        "cases": len(records),
        "lines": sum(len(r["lines"]) for r in records),
        "repair_cases": sum(r["repair"] for r in records),
        "methods": table,
        "cost_per_candidate": cost,
        "estimate_accepted": accepted,
    }


def _pair_drops(backend, record: dict, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], dict[int, float]]:
    """Per pair of spans removed together: each line's drop (one pass over the whole, then one per pair)."""
    if not pairs:
        return {}
    messages = [
        Message(m["role"], m["content"], tuple(Span(label, a, b) for label, a, b in m["spans"]))
        for m in record["messages"]
    ]
    with backend.engine_session() as (engine, tokenizer):
        rendered = render_chat(tokenizer, messages)
        explained = explain(engine, tokenizer, messages, rendered, record["text"], record["code"], "mean")
        drops = removal_drops(engine, explained, [[explained.spans[a], explained.spans[b]] for a, b in pairs])
    return dict(zip(pairs, drops, strict=True))


def _bootstrap(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(sum(a[i] - b[i] for i in idx) / n)
    diffs.sort()
    return [round(diffs[int(0.025 * resamples)], 4), round(diffs[int(0.975 * resamples) - 1], 4)]


def record_acceptance(model: str, result: dict, figures: Path) -> None:
    """The acceptance into the shipped head-weights file: what GET /api/techniques shows, and what decides
    whether the estimate is offered."""
    path = heads_path(model)
    payload = json.loads(path.read_text(encoding="utf-8"))
    estimate = result["methods"]["estimate"]
    payload["acceptance"] = {
        "accepted": result["estimate_accepted"],
        "cases": result["cases"],
        "estimate_top1_drop": estimate["top1"],
        "share_of_leave_one_out_top1": estimate["share_of_leave_one_out_top1"],
        "vs_lexical_overlap_ci95": result["methods"]["lexical overlap"]["estimate_minus_this_top1_ci95"],
        "vs_mean_attention_ci95": result["methods"]["mean"]["estimate_minus_this_top1_ci95"],
        "figures": str(figures.relative_to(ROOT)),
        "when": result["when"],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    records, meta = collect(args.what, args)
    backend = meta.pop("backend")
    if args.what == "fit":
        weights, stats = fit(records)
        path = write_weights(meta["model"], weights, {**meta, **stats, "fitted_on": "MBPP train"})
        print(f"fitted {tuple(weights.shape)} head weights on {len(records)} cases: {stats}; wrote {path}")
        return stats
    from codegen.provenance.heads import read_weights

    weights = read_weights(meta["model"])
    if weights is None:
        raise SystemExit(f"no fitted head weights at {heads_path(meta['model'])}: run `bench/provenance.py fit` first")
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result = {"when": when, **meta, **evaluate(records, weights, backend)}
    out = args.out / f"provenance-{meta['model']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    record_acceptance(meta["model"], result, out)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
