"""Which weight kernels the local engine (codegen/llama_engine.py) runs on the machine at hand.

A small model's decoding is bound by reading its weights, and which kernel reads them fastest depends on
the CPU: torch's int4 and int8 weight-only products, and bf16's (oneDNN, which takes AMX where the CPU has
it), rank differently on an Intel Xeon with AMX and on an AMD EPYC without. So with `LOCAL_DTYPE=auto` the
engine is built once per candidate at load and each runs the same few greedy steps of a fixed prompt:

- the reference is fp32, the weights as loaded (for a GGUF, its dequantized values), built and run first:
  its greedy tokens, and at each step the margin between its best logit and the runner-up;
- each other candidate is fed the reference's tokens and must choose the reference's token at every step
  where that margin is at least TIE_MARGIN. Below it the reference's choice is a near-tie that any rounding
  flips: bf16 activations alone flip it (on SmolLM2-135M every kernel, bf16 included, parted from fp32
  only at steps whose margin was 0.02 to 0.34, while their logits differed by up to 3 elsewhere); such
  steps are counted, not compared. A candidate that chooses otherwise at a clear step is refused however
  fast: its kernel or its quantisation changes what the model writes;
- of those that pass, fp32 included, the fastest median time per step wins. At most two engines exist at
  once: the best so far and the one being timed.

What was timed and what was chosen goes in the model's details (GET /api/models shows them to admins)
and in make bench-generate. An explicit LOCAL_DTYPE skips all this and runs what it names.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from codegen.llama_engine import LlamaEngine

CPU_CANDIDATES = ("int4", "int8", "bf16", "fp32")  # the reference (the weights as loaded) last
TIE_MARGIN = 0.5  # logits: a reference choice whose runner-up is closer than this is a near-tie
PROBE = 'def count_vowels(text: str) -> int:\n    """Return how many vowels `text` has."""\n'
PROBE_STEPS = 12
WARMUP_STEPS = 2
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_info() -> dict:
    """The CPU: its model, its cores, the instruction sets the kernels may use, and torch's capability."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    lines = text.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return {
        "model": model or "unknown",
        "cores": os.cpu_count(),
        "flags": [f for f in ISA_FLAGS if f in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }


@dataclass
class Trial:
    weights: str
    ms_per_step: float | None = None
    same_tokens: bool | None = None  # the reference's token at every clear step
    differs_at: list[int] = field(default_factory=list)  # clear steps where it chose another token
    near_ties: int = 0  # steps not compared: the reference's margin was below TIE_MARGIN
    error: str | None = None

    def summary(self) -> dict:
        out: dict = {"ms_per_step": self.ms_per_step, "same_tokens": self.same_tokens, "near_ties": self.near_ties}
        if self.differs_at:
            out["differs_at_steps"] = self.differs_at
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Choice:
    engine: LlamaEngine  # the chosen one
    weights: str
    trials: list[Trial] = field(default_factory=list)

    def details(self) -> dict:
        """The model's details["kernel_choice"]."""
        return {
            "chosen": self.weights,
            "by": f"the fastest of {len(self.trials)} timed at load that choose the reference's greedy tokens "
            f"(near-ties aside: a margin under {TIE_MARGIN})",
            "reference": self.trials[0].weights if self.trials else None,
            "steps": PROBE_STEPS,
            "candidates": {t.weights: t.summary() for t in self.trials},
            "cpu": cpu_info(),
        }


class Run(NamedTuple):
    tokens: list[int]  # the token chosen at each step
    margins: list[float]  # the best logit minus the runner-up, at each step
    seconds: float  # the median time of a step, after WARMUP_STEPS


@torch.inference_mode()
def run(engine: LlamaEngine, prompt: list[int], steps: int = PROBE_STEPS, feed: list[int] | None = None) -> Run:
    """WARMUP_STEPS + `steps` greedy steps after `prompt`, one forward pass each: fed its own choices, or the
    tokens of `feed` (another engine's choices, so that both see the same sequence)."""
    total = WARMUP_STEPS + steps
    cache = engine.new_cache(len(prompt) + total + 1)
    logits = engine.forward(torch.tensor([prompt], device=engine.device), 0, cache)
    tokens: list[int] = []
    margins: list[float] = []
    times: list[float] = []
    for step in range(total):
        top = torch.topk(logits, 2)
        tokens.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        token = feed[step] if feed is not None else tokens[-1]
        started = time.perf_counter()
        logits = engine.forward(torch.tensor([[token]], device=engine.device), len(prompt) + step, cache)
        if step >= WARMUP_STEPS:
            times.append(time.perf_counter() - started)
    return Run(tokens, margins, statistics.median(times))


def choose(
    build: Callable[[str], LlamaEngine],
    prompt: list[int],
    candidates: tuple[str, ...] = CPU_CANDIDATES,
    tie_margin: float = TIE_MARGIN,
) -> Choice:
    """The engine of the fastest candidate that chooses the reference's greedy tokens after `prompt` wherever
    the reference's choice is clear (the reference: the last candidate, built and run first). `build(weights)`
    makes an engine; a candidate it cannot build (a kernel this torch lacks) is reported with its error and
    skipped. The reference failing fails the load."""
    reference, *others = reversed(candidates)
    best = build(reference)
    truth = run(best, prompt)
    clear = [step for step, margin in enumerate(truth.margins) if margin >= tie_margin]
    ties = len(truth.margins) - len(clear)
    first = Trial(reference, round(truth.seconds * 1000, 2), True, near_ties=ties)
    trials, best_trial = [first], first
    for weights in others:
        trial = Trial(weights)
        trials.append(trial)
        try:
            engine = build(weights)
        except Exception as err:  # noqa: BLE001 - a refused kernel is a result: reported, not chosen
            trial.error = f"{type(err).__name__}: {err}"
            continue
        got = run(engine, prompt, feed=truth.tokens)
        trial.ms_per_step = round(got.seconds * 1000, 2)
        trial.differs_at = [step for step in clear if got.tokens[step] != truth.tokens[step]]
        trial.near_ties = ties
        trial.same_tokens = not trial.differs_at
        if trial.same_tokens and trial.ms_per_step < (best_trial.ms_per_step or float("inf")):
            best, best_trial = engine, trial
        del engine
    return Choice(best, best_trial.weights, trials)
