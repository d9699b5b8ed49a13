"""Which generation settings a new tenant should start with (`make eval-defaults`): problems solved per
minute of generation on MBPP's validation split, for a few candidate defaults, through the product's path.

    .venv/bin/python bench/defaults.py --mbpp PATH [--limit N] [--threads 1] [--out docs/eval]

Fixed before any result was read:
- Problems: MBPP validation (task ids 511-600), never a test split. Each is the `python-function` spec a
  user would write: the task's text as the description, the function's name, and MBPP's three asserts
  as the spec's `tests`. As in the product, those tests are what candidates are ranked by (the visible
  tests a generation runs in the sandbox) and what decides whether the problem is solved.
- Settings compared (`SETTINGS`): one greedy candidate, today's default; beam search of width 4 under the
  Python grammar; and 4 or 8 candidates (greedy first, then samples at temperature 0.8, top-p 0.95).
  The ones with several candidates also ask for tree_transformers, so that its selector and the
  product's rule (the spec's tests, then the mean log-probability) choose from the very same candidates:
  the first uses its combined score, the second drops the scores and ranks as a generation without it
  (the same setting without tree_transformers, which costs a few milliseconds per candidate more).
- Generation time: the wall time of models.generation_steps.run_steps for the job (generating, running
  the visible tests, scoring the trees), in this process with the default model, one torch thread unless
  --threads says otherwise; the grammar is compiled once before the first problem, as a worker does once
  per process. A first attempt only: a project's repair rounds are not run (each would cost
  as much again, for every setting, on the problems it has not solved).
- The rule: the default for new tenants is the setting with the most problems solved per minute of
  generation (ties: the more solved). A selector that needs a trained checkpoint (tree_transformers)
  cannot be the default of a fresh install, which has none; its rows are reported for comparison.

Each problem's records are appended to docs/eval/partial/defaults-<label>.jsonl as they are made (bench/eval.py's
Partial), so a stopped run continues with the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval import Partial, source_commit
from bench.gateway import cpu_model
from codegen import evaluate as ev
from codegen.manager import ModelManager
from models.generation import Candidate
from models.generation_steps import best
from models.settings import Settings
from models.techniques import TechniqueOptions
from models.techniques.hybrid_grammar_neural import TECHNIQUE as GRAMMAR
from models.techniques.syntax_aware_beam_search import TECHNIQUE as BEAM
from models.techniques.syntax_aware_beam_search import BeamSettings
from models.techniques.tree_transformers import TECHNIQUE as TREE
from sandbox import SandboxConfig

WARM_UP = ev.Problem(
    "warm-up",
    "mbpp-validation",
    {"function_name": "add", "description": "Add two numbers.", "tests": ["assert add(1, 2) == 3"]},
    "",
    ["assert add(1, 2) == 3"],
    ["assert add(1, 2) == 3"],
)
PRODUCT_RULE = "spec's tests, then mean log-probability"
COMBINED = f"combined score ({TREE.name})"


@dataclass(frozen=True)
class Setting:
    label: str
    n: int
    techniques: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)


SETTINGS = (
    Setting("n=1 (today's default)", 1),
    Setting("n=1, beam width 4 + grammar", 1, (BEAM.name, GRAMMAR.name), {BEAM.name: BeamSettings(width=4)}),
    Setting("n=4", 4, (TREE.name,)),
    Setting("n=8", 8, (TREE.name,)),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mbpp", type=Path, required=True, help="path to mbpp.jsonl")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per sandboxed test run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "eval")
    return p.parse_args(argv)


def problems(mbpp: Path, limit: int | None) -> list[ev.Problem]:
    """MBPP validation as users' specs: the asserts are the spec's tests, visible to the generation."""
    return [
        ev.Problem(p.task_id, p.benchmark, p.values, p.prefix, p.tests, list(p.tests))
        for p in ev.load_mbpp(mbpp, "validation", limit)
    ]


def selectors(setting: Setting, candidates: list[Candidate]) -> dict[str, Candidate | None]:
    """The candidate each selector keeps: the product's choice for these settings and, where a technique
    scored the candidates, the product's rule without those scores."""
    chosen = {COMBINED if TREE.name in setting.techniques else PRODUCT_RULE: best(candidates, by_log_probability=True)}
    if TREE.name in setting.techniques:
        plain = [c.model_copy(update={"selection_score": None}) for c in candidates]
        chosen[PRODUCT_RULE] = best(plain, by_log_probability=True)
    return chosen


