"""Candidate pools for choosing among candidates (`make eval-pools`): generated once, then every selector
is compared on the very same candidates (bench/choose.py).

    .venv/bin/python bench/pools.py [--benchmark humaneval|mbpp-train|mbpp-validation|mbpp-test]
        [--limit N] [--samples 10] [--threads 1] [--out docs/eval/pools]

The pool settings, fixed before any result was read: per problem, the greedy answer and `--samples`
sampled ones (temperature 0.8, top-p 0.95: codegen/generate.py's SAMPLED_TEMPERATURE and
SAMPLED_TOP_P), one batched pass of the product's own candidate function (codegen.generate.candidates,
n = 1 + samples), the default model and max_new_tokens 384. Each candidate is kept with its mean
log-probability, whether it parses, its result on the visible tests and, apart, on the hidden tests.

Visible tests: HumanEval's are the examples of its docstring (codegen/candidate_tests.docstring_tests).
MBPP's tests are all in its prompt, so an MBPP pool shows the model only the first test (the spec's
`tests` value, as a user's spec would show an example) and keeps that one as the visible test; the
hidden tests are all of them. The pools are written one problem per line (so a run resumes where it
stopped) and gzipped when complete.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codegen import evaluate as ev
from codegen import generate
from codegen.candidate_tests import run_candidates
from codegen.manager import ModelManager
from models.settings import Settings
from sandbox import SandboxConfig, run_tests

BENCHMARKS = ("humaneval", "mbpp-train", "mbpp-validation", "mbpp-test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", choices=BENCHMARKS, default="humaneval")
    p.add_argument("--mbpp", type=Path, default=None, help="path to mbpp.jsonl (the MBPP benchmarks)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--samples", type=int, default=10, help="sampled candidates besides the greedy one")
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per sandboxed test run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "eval" / "pools")
    return p.parse_args(argv)


def problems(benchmark: str, mbpp: Path | None, limit: int | None) -> list[ev.Problem]:
    if benchmark == "humaneval":
        return ev.load_humaneval(limit)
    if mbpp is None:
        raise SystemExit("--mbpp PATH is needed for the MBPP benchmarks")
    out = []
    for p in ev.load_mbpp(mbpp, benchmark.removeprefix("mbpp-"), limit):
        shown = p.tests[:1]
        out.append(ev.Problem(p.task_id, p.benchmark, {**p.values, "tests": shown}, p.prefix, p.tests, shown))
    return out


def pool(problem: ev.Problem, chat: generate.ModelCall, cfg: ev.EvalConfig, n: int) -> dict:
    """One problem's candidates, each with its visible and hidden test results."""
    job = ev.job_for(problem, replace(cfg, n=n))
    started = time.perf_counter()
    try:
        result = generate.candidates(chat, job.task(), [], 1)
    except ValueError as err:  # a prompt longer than the model's context
        return {"task_id": problem.task_id, "error": str(err)[:300], "candidates": []}
    generation_s = time.perf_counter() - started
    codes = [c.code for c in result.candidates]
    visible = (
        run_candidates(codes, problem.visible, prefix=problem.prefix, config=cfg.sandbox, timeout_s=cfg.timeout_s)
        if problem.visible
        else [None] * len(codes)
    )
    out = []
    for c, v in zip(result.candidates, visible, strict=True):
        program = f"{problem.prefix}\n\n{c.code}\n" if problem.prefix else c.code + "\n"
        hidden = run_tests(program, problem.tests, timeout_s=cfg.timeout_s, config=cfg.sandbox)
        out.append(
            {
                "code": c.code,
                "mean_logprob": c.mean_logprob,
                "tokens_out": c.tokens_out,
                "finish_reason": c.finish_reason,
                "parses": c.parses,
                "visible_passed": v.passed if v else 0,
                "visible_total": v.total if v else 0,
                "passed": hidden.status == "passed",
            }
        )
    return {
        "task_id": problem.task_id,
        "visible_tests": len(problem.visible),
        "generation_s": round(generation_s, 3),
        "candidates": out,
    }


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    settings = Settings()
    todo = problems(args.benchmark, args.mbpp, args.limit)
    backend = ModelManager(settings).backend("local_llama")
    backend.load()
    status = backend.status()
    label = f"{args.benchmark}-{Path(settings.local_model).name}-{status.details.get('dtype')}-n{1 + args.samples}"
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{label}.partial.jsonl"
    done = set()
    if partial.exists():
        done = {json.loads(line)["task_id"] for line in partial.read_text().splitlines() if line.strip()}
    cfg = ev.EvalConfig(
        model="local_llama",
        techniques=[],
        max_new_tokens=args.max_new_tokens,
        timeout_s=args.timeout,
        sandbox=SandboxConfig.from_settings(settings),
    )
    chat = generate.ModelCall(backend)
    print(f"{label}: {len(todo)} problems, {len(done)} done in earlier sittings", flush=True)
    with partial.open("a") as f:
        for i, problem in enumerate(todo):
            if problem.task_id in done:
                continue
            record = pool(problem, chat, cfg, 1 + args.samples)
            f.write(json.dumps(record) + "\n")
            f.flush()
            passed = sum(c["passed"] for c in record["candidates"])
            print(
                f"[{i + 1}/{len(todo)}] {problem.task_id}: {passed}/{len(record['candidates'])} pass, "
                f"{record.get('generation_s', 0):.1f} s",
                flush=True,
            )
    lines = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    order = {p.task_id: i for i, p in enumerate(todo)}
    lines = sorted((r for r in lines if r["task_id"] in order), key=lambda r: order[r["task_id"]])
    if len(lines) < len(todo) or args.limit:
        return partial
    final = args.out / f"{label}.jsonl.gz"
    with final.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as g:  # the same bytes each time
        g.write("".join(json.dumps(r) + "\n" for r in lines).encode())
    partial.unlink()
    shutil.rmtree(args.out / "__pycache__", ignore_errors=True)
    print(f"wrote {final}", flush=True)
    return final


if __name__ == "__main__":
    main()
