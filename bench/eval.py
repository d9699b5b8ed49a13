"""HumanEval (and MBPP's test split) through the real generation path (`make eval`).

    .venv/bin/python bench/eval.py [--model local_llama] [--techniques retrieval_augmentation]
        [--limit N] [--dtype auto|int4|int8|bf16|fp32] [--max-new-tokens 384] [--timeout 10]
        [--mbpp PATH [--mbpp-split test]] [--threads N] [--name NAME] [--out docs/eval]

Greedy decoding, the fixed prompt of codegen/evaluate.py, each completion run in sandbox/ against
the problem's tests. Prints one line per problem and a summary; writes docs/eval/<name>.json and
regenerates docs/eval/README.md. The model comes from the usual settings (MODELS_DIR, LOCAL_MODEL,
LOCAL_DTYPE, ...); the backend is called in process through codegen.manager.ModelManager.
`--mbpp PATH` is needed for retrieval augmentation (its corpus: MBPP train split 601-974) and for
`--mbpp-split test` (MBPP test split 11-510 instead of HumanEval).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codegen import evaluate as ev
from codegen.manager import ModelManager
from infra.progress import bar
from models.settings import Settings
from models.techniques import TechniqueOptions, check
from models.techniques.retrieval_augmentation import TECHNIQUE as RETRIEVAL
from models.techniques.syntax_aware_beam_search import TECHNIQUE as BEAM
from models.techniques.syntax_aware_beam_search import BeamSettings
from sandbox import SandboxConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="local_llama")
    p.add_argument("--techniques", default="", help="comma-separated; empty: the baseline")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument(
        "--dtype",
        choices=["auto", "int4", "int8", "bf16", "fp32"],
        default=None,
        help="local_llama weights (LOCAL_DTYPE)",
    )
    p.add_argument("--local-model", default=None, help="LOCAL_MODEL override")
    p.add_argument(
        "--draft-tokens",
        type=int,
        default=None,
        help="local_llama's prompt-lookup speculation (LOCAL_DRAFT_TOKENS; 0: off). A run with it on is named "
        "-draft<N>, and is compared with the same run without it when that one is there",
    )
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per sandboxed test run")
    p.add_argument("--mbpp", type=Path, default=None, help="path to mbpp.jsonl (retrieval corpus, MBPP benchmark)")
    p.add_argument(
        "--mbpp-split",
        choices=["test", "validation"],
        default=None,
        help="evaluate this MBPP split instead of HumanEval",
    )
    p.add_argument("--beam-width", type=int, default=None, help="syntax_aware_beam_search: width (1-8)")
    p.add_argument("--length-penalty", type=float, default=None, help="syntax_aware_beam_search: length penalty")
    p.add_argument(
        "--visible-tests",
        choices=["on", "off"],
        default=None,
        help="syntax_aware_beam_search: rank the beams by the docstring's examples (HumanEval only)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--name", default=None, help="results file name (default from the settings)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "eval")
    return p.parse_args(argv)


def options(args: argparse.Namespace, techniques: list[str]) -> TechniqueOptions:
    """The techniques' parameters from the flags (a flag for a technique not asked for is an error)."""
    beam = {
        k: v
        for k, v in {
            "width": args.beam_width,
            "length_penalty": args.length_penalty,
            "visible_tests": None if args.visible_tests is None else args.visible_tests == "on",
        }.items()
        if v is not None
    }
    if beam and BEAM.name not in techniques:
        raise SystemExit(f"--beam-width, --length-penalty and --visible-tests need {BEAM.name}")
    return TechniqueOptions(**{BEAM.name: BeamSettings(**beam)} if beam else {})


