"""Local generation speed (`make bench-generate`): our engine against llama.cpp, on the same GGUF.

    .venv/bin/python bench/generate.py [--tokens 128] [--prompts 4] [--rounds 3] [--only NAME,...] [--no-llama-cpp]

The prompts are the generator's own (the python-function template's prompt for the first HumanEval
problems, through the model's chat template), tokenized once and fed as the same token ids to every
runner. Each runner decodes greedily exactly `--tokens` new tokens per prompt (end-of-sequence
ignored, so every runner does the same work) in its own subprocess, after one warm-up request, with
every core of the machine (torch's default thread count; llama.cpp gets as many threads). The runners
are interleaved over `--rounds` rounds (A B C .. A B C ..), each round a fresh subprocess per runner,
and every figure is the median over the rounds: on two shared cores one pass can swing severalfold.

Runners, each a lever of the issue:
- `hf-*`: transformers' generate() on the cached safetensors, as local_llama ran before the engine
  (fp32, bf16, and int8 as dynamic quantization of every Linear with torch.ao);
- `engine-*`: codegen/llama_engine.py through LocalLlamaBackend's load (fused products, a cache
  allocated once, one Python loop), with fp32, bf16, weight-only int8 or int4 weights; `engine-auto`:
  LOCAL_DTYPE's default, the weights timed fastest at load that choose fp32's greedy tokens (codegen/kernels.py;
  the choice and each candidate's time per step are printed and kept in its details);
- `beam-w*`: codegen/beam_search.py on the int4 engine at widths 1, 2 and 4 (no pruning, no end
  token: every beam runs `--tokens` steps; tok/s counts the tokens of the best beam, so the ratio to
  `engine-int4` is beam search's cost per token of output);
- `beam-w4-fp32` and `hf-beam4`: width 4 on the fp32 engine, and transformers' generate(num_beams=4)
  on the same fp32 weights (the same work: 4 beams, `--tokens` steps, no end token);
- `seq-n4` and `rows-n4`: 4 sampled candidates (temperature 0.8, one seed each) per prompt on the
  int4 engine, as 4 sequential calls and as one batched pass (`generate_rows`); tok/s counts all 4;
- `grammar-greedy` and `grammar-beam-w4`: the int4 engine under the Python grammar (codegen/
  python_grammar.py, xgrammar masks, one matcher per row), greedy and at width 4. The grammar may end
  an answer early (its fence closes), so these count the tokens they wrote. The mask's own time per
  token (median, p95) is reported beside the per-token time of `engine-int4`; the grammar's compile
  for the vocabulary (once per process) is reported apart and not counted in tok/s;
- `provenance-exact` and `provenance-estimate`: greedy on the int4 engine as `engine-int4`, then
  multi_head_attention's provenance of the answer (codegen/provenance/explain.py: leave-one-out, one
  pass per labelled span of the prompt, or one pass with the fitted head weights); tok/s counts the
  generated tokens over generation and provenance together, so the ratio to `engine-int4` is its cost;
- `llama.cpp`: llama-cpp-python (installed by the make target only) on the GGUF file itself.
- `spec-int4`: `engine-int4` with prompt-lookup speculation (codegen/speculation.py), as local_llama's
  greedy calls decode by default (LOCAL_DRAFT_TOKENS); its details give the acceptance rate, and its
  tokens must be exactly `engine-int4`'s (the comparisons say whether they are).
- `<runner>@repair`: the same runner on repair-round prompts: for each of the first HumanEval problems
  whose greedy answer (the int4 engine, the product's prompt) fails its tests in the sandbox, the prompt
  of the next round as the pipeline builds it (codegen/prompts.build_messages with the failure text of
  activities/verdicts.of_run), made once per model and kept in .specmill/bench/.

tok/s = new tokens / time from the request to the last token (prefill included), over all prompts.
"load" is the warm load: from the cached safetensors (the bench converts first when they are not)
to a model ready to decode; "imports" is importing torch and transformers' Llama, tokenizer and
auto modules, paid once per process before it (a worker pays both once, at start).
"same" is the share of each output that matches transformers fp32 greedy tokens before the first
difference (a cheap fidelity check; the eval table is the real one).
Prints a table and writes .specmill/bench/generate-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNNERS = [
    "hf-fp32",
    "hf-bf16",
    "hf-int8-dynamic",
    "engine-fp32",
    "engine-bf16",
    "engine-int8",
    "engine-int4",
    "engine-auto",
    "beam-w1",
    "beam-w2",
    "beam-w4",
    "beam-w4-fp32",
    "hf-beam4",
    "seq-n4",
    "rows-n4",
    "grammar-greedy",
    "grammar-beam-w4",
    "provenance-exact",
    "provenance-estimate",
    "llama.cpp",
    "spec-int4",
    "engine-int4@repair",
    "spec-int4@repair",
    "llama.cpp@repair",
]
DEFAULT = "engine-auto"  # what LOCAL_DTYPE's default runs: the kernel timed fastest at load (codegen/kernels.py)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=128, help="new tokens per prompt")
    p.add_argument("--prompts", type=int, default=4, help="how many prompts (first HumanEval problems)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians over them")
    p.add_argument("--only", default="", help="comma-separated runners (default: all)")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp (ratios are then not printed)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: run one runner from this job file
    return p.parse_args(argv)


# --- one runner, in its own process ----------------------------------------------------------------


def run_worker(job_file: Path) -> None:
    job = json.loads(job_file.read_text())
    runner, prompts, tokens = job["runner"], job["prompts"], job["tokens"]
    t0 = time.perf_counter()
    if runner == "llama.cpp":
        import llama_cpp  # noqa: F401
    else:  # torch, and the transformers modules that load lazily (Llama, the auto classes, tokenizers)
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401
    imports_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate, details = _RUNNERS[runner.split("-")[0]](job)
    load_s = time.perf_counter() - t0
    per_prompt = tokens * details.get("candidates", 1)  # seq-n4 / rows-n4: every candidate's tokens
    generate(prompts[0][:64], 16)  # warm-up
    outputs, elapsed = [], 0.0
    for prompt in prompts:
        t0 = time.perf_counter()
        out = generate(prompt, tokens)
        elapsed += time.perf_counter() - t0
        if len(out) != per_prompt and not details.get("grammar"):
            raise RuntimeError(f"{runner} produced {len(out)} tokens, not {per_prompt}")
        outputs.append(out)
    if details.get("grammar"):
        details["mask_ms"] = details.pop("mask_s_all")()
        elapsed = details.pop("own_seconds")()  # the constrained decoding only (see _grammar)
    print(
        json.dumps(
            {
                "runner": runner,
                "imports_s": imports_s,
                "load_s": load_s,
                "seconds": elapsed,
                "tokens": sum(len(o) for o in outputs),
                "outputs": outputs,
                "details": details,
            }
        )
    )


def _hf(job: dict):
    import torch

    from codegen.local_files import load_hf

    dtype = job["runner"].removeprefix("hf-")
    beams = int(dtype.removeprefix("beam")) if dtype.startswith("beam") else 1
    model, _ = load_hf(Path(job["hf_dir"]), torch.bfloat16 if dtype == "bf16" else torch.float32)
    model.eval()
    if dtype == "int8-dynamic":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    pad = model.generation_config.pad_token_id or 0

    @torch.inference_mode()
    def generate(prompt: list[int], n: int) -> list[int]:
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=pad,
            num_beams=beams,
            early_stopping=False,
        )
        return out[0, len(prompt) :].tolist()

    return generate, {"threads": torch.get_num_threads(), **({"num_beams": beams} if beams > 1 else {})}


def _load_backend(job: dict, dtype: str):
    """LocalLlamaBackend loaded as the product loads it, and its details."""
    import torch

    from codegen.local_llama import LocalLlamaBackend
    from models.settings import Settings

    settings = Settings(
        _env_file=None,
        models_dir=job["models_dir"],
        local_model=job["local_model"],
        local_dtype=dtype,
        local_device="cpu",
    )
    backend = LocalLlamaBackend(settings)
    backend.load()
    return backend, {**backend.status().details, "threads": torch.get_num_threads()}


def _load_engine(job: dict, dtype: str):
    """The engine as LocalLlamaBackend loads it, and its details."""
    backend, details = _load_backend(job, dtype)
    return backend._engine, details


def _engine(job: dict):
    engine, details = _load_engine(job, job["runner"].removeprefix("engine-"))

    from codegen.decoding import Stopping

    def generate(prompt: list[int], n: int) -> list[int]:
        return engine.generate(prompt, Stopping(set(), n))

    return generate, details


def _spec(job: dict):
    """`engine-int4` with prompt-lookup speculation, as LocalLlamaBackend's greedy calls decode."""
    backend, details = _load_backend(job, "int4")
    if not details["speculation"]["on"]:
        raise RuntimeError(f"speculation is off: {details['speculation']['why']}")
    engine, draft = backend._engine, backend.draft_tokens

    from codegen.decoding import Stopping
    from codegen.speculation import PromptLookup, Stats

    total, calls = Stats(), []

    def generate(prompt: list[int], n: int) -> list[int]:
        stats = Stats()
        out = engine.generate(prompt, Stopping(set(), n), lookup=PromptLookup(draft=draft), stats=stats)
        calls.append(stats)
        if len(calls) > 1:  # the first call is the warm-up
            total.add(stats)
            details.update(
                passes=total.passes,
                drafted=total.drafted,
                accepted=total.accepted,
                acceptance=round(total.acceptance or 0.0, 3),
                tokens_per_pass=round((total.accepted + total.passes) / total.passes, 2) if total.passes else None,
            )
        return out

    return generate, details