def attempt(problem: ev.Problem, backend, setting: Setting, base: ev.EvalConfig) -> dict:
    """One setting on one problem: the generation's wall time and, per selector, whether the kept
    candidate passes the problem's tests."""
    cfg = replace(base, techniques=list(setting.techniques), n=setting.n, options=TechniqueOptions(**setting.options))
    started = time.perf_counter()
    result, _, reason = ev.generate_for(problem, backend, cfg)
    seconds = time.perf_counter() - started
    record = {"setting": setting.label, "seconds": round(seconds, 3), "error": reason, "selectors": {}}
    if result is None:
        return record
    record["candidates"] = len(result.candidates)
    record["tokens_out"] = sum(c.tokens_out for c in result.candidates)
    record["passing_visible"] = sum(
        1 for c in result.candidates if c.tests is not None and c.tests.total and c.tests.passed == c.tests.total
    )
    runs: dict[str, bool] = {}
    for name, chosen in selectors(setting, result.candidates).items():
        if chosen is None:
            continue
        if chosen.code not in runs:
            runs[chosen.code] = ev.run_hidden(problem, chosen.code, cfg).status == "passed"
        record["selectors"][name] = runs[chosen.code]
    return record


def table(records: list[dict]) -> list[dict]:
    """One row per setting and selector over the problems every setting has done."""
    rows = []
    for setting in SETTINGS:
        mine = [r[setting.label] for r in records]
        seconds = sum(r["seconds"] for r in mine)
        names = list(dict.fromkeys(name for r in mine for name in r["selectors"]))
        for name in names:
            solved = sum(r["selectors"].get(name, False) for r in mine)
            rows.append(
                {
                    "setting": setting.label,
                    "n": setting.n,
                    "techniques": list(setting.techniques),
                    "selector": name,
                    # the product's own rule needs no trained checkpoint: a fresh install can use it
                    "fresh_install": name == PRODUCT_RULE,
                    "problems": len(mine),
                    "solved": solved,
                    "generation_minutes": round(seconds / 60, 2),
                    "seconds_per_problem": round(seconds / len(mine), 2) if mine else None,
                    "solved_per_minute": round(solved / (seconds / 60), 3) if seconds else None,
                    "tokens_out": sum(r.get("tokens_out", 0) for r in mine),
                }
            )
    return rows


def choice(rows: list[dict]) -> dict | None:
    """The rule of the docstring: the most solved per minute among what a fresh install can use."""
    usable = [r for r in rows if r["fresh_install"] and r["solved_per_minute"] is not None]
    return max(usable, key=lambda r: (r["solved_per_minute"], r["solved"]), default=None)


def render(rows: list[dict], chosen: dict | None) -> str:
    lines = [
        "| setting | selector | solved | generation (min) | s per problem | solved per minute |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mark = " **(chosen)**" if r is chosen else ""
        lines.append(
            f"| {r['setting']}{mark} | {r['selector']} | {r['solved']}/{r['problems']} | "
            f"{r['generation_minutes']} | {r['seconds_per_problem']} | {r['solved_per_minute']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    settings = Settings()
    todo = problems(args.mbpp, args.limit)
    backend = ModelManager(settings).backend("local_llama")
    backend.load()
    status = backend.status()
    label = f"mbpp-validation-{Path(settings.local_model).name}-{status.details.get('dtype')}"
    base = ev.EvalConfig(
        model="local_llama",
        techniques=[],
        max_new_tokens=args.max_new_tokens,
        timeout_s=args.timeout,
        sandbox=SandboxConfig.from_settings(settings),
        models_path=settings.models_path,
    )
    fingerprint = {
        "settings": [s.label for s in SETTINGS],
        "max_new_tokens": args.max_new_tokens,
        "timeout_s": args.timeout,
        "threads": args.threads,
    }
    partial = Partial(args.out / "partial" / f"defaults-{label}.jsonl", fingerprint)
    done = partial.load()
    commit = source_commit()
    print(f"{label}: {len(todo)} problems, {len(done)} done in earlier sittings", flush=True)
    if any(p.task_id not in done for p in todo):
        # a worker compiles the Python grammar once per process (about 90 s here), not once per generation
        for setting in SETTINGS:
            if GRAMMAR.name in setting.techniques:
                attempt(WARM_UP, backend, setting, base)
                break
    for i, problem in enumerate(todo):
        if problem.task_id in done:
            continue
        line: dict[str, Any] = {"task_id": problem.task_id}
        for setting in SETTINGS:
            line[setting.label] = attempt(problem, backend, setting, base)
        partial.add(line, commit)
        done[problem.task_id] = line
        summary = ", ".join(
            f"{s.label}: {'+' if any(line[s.label]['selectors'].values()) else '-'} {line[s.label]['seconds']:.0f} s"
            for s in SETTINGS
        )
        print(f"[{i + 1}/{len(todo)}] {problem.task_id}: {summary}", flush=True)
    records = [done[p.task_id] for p in todo if p.task_id in done]
    rows = table(records)
    chosen = choice(rows)
    result = {
        "benchmark": "mbpp-validation",
        "model_label": Path(settings.local_model).name,
        "dtype": status.details.get("dtype"),
        "threads": args.threads,
        "cpu": cpu_model(),
        "commits": partial.commits(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": fingerprint,
        "rows": rows,
        "chosen": chosen,
        "records": records,
    }
    if len(records) == len(todo) and not args.limit:
        partial.remove()
    out = args.out / f"defaults-{label}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(render(rows, chosen))
    print(f"chosen: {chosen['setting'] if chosen else None}; wrote {out}")
    return result


if __name__ == "__main__":
    main()
