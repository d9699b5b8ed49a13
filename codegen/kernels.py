"""Which weight kernels the local engine (codegen/llama_engine.py) runs on the machine at hand.

A small model's decoding is bound by reading its weights, and which kernel reads them fastest depends on
the CPU: torch's int4 and int8 weight-only products, and bf16's (oneDNN, which takes AMX where the CPU has
it), rank differently on an Intel Xeon with AMX and on an AMD EPYC without. So with `LOCAL_DTYPE=auto` the
engine is built once per candidate at load and each decodes the same few greedy steps of a fixed prompt:

- the reference is the most precise candidate (bf16, the last of CPU_CANDIDATES), built first;
- a candidate whose greedy tokens differ from the reference's on those steps is refused, however fast
  (its quantisation changes what the model writes);
- of the rest, the fastest median time per step wins. At most two engines exist at once: the best so
  far and the one being timed.

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
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from codegen.llama_engine import LlamaEngine

CPU_CANDIDATES = ("int4", "int8", "bf16")  # the reference (the most precise) last
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
    same_tokens: bool | None = None
    error: str | None = None

    def summary(self) -> dict:
        out: dict = {"ms_per_step": self.ms_per_step, "same_tokens": self.same_tokens}
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
            "by": f"the fastest of {len(self.trials)} timed at load with the reference's greedy tokens",
            "reference": self.trials[0].weights if self.trials else None,
            "steps": PROBE_STEPS,
            "candidates": {t.weights: t.summary() for t in self.trials},
            "cpu": cpu_info(),
        }


@torch.inference_mode()
def probe(engine: LlamaEngine, prompt: list[int], steps: int = PROBE_STEPS) -> tuple[list[int], float]:
    """Greedy tokens after `prompt`, one forward pass each, and the median seconds per pass (the first
    WARMUP_STEPS passes are decoded but not timed)."""
    cache = engine.new_cache(len(prompt) + WARMUP_STEPS + steps + 1)
    logits = engine.forward(torch.tensor([prompt], device=engine.device), 0, cache)
    tokens: list[int] = []
    times: list[float] = []
    for step in range(WARMUP_STEPS + steps):
        token = int(torch.argmax(logits))
        tokens.append(token)
        started = time.perf_counter()
        logits = engine.forward(torch.tensor([[token]], device=engine.device), len(prompt) + step, cache)
        if step >= WARMUP_STEPS:
            times.append(time.perf_counter() - started)
    return tokens, statistics.median(times)


def choose(
    build: Callable[[str], LlamaEngine], prompt: list[int], candidates: tuple[str, ...] = CPU_CANDIDATES
) -> Choice:
    """The engine of the fastest candidate whose greedy tokens after `prompt` are the reference's (the last
    candidate, built and timed first). `build(weights)` makes an engine; a candidate it cannot build (a
    kernel this torch lacks) is reported with its error and skipped. The reference failing fails the load."""
    reference, *others = reversed(candidates)
    best = build(reference)
    truth, seconds = probe(best, prompt)
    first = Trial(reference, round(seconds * 1000, 2), True)
    trials, best_trial = [first], first
    for weights in others:
        trial = Trial(weights)
        trials.append(trial)
        try:
            engine = build(weights)
        except Exception as err:  # noqa: BLE001 - a refused kernel is a result: reported, not chosen
            trial.error = f"{type(err).__name__}: {err}"
            continue
        tokens, seconds = probe(engine, prompt)
        trial.ms_per_step, trial.same_tokens = round(seconds * 1000, 2), tokens == truth
        if trial.same_tokens and trial.ms_per_step < (best_trial.ms_per_step or float("inf")):
            best, best_trial = engine, trial
        del engine
    return Choice(best, best_trial.weights, trials)