def _beam(job: dict):
    from codegen.beam_search import beam_search

    width, _, dtype = job["runner"].removeprefix("beam-w").partition("-")
    width = int(width)
    engine, details = _load_engine(job, dtype or "int4")

    def generate(prompt: list[int], n: int) -> list[int]:
        return beam_search(engine, prompt, n, eos=set(), width=width).hypotheses[0].tokens

    return generate, {**details, "width": width}


def _grammar(job: dict):
    """The int4 engine under the Python grammar: greedy (`generate`) or beam search (`beam_search`), the
    masks from a GrammarProcessor made per request, as LocalLlamaBackend makes them."""
    import statistics

    from codegen.beam_search import beam_search
    from codegen.decoding import GrammarProcessor, Stopping
    from models.techniques import python_grammar

    backend, details = _load_backend(job, "int4")
    engine, eos = backend._engine, backend._eos()
    t0 = time.perf_counter()
    compiled = backend.compiled("ebnf", python_grammar.ebnf())
    compile_s = time.perf_counter() - t0
    width = int(job["runner"].removeprefix("grammar-beam-w")) if "beam" in job["runner"] else 1
    masks: list[float] = []
    spent = {"constrained": 0.0, "unconstrained": 0.0, "calls": 0}

    def decode(prompt: list[int], n: int, processors: list) -> list[int]:
        if width == 1:
            return engine.generate(prompt, Stopping(set(), n), processors=processors)
        result = beam_search(engine, prompt, n, eos=set(), width=width, processors=processors)
        return result.hypotheses[0].tokens if result.hypotheses else []

    def generate(prompt: list[int], n: int) -> list[int]:
        """The constrained answer; then, untimed for tok/s, the same prompt decoded unconstrained for as
        many tokens: the grammar may end an answer early, and a shorter answer carries more of the
        prefill per token, so the per-token comparison is made on equal lengths."""
        processor = GrammarProcessor(compiled, eos, rows=width)
        t0 = time.perf_counter()
        out = decode(prompt, n, [processor])
        t1 = time.perf_counter()
        decode(prompt, len(out), [])
        spent["calls"] += 1
        if spent["calls"] > 1:  # the first call is the worker's warm-up
            masks.extend(processor.mask_s)
            spent["constrained"] += t1 - t0
            spent["unconstrained"] += time.perf_counter() - t1
        return out

    def mask_ms() -> dict:
        ms = sorted(1000 * s for s in masks)
        return {
            "median": round(statistics.median(ms), 3),
            "p95": round(ms[int(0.95 * (len(ms) - 1))], 3),
            "mean": round(statistics.fmean(ms), 3),
            "masks": len(ms),
            "constrained_s": round(spent["constrained"], 3),
            "unconstrained_same_tokens_s": round(spent["unconstrained"], 3),
        }

    details = {**details, "grammar": "python", "compile_s": round(compile_s, 1), "width": width}
    return generate, {**details, "mask_s_all": mask_ms, "own_seconds": lambda: spent["constrained"]}