def source_commit() -> str | None:
    """The checkout's commit, with "+changes" when tracked files differ from it (None: not a git checkout)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


class Partial:
    """A run's records so far, one JSON line each after a first line with the run's settings: a run
    stopped (a session that ends, a kill) continues where it was with the same command. Settings that
    differ from the file's are refused rather than mixed into one result."""

    def __init__(self, path: Path, fingerprint: dict) -> None:
        self.path, self.fingerprint = path, fingerprint

    def load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        lines = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:  # the line a kill tore: it and anything after it are dropped
                break
        if not lines or lines[0].get("settings") != self.fingerprint:
            raise SystemExit(
                f"{self.path} holds a run with other settings ({lines[0].get('settings') if lines else 'none'}); "
                "delete it, or give this run another --name"
            )
        self.path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")  # whole lines
        return {line["record"]["task_id"]: line["record"] for line in lines[1:] if "record" in line}

    def add(self, record: dict, commit: str | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text(json.dumps({"settings": self.fingerprint}) + "\n", encoding="utf-8")
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"record": record, "commit": commit}) + "\n")

    def commits(self) -> list[str]:
        if not self.path.exists():
            return []
        seen = [json.loads(line).get("commit") for line in self.path.read_text(encoding="utf-8").splitlines()[1:]]
        return list(dict.fromkeys(c for c in seen if c))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def main(argv: list[str] | None = None, settings: Settings | None = None) -> dict:
    args = parse_args(argv)
    techniques = check([t.strip() for t in args.techniques.split(",") if t.strip()])
    if (RETRIEVAL.name in techniques or args.mbpp_split) and args.mbpp is None:
        raise SystemExit(f"--mbpp PATH is needed for {RETRIEVAL.name} and for --mbpp-split")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = settings or Settings()
    given = {"local_dtype": args.dtype, "local_model": args.local_model, "local_draft_tokens": args.draft_tokens}
    update = {k: v for k, v in given.items() if v is not None}
    settings = settings.model_copy(update=update)
    if args.mbpp_split:
        problems, benchmark = ev.load_mbpp(args.mbpp, args.mbpp_split, args.limit), f"mbpp-{args.mbpp_split}"
    else:
        problems, benchmark = ev.load_humaneval(args.limit), "humaneval"
    backend = ModelManager(settings).backend(args.model)
    t0 = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t0
    status = backend.status()
    local = args.model == "local_llama"
    model_label = Path(settings.local_model).name if local else status.model
    dtype = status.details.get("dtype") if local else None
    speculation = status.details.get("speculation", {}) if local else {}
    draft = f"draft{speculation['draft_tokens']}" if speculation.get("on") else None
    retriever = ev.MbppRetriever(args.mbpp) if RETRIEVAL.name in techniques else None
    cfg = ev.EvalConfig(
        model=args.model,
        techniques=techniques,
        max_new_tokens=args.max_new_tokens,
        timeout_s=args.timeout,
        sandbox=SandboxConfig.from_settings(settings),
        options=options(args, techniques),
    )
    print(
        f"{benchmark}: {len(problems)} problems, {args.model} ({model_label}, {dtype or '-'}), "
        f"techniques: {', '.join(techniques) or 'baseline'}; model load {load_s:.1f} s",
        flush=True,
    )

    tally = {"passed": 0, "done": 0}  # of this sitting's problems

    def progress(i: int, r: dict) -> None:
        tally["passed"] += bool(r["passed"])
        tally["done"] += 1
        if advance is not None:  # a terminal: the bar, with the pass rate so far
            advance(note=f"passed {tally['passed']}/{tally['done']}")
            return
        print(
            f"[{i + 1}/{len(problems)}] {r['task_id']}: {r['status']:7s} parses={r['parses']} "
            f"{r['tokens_out']} tok in {r['latency_s']:.1f} s {(r['error'] or '')[:80]}",
            flush=True,
        )

    name = args.name or "-".join(
        filter(
            None,
            [
                benchmark,
                model_label,
                dtype,
                "+".join(techniques) or "baseline",
                f"w{args.beam_width}" if args.beam_width else None,
                "no-visible-tests" if args.visible_tests == "off" else None,
                f"first{args.limit}" if args.limit else None,
                draft,
            ],
        )
    )
    commit = source_commit()  # before the run: the code it ran
    fingerprint = {
        "benchmark": benchmark,
        "model": args.model,
        "model_label": model_label,
        "dtype": dtype,
        "techniques": techniques,
        "options": cfg.options.model_dump(exclude_none=True),
        "max_new_tokens": args.max_new_tokens,
        "timeout_s": args.timeout,
        "limit": args.limit,
        "threads": args.threads,
        **({"draft_tokens": speculation["draft_tokens"]} if draft else {}),
    }
    partial = Partial(args.out / "partial" / f"{name}.jsonl", fingerprint)
    done = partial.load()
    if done:
        print(f"resuming {name}: {len(done)} of {len(problems)} problems done in earlier sittings", flush=True)
    with bar(f"{benchmark}", len(problems) - len(done)) as advance:
        summary = ev.evaluate(
            problems,
            backend,
            cfg,
            retriever=retriever,
            progress=progress,
            done=done,
            on_record=lambda record: partial.add(record, commit),
        )
    result = {
        "name": name,
        "benchmark": benchmark,
        "model": args.model,
        "model_label": model_label,
        "dtype": dtype,
        "techniques": techniques,
        "decoding": "beam" if BEAM.name in techniques else "greedy",
        "options": cfg.options.model_dump(exclude_none=True),
        "generation_path": "shared",  # codegen/generate.py + models/generation_steps.py, as the product runs them
        "max_new_tokens": args.max_new_tokens,
        "timeout_s": args.timeout,
        "limit": args.limit,
        "threads": args.threads,
        "model_load_s": round(load_s, 2),
        "backend": status.details,
        "prompt": ev.PROMPT_HUMANEVAL if benchmark == "humaneval" else "mbpp text + tests",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "commits": partial.commits() or [commit],
        "settings": fingerprint,
        "summary": summary,
    }
    if draft:
        result["without_speculation"] = against_plain(args.out / f"{name.removesuffix('-' + draft)}.json", summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    partial.remove()
    (args.out / "README.md").write_text(ev.render_table(args.out), encoding="utf-8")
    s = summary
    print(
        f"pass@1 {s['pass@1']:.3f} (95% CI {s['ci95'][0]:.3f}-{s['ci95'][1]:.3f}), {s['passed']}/{s['problems']}; "
        f"parses {s['parse_rate']:.2f}; {s['tokens_per_s']:.1f} tok/s; wall {s['wall_s']:.0f} s; "
        f"-> {args.out / (name + '.json')}"
    )
    print(json.dumps({k: v for k, v in s.items() if k != "records"}))
    if result.get("without_speculation"):
        w = result["without_speculation"]
        print(
            f"against the same run without speculation ({w['file']}): {w['same_code']}/{w['compared']} the same "
            f"code, {w['same_verdict']}/{w['compared']} the same verdict; wall {w['wall_s']:.0f} s without, "
            f"{s['wall_s']:.0f} s with ({w['wall_s'] / s['wall_s']:.2f}x); generation {w['tokens_per_s']:.1f} "
            f"tok/s without, {s['tokens_per_s']:.1f} with"
        )
    return result


def against_plain(path: Path, summary: dict) -> dict | None:
    """This run's answers against the same run's without speculation (greedy: they must be the same)."""
    if not path.exists():
        return None
    plain = json.loads(path.read_text(encoding="utf-8"))["summary"]
    theirs = {r["task_id"]: r for r in plain["records"]}
    mine = [r for r in summary["records"] if r["task_id"] in theirs]
    return {
        "file": path.name,
        "commit": json.loads(path.read_text(encoding="utf-8")).get("commit"),
        "compared": len(mine),
        "same_code": sum(r.get("code") == theirs[r["task_id"]].get("code") for r in mine),
        "same_verdict": sum(r["passed"] == theirs[r["task_id"]]["passed"] for r in mine),
        "wall_s": plain["wall_s"],
        "tokens_per_s": plain["tokens_per_s"],
    }


if __name__ == "__main__":
    main()
