"""Run untrusted Python (generated code, a spec's tests) in the sandbox engine, with limits.

Every run goes through `sandbox.engine` (bubblewrap, seccomp, a cgroup, its own uid); when that
cannot be built, `SandboxUnavailable` says why and nothing runs: there is no unconfined fallback.

Limits per run: `timeout_s` of wall clock (then the whole PID namespace is killed), `memory_mb`
(RLIMIT_AS per process, and the run's cgroup for all its processes together), `cpu_s` (RLIMIT_CPU),
`file_size_mb` (RLIMIT_FSIZE), and the engine's process count and CPU share (SandboxConfig).
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sandbox.engine import Outcome, RunLimits, SandboxConfig, SandboxUnavailable, engine

Status = Literal["passed", "failed", "timeout", "error"]
HARNESS = Path(__file__).with_name("harness.py")
JUDGE = ("judge.py", "held.py", "child.py", "wire.py")  # with the harness, in /sandbox for a test run
FAILED_FIELDS = ("stage", "index", "test", "error", "traceback", "actual", "expected", "op")
RECORD_TEXT = 10_000  # characters of any one field of the record kept
NO_VERDICT = "the process ended before the harness reported a result (os._exit, or its result channel closed)"


@dataclass
class SandboxResult:
    status: Status  # passed; failed: a test or the code failed; timeout: wall or CPU limit; error: killed or crashed
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str  # the isolation the run had, e.g. bubblewrap+seccomp+cgroup-v1
    signal: str | None = None  # the signal that ended the process, if one did
    # run_tests: {stage, index, test, error, traceback, actual, expected, op}; the last three are set when
    # the failing test is a comparison assert (the reprs of its two sides, and its operator)
    failed_test: dict | None = field(default=None)
    reason: str | None = None  # what ended a run that did not pass, when the code's own error does not say

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def isolation(config: SandboxConfig | None = None) -> str:
    """The isolation runs get here; raises SandboxUnavailable with the reason when there is none."""
    eng = engine(config or SandboxConfig())
    eng.check()
    return eng.isolation


def _limits(timeout_s: float, memory_mb: int, cpu_s: int | None, file_size_mb: int) -> RunLimits:
    return RunLimits(
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        file_size_mb=file_size_mb,
        cpu_s=int(cpu_s if cpu_s is not None else max(1, timeout_s) + 1),
    )


def _status(out: Outcome, limits: RunLimits) -> tuple[Status, str | None]:
    if out.timed_out:
        return "timeout", f"wall-clock limit of {limits.timeout_s:g} s"
    if out.signal == "SIGXCPU":
        return "timeout", f"CPU-time limit of {limits.cpu_s} s"
    if out.oom_killed:
        return "error", f"memory limit of {limits.memory_mb} MB (the run's processes together)"
    if out.exit_code == 0:
        return "passed", None
    if out.signal is not None:
        return "error", f"killed by {out.signal}"
    return "failed", None


def run_python(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
    file_size_mb: int = 16,
    config: SandboxConfig | None = None,
) -> SandboxResult:
    """Run `code` as a script (__main__); it passes when it exits 0. `cpu_s` defaults to the
    wall-clock timeout plus one second."""
    eng = engine(config or SandboxConfig())
    limits = _limits(timeout_s, memory_mb, cpu_s, file_size_mb)
    out = eng.run(
        {"main.py": code, **_harness(False)},
        ["/sandbox/harness.py", "script", "/sandbox/main.py"],
        limits,
        stdin=_input(limits, ""),
    )
    status, reason = _status(out, limits)
    return SandboxResult(
        status, out.exit_code, out.stdout, out.stderr, out.duration_s, eng.isolation, out.signal, None, reason
    )


def run_tests(
    code: str,
    tests: list[str],
    *,
    setup: list[str] | tuple[str, ...] = (),
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
    file_size_mb: int = 16,
    config: SandboxConfig | None = None,
) -> SandboxResult:
    """Run `code`, then the `setup` lines, then each test (Python source: asserts, or a check(...) call),
    all in one namespace.

    It passes only when the judge (sandbox/judge.py, the process in the sandbox that holds this run's
    nonce; the code runs in another) reports every test done with the nonce, and exits 0. The first
    failing test stops the run; `failed_test` then holds its index, source, error and traceback (which
    shows the failing line), and for a comparison assert the reprs of both sides (`actual`: the left,
    `expected`: the right); stage "solution" if the code itself raised, "setup" if a setup line did.
    A run whose code broke the judge's protocol (wrote on its channel, ended before its last test)
    fails with `reason` saying so."""
    eng = engine(config or SandboxConfig())
    limits = _limits(timeout_s, memory_mb, cpu_s, file_size_mb)
    nonce = secrets.token_hex(16)
    work = {"solution": code, "setup": list(setup), "tests": list(tests)}  # through the judge's input only
    out = eng.run(_harness(True), ["/sandbox/harness.py", "tests"], limits, stdin=_input(limits, nonce, work))
    status, reason = _status(out, limits)
    verdict = _verdict(out.result, nonce)
    failed = None
    if verdict is not None and isinstance(verdict.get("reason"), str) and status in ("passed", "failed"):
        status, reason = "failed", _clean(verdict["reason"])
    elif status == "passed":
        if verdict is None or verdict.get("stage") != "done" or verdict.get("passed") != len(tests):
            status, reason = "failed", NO_VERDICT
    elif verdict is not None and verdict.get("stage") != "done":
        failed = {k: _clean(verdict.get(k)) for k in FAILED_FIELDS}
    if status == "failed" and failed is None and reason is None:
        reason = NO_VERDICT
    return SandboxResult(
        status, out.exit_code, out.stdout, out.stderr, out.duration_s, eng.isolation, out.signal, failed, reason
    )


def compared(failed: dict | None) -> str | None:
    """A failed comparison in words: "expected 3, got 4" for ==, both sides for another operator; None
    when the failing test was no comparison assert (`failed`: a SandboxResult's failed_test)."""
    f = failed or {}
    if f.get("actual") is None or f.get("expected") is None:
        return None
    if f.get("op") == "==":
        return f"expected {f['expected']}, got {f['actual']}"
    return f"`{f.get('op')}` does not hold between {f['actual']} (left) and {f['expected']} (right)"


def _clean(value):
    """A string from the record as text any store takes (no NUL, no lone surrogate: PostgreSQL's jsonb
    refuses both), capped; other values as they are."""
    if not isinstance(value, str):
        return value
    text = value[:RECORD_TEXT].replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@functools.cache
def _harness(tests: bool) -> dict[str, str]:
    """The harness's files, read once: /sandbox/harness.py, and the judge's modules for a test run."""
    names = ("harness.py", *JUDGE) if tests else ("harness.py",)
    return {name: HARNESS.with_name(name).read_text("utf-8") for name in names}


def _input(limits: RunLimits, nonce: str, work: dict | None = None) -> bytes:
    """What the harness reads first: the rlimits to set, the run's nonce, and for a test run the
    solution, the setup lines and the tests (never a file in the sandbox: see sandbox/judge.py)."""
    lim = {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s, "file_size_mb": limits.file_size_mb}
    return json.dumps({"nonce": nonce, "limits": lim, **(work or {})}).encode()


def _verdict(raw: bytes, nonce: str) -> dict | None:
    """The harness's record, if it is one and carries this run's nonce."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not secrets.compare_digest(str(record.get("nonce", "")), nonce):
        return None
    return record


__all__ = ["SandboxConfig", "SandboxResult", "SandboxUnavailable", "compared", "isolation", "run_python", "run_tests"]