def _candidates(job: dict):
    import torch

    from codegen.decoding import Sampling, Stopping

    kind, n = job["runner"].split("-n")
    engine, details = _load_engine(job, "int4")

    def generate(prompt: list[int], tokens: int) -> list[int]:
        seeds = [torch.Generator().manual_seed(i) for i in range(int(n))]
        choosers = [Sampling(0.8, 1.0, g) for g in seeds]
        if kind == "rows":
            rows = engine.generate_rows(prompt, Stopping(set(), tokens), choosers).tokens
        else:
            rows = [engine.generate(prompt, Stopping(set(), tokens), chooser=c) for c in choosers]
        return [t for row in rows for t in row]

    return generate, {**details, "candidates": int(n)}


def _provenance(job: dict):
    from codegen.base import Message, Span
    from codegen.decoding import Stopping
    from codegen.local_llama import render_chat
    from codegen.prompts import extract_code
    from codegen.provenance.explain import explain
    from codegen.provenance.heads import read_weights

    method = job["runner"].removeprefix("provenance-")
    backend, details = _load_backend(job, "int4")
    weights = read_weights(job["local_model"]) if method == "estimate" else None
    if method == "estimate" and weights is None:
        raise SystemExit(f"no fitted head weights for {job['local_model']}: bench/provenance.py fit")
    chats = {
        tuple(ids): [Message(m["role"], m["content"], tuple(Span(*x) for x in m["spans"])) for m in chat]
        for ids, chat in zip(job["prompts"], job["messages"], strict=True)
    }
    spans: list[int] = []

    def generate(prompt: list[int], n: int) -> list[int]:
        with backend.engine_session() as (engine, tokenizer):
            out = engine.generate(prompt, Stopping(set(), n))
            messages = chats.get(tuple(prompt))
            if messages is not None:  # the warm-up's cut prompt has no labelled spans: generation only
                text = tokenizer.decode(out, skip_special_tokens=True)
                code = extract_code(text) or text
                rendered = render_chat(tokenizer, messages)
                spans.append(len(explain(engine, tokenizer, messages, rendered, text, code, method, weights).spans))
        return out

    return generate, {**details, "labelled_spans": spans}


def _llama_cpp(job: dict):
    from llama_cpp import Llama

    threads = os.cpu_count() or 1
    llm = Llama(model_path=job["gguf"], n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)

    def generate(prompt: list[int], n: int) -> list[int]:
        out = []
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == n:
                return out
        return out

    import llama_cpp

    return generate, {"threads": threads, "version": llama_cpp.__version__}


_RUNNERS = {
    "hf": _hf,
    "engine": _engine,
    "spec": _spec,
    "beam": _beam,
    "grammar": _grammar,
    "seq": _candidates,
    "rows": _candidates,
    "provenance": _provenance,
    "llama.cpp": _llama_cpp,
}


# --- the parent: prompts, the runners one after another, the table ----------------------------------


def prepare(n_prompts: int, with_repair: bool) -> dict:
    """Pull and convert the model when needed; the prompts as token ids."""
    from codegen import evaluate as ev
    from codegen.local_files import resolve
    from codegen.local_llama import LocalLlamaBackend, render_chat
    from codegen.prompts import build_messages
    from codegen.pull import REGISTRY, pull
    from models.builtin_templates import PYTHON_FUNCTION
    from models.settings import Settings
    from models.spec_view import spec_view

    settings = Settings()
    if settings.local_model in REGISTRY:
        pull(settings.local_model, settings.models_path, progress=True)
    source = resolve(settings.local_model, settings.models_path)
    if source.format != "gguf":
        raise SystemExit(f"LOCAL_MODEL {settings.local_model!r} is not a GGUF: llama.cpp needs one")
    backend = LocalLlamaBackend(settings.model_copy(update={"local_dtype": "fp32", "local_draft_tokens": 0}))
    backend.load()  # converts (once) and caches the safetensors the hf runners read
    tokenizer = backend._tokenizer
    prompts, chats = [], []
    for problem in ev.load_humaneval(n_prompts):
        messages = build_messages(spec_view(PYTHON_FUNCTION, problem.values))
        prompts.append(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])
        chats.append(
            [
                {"role": m.role, "content": m.content, "spans": [[x.label, x.start, x.end] for x in m.spans]}
                for m in messages
            ]
        )
    return {
        "models_dir": str(settings.models_path),
        "local_model": settings.local_model,
        "gguf": str(source.path),
        "hf_dir": backend.status().details["loaded_from"],
        "prompts": prompts,
        "messages": chats,
        "repair_prompts": repair_prompts(settings, tokenizer, n_prompts) if with_repair else [],
    }


def repair_prompts(settings, tokenizer, n: int) -> list[list[int]]:
    """The prompts of a repair round for the first `n` HumanEval problems whose first answer fails: the
    int4 engine answers the product's prompt greedily, the answer's code runs against the problem's tests
    in the sandbox, and the next round's prompt tells the failure as the pipeline does. Made once per
    model and kept in .specmill/bench/ (the answers are greedy: the same every time)."""
    from activities import verdicts
    from codegen import evaluate as ev
    from codegen.base import GenerationParams
    from codegen.local_llama import LocalLlamaBackend, render_chat
    from codegen.prompts import build_messages, extract_code
    from models.builtin_templates import PYTHON_FUNCTION
    from models.spec_view import spec_view
    from sandbox import SandboxConfig

    kept = ROOT / ".specmill" / "bench" / f"repair-prompts-{Path(settings.local_model).name}-{n}.json"
    if kept.exists():
        return json.loads(kept.read_text())
    backend = LocalLlamaBackend(settings.model_copy(update={"local_dtype": "int4", "local_draft_tokens": 0}))
    cfg = ev.EvalConfig(model="local_llama", techniques=[], sandbox=SandboxConfig.from_settings(settings))
    out = []
    for problem in ev.load_humaneval():
        view = spec_view(PYTHON_FUNCTION, problem.values)
        answer = backend.chat(build_messages(view), GenerationParams(max_new_tokens=256))
        run = ev.run_hidden(problem, extract_code(answer.text), cfg)
        if run.status == "passed":
            continue
        feedback = verdicts.of_run(run, len(problem.tests)).failure
        messages = build_messages(view, feedback=feedback)
        out.append(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])
        if len(out) == n:
            break
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(out))
    return out


def run_runner(runner: str, base: dict, tokens: int) -> dict:
    name, _, variant = runner.partition("@")
    job = {**base, "runner": name, "tokens": tokens}
    if variant == "repair":
        job["prompts"] = base["repair_prompts"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", f.name],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    finally:
        os.unlink(f.name)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"runner": runner, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return {**json.loads(lines[-1]), "runner": runner}


def same_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def merged(runs: list[dict]) -> dict:
    """One runner's rounds as one row: the median tok/s, load and imports; the first round's outputs
    and details (greedy runs write the same tokens every round); a grammar's mask times as the median
    over the rounds of each round's median and p95."""
    import statistics

    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"runner": runs[0]["runner"], "error": errors[0]}
    first = runs[0]
    speeds = [r["tokens"] / r["seconds"] for r in runs]
    out = {
        **first,
        "tok_s": statistics.median(speeds),
        "tok_s_rounds": speeds,
        "load_s": statistics.median(r["load_s"] for r in runs),
        "imports_s": statistics.median(r["imports_s"] for r in runs),
    }
    if "mask_ms" in first["details"]:
        out["details"] = {
            **first["details"],
            "mask_ms": {
                key: round(statistics.median(r["details"]["mask_ms"][key] for r in runs), 3)
                for key in ("median", "p95", "mean", "constrained_s", "unconstrained_same_tokens_s")
            },
            "compile_s": round(statistics.median(r["details"]["compile_s"] for r in runs), 1),
        }
    return out


def compare(results: dict) -> list[dict]:
    """The ratios the README sets targets for, from the medians of this run (a missing runner: skipped)."""
    speed = {k: v["tok_s"] for k, v in results.items() if "tok_s" in v}
    out = []

    def add(what: str, ratio: float, target: str | None, met: bool | None) -> None:
        out.append({"what": what, "ratio": round(ratio, 2), "target": target, "met": met})

    if {"rows-n4", "seq-n4"} <= speed.keys():
        r = speed["rows-n4"] / speed["seq-n4"]
        add("4 candidates: batched pass / 4 sequential calls (aggregate tok/s)", r, ">= 2.5", r >= 2.5)
    if {"beam-w1", "engine-int4"} <= speed.keys():
        r = speed["engine-int4"] / speed["beam-w1"]
        add("beam search width 1: time per token / greedy's", r, "<= 1.1", r <= 1.1)
    for w in ("beam-w2", "beam-w4"):
        if {w, "engine-int4"} <= speed.keys():
            add(f"{w}: time per output token / greedy's", speed["engine-int4"] / speed[w], None, None)
    if {"beam-w4", "hf-beam4"} <= speed.keys():
        r = speed["beam-w4"] / speed["hf-beam4"]
        add("width 4 (int4 engine) / transformers num_beams=4 (fp32), tok/s", r, ">= 2.5", r >= 2.5)
    if {"beam-w4-fp32", "hf-beam4"} <= speed.keys():
        r = speed["beam-w4-fp32"] / speed["hf-beam4"]
        add("width 4 (fp32 engine) / transformers num_beams=4 (fp32), tok/s", r, None, None)
    if "grammar-greedy" in speed:
        mask = results["grammar-greedy"]["details"]["mask_ms"]
        r = mask["constrained_s"] / mask["unconstrained_same_tokens_s"]
        add("grammar-constrained greedy: time / unconstrained, same prompts and lengths", r, "<= 1.15", r <= 1.15)
    if {"grammar-greedy", "engine-int4"} <= speed.keys():
        add(
            "grammar-greedy tok/s / engine-int4 tok/s (its answers are shorter)",
            speed["grammar-greedy"] / speed["engine-int4"],
            None,
            None,
        )
        per_token_ms = 1000 / speed["engine-int4"]
        add(
            f"grammar mask, mean {mask['mean']} ms / unconstrained token {per_token_ms:.1f} ms",
            mask["mean"] / per_token_ms,
            "<= 0.15",
            mask["mean"] / per_token_ms <= 0.15,
        )
    for method in ("exact", "estimate"):
        if {f"provenance-{method}", "engine-int4"} <= speed.keys():
            add(
                f"provenance ({method}) on: tok/s / off (engine-int4)",
                speed[f"provenance-{method}"] / speed["engine-int4"],
                None,
                None,
            )
    if "grammar-beam-w4" in speed:
        mask = results["grammar-beam-w4"]["details"]["mask_ms"]
        r = mask["constrained_s"] / mask["unconstrained_same_tokens_s"]
        add("width 4 with the grammar: time / without, same prompts and lengths", r, None, None)
    for suffix, what, target in (("", "plain prompts", 1.2), ("@repair", "repair-round prompts", 1.5)):
        spec, plain, cpp = f"spec-int4{suffix}", f"engine-int4{suffix}", f"llama.cpp{suffix}"
        if spec in speed and cpp in speed:
            r = speed[spec] / speed[cpp]
            add(f"speculation on, {what}: tok/s / llama.cpp's", r, f">= {target}", r >= target)
        if spec in speed and plain in speed:
            d = results[spec]["details"]
            add(
                f"speculation on / off, {what} (acceptance {d.get('acceptance')}, "
                f"{d.get('tokens_per_pass')} tokens per verification pass)",
                speed[spec] / speed[plain],
                None,
                None,
            )
            same = results[spec]["outputs"] == results[plain]["outputs"]
            add(f"speculation on, {what}: the same tokens as off (1 = identical)", float(same), "= 1", same)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return {}
    runners = [r.strip() for r in args.only.split(",") if r.strip()] or list(RUNNERS)
    unknown = set(runners) - set(RUNNERS)
    if unknown:
        raise SystemExit(f"unknown runners {sorted(unknown)}; known: {', '.join(RUNNERS)}")
    if args.no_llama_cpp and "llama.cpp" in runners:
        runners.remove("llama.cpp")
    from codegen.kernels import cpu_info

    base = prepare(args.prompts, any(r.endswith("@repair") for r in runners))
    machine = cpu_info()
    print(
        f"{len(base['prompts'])} prompts of {[len(p) for p in base['prompts']]} tokens"
        + (f" (repair rounds: {[len(p) for p in base['repair_prompts']]})" if base["repair_prompts"] else "")
        + f", {args.tokens} new tokens each, greedy; GGUF {base['gguf']}\n"
        f"CPU {machine['model']}, {machine['cores']} cores, {' '.join(machine['flags'])}; "
        f"torch kernels {machine['torch_capability']}",
        flush=True,
    )
    rounds: dict[str, list[dict]] = {r: [] for r in runners}
    for i in range(args.rounds):  # interleaved: A B C .. then A B C .. again
        print(f"round {i + 1} of {args.rounds}", flush=True)
        for runner in runners:
            r = run_runner(runner, base, args.tokens)
            rounds[runner].append(r)
            if "error" in r:
                print(f"  {runner:16s} failed: {r['error']}", flush=True)
            else:
                print(f"  {runner:16s} {r['tokens'] / r['seconds']:6.1f} tok/s  load {r['load_s']:.2f} s", flush=True)
    results = {runner: merged(runs) for runner, runs in rounds.items()}
    reference = results.get("hf-fp32", {}).get("outputs")
    cpp = results.get("llama.cpp", {}).get("tok_s")
    rows = []
    print(f"\nmedians over {args.rounds} round(s)")
    print("| runner | tok/s | vs llama.cpp | warm load (s) | imports (s) | same as hf-fp32 |")
    print("|---|---|---|---|---|---|")
    for runner, r in results.items():
        if "error" in r:
            continue
        same = None
        if reference and "@" not in runner:  # the reference answered the plain prompts
            same = sum(same_prefix(o, ref) for o, ref in zip(r["outputs"], reference, strict=False)) / r["tokens"]
        row = {
            "runner": runner,
            "tok_s": round(r["tok_s"], 1),
            "tok_s_rounds": [round(t, 1) for t in r["tok_s_rounds"]],
            "ratio_vs_llama_cpp": round(r["tok_s"] / cpp, 2) if cpp else None,
            "load_s": round(r["load_s"], 2),
            "imports_s": round(r["imports_s"], 2),
            "same_as_hf_fp32": round(same, 2) if same is not None else None,
            "details": r["details"],
        }
        rows.append(row)
        print(
            f"| {runner} | {row['tok_s']} | {row['ratio_vs_llama_cpp'] or '-'} | {row['load_s']} | {row['imports_s']} "
            f"| {row['same_as_hf_fp32'] if same is not None else '-'} |"
        )
    choice = results.get("engine-auto", {}).get("details", {}).get("kernel_choice")
    if choice:
        timed = ", ".join(
            f"{w} {c['ms_per_step']} ms/step{'' if c['same_tokens'] else ' (other tokens: refused)'}"
            for w, c in choice["candidates"].items()
            if c.get("ms_per_step") is not None
        )
        print(f"\nkernel chosen at load (LOCAL_DTYPE=auto, first round): {choice['chosen']}; timed: {timed}")
    comparisons = compare(results)
    if comparisons:
        print("\n| comparison | ratio | target | met |")
        print("|---|---|---|---|")
        for c in comparisons:
            met = "-" if c["met"] is None else ("yes" if c["met"] else "no")
            print(f"| {c['what']} | {c['ratio']} | {c['target'] or '-'} | {met} |")
    figures = {
        "tokens_per_prompt": args.tokens,
        "prompt_tokens": [len(p) for p in base["prompts"]],
        "gguf": base["gguf"],
        "cpus": os.cpu_count(),
        "cpu": machine,
        "rounds": args.rounds,
        "rows": rows,
        "comparisons": comparisons,
        "errors": {k: v["error"] for k, v in results.items() if "error" in v},
    }
    if cpp and DEFAULT in results and "tok_s" in results[DEFAULT]:
        d = results[DEFAULT]
        figures["default"] = {
            "runner": DEFAULT,
            "ratio_vs_llama_cpp": round(d["tok_s"] / cpp, 2),
            "warm_load_s": round(d["load_s"], 2),
        }
        print(
            f"\ndefault ({DEFAULT}): {d['tok_s'] / cpp:.2f} x llama.cpp's tok/s (target >= 0.5); "
            f"warm load {d['load_s']:.2f} s (target <= 3 s) + {d['imports_s']:.2f} s of imports"
        )
    from bench.gateway import write_figures

    print(f"figures: {write_figures('generate', figures)}")
    return figures


if __name__ == "__main__":
    main()
