"""Run untrusted Python in a subprocess with limits.

Each run: a fresh temporary directory (the working directory, removed afterwards), the same
interpreter with `-I` (isolated: no user site, no PYTHON* variables, no script directory on the
path), a new session (process group) that the wall-clock timeout kills as a whole, and resource
limits set in the child before exec:

- RLIMIT_AS (address space, `memory_mb`): a memory bomb gets MemoryError or dies;
- RLIMIT_CPU (`cpu_s`): a busy loop gets SIGXCPU/SIGKILL even if the wall clock is generous;
- RLIMIT_FSIZE (`file_size_mb`): writing a huge file fails with EFBIG (Python ignores SIGXFSZ);
- RLIMIT_CORE 0; RLIMIT_NPROC only when `max_processes` is given and we are not root (the limit
  counts every process of the real user, and root ignores it, so it is off by default).

No network where the platform allows it: `unshare -n` as root, else `unshare --user
--map-root-user -n`; the first that works (probed once per process) wraps the command, and the
result says which applied (`isolation`: "netns", "userns+netns" or "none"). This is a guard rail for
generated code, not a security boundary against a determined attacker (same user, same filesystem).
"""
from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]
HARNESS = Path(__file__).with_name("harness.py")
MAX_OUTPUT = 16_000  # characters of stdout/stderr kept


@dataclass
class SandboxResult:
    status: Status  # passed: exit 0; failed: non-zero exit; timeout: wall or CPU limit; error: could not run / killed by a signal
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str = "none"  # how the network was cut: netns, userns+netns, none
    signal: str | None = None  # the signal that ended the process, if one did
    failed_test: dict | None = field(default=None)  # run_tests: {stage, index, test, error, traceback}

    @property
    def passed(self) -> bool:
        return self.status == "passed"


_PREFIXES = {"netns": ["unshare", "-n"], "userns+netns": ["unshare", "--user", "--map-root-user", "-n"]}


@functools.cache
def isolation() -> str:
    """The network isolation this platform allows: "netns", "userns+netns" or "none" (probed once)."""
    if not shutil.which("unshare"):
        return "none"
    order = ["netns", "userns+netns"] if os.geteuid() == 0 else ["userns+netns", "netns"]
    for name in order:
        try:
            probe = subprocess.run([*_PREFIXES[name], sys.executable, "-I", "-c", "pass"],
                                   capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return name
    return "none"


def _limits(memory_mb: int, cpu_s: int, file_size_mb: int, max_processes: int | None):
    def apply() -> None:  # runs in the child between fork and exec
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * mb, memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_mb * mb, file_size_mb * mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if max_processes is not None and os.getuid() != 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))

    return apply


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_OUTPUT * 4 + 1)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if len(text) > MAX_OUTPUT:
        text = text[:MAX_OUTPUT] + "\n... [truncated]"
    return text


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _execute(files: dict[str, str], argv: list[str], *, timeout_s: float, memory_mb: int, cpu_s: int | None,
             file_size_mb: int, network: bool, max_processes: int | None,
             result_file: str | None = None) -> SandboxResult:
    root = Path(tempfile.mkdtemp(prefix="specmill-sandbox-"))
    try:
        work = root / "work"  # the code's working directory; outputs and harness files sit beside it
        work.mkdir()
        for name, content in files.items():
            (root / name).write_text(content, encoding="utf-8")
        how = "none" if network else isolation()
        cmd = [*(_PREFIXES[how] if how != "none" else []), sys.executable, "-I", *argv]
        cpu = int(cpu_s if cpu_s is not None else max(1, timeout_s) + 1)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(work),
               "TMPDIR": str(work), "PYTHONHASHSEED": "0"}
        started = time.perf_counter()
        timed_out = False
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            try:
                proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                        start_new_session=True,
                                        preexec_fn=_limits(memory_mb, cpu, file_size_mb, max_processes))
            except OSError as e:
                return SandboxResult("error", None, "", f"could not start: {e}", 0.0, how)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)  # also whatever the code left running in its group
            proc.wait()
        duration = time.perf_counter() - started
        code = proc.returncode
        sig = signal.Signals(-code).name if code is not None and code < 0 else None
        if timed_out or sig in ("SIGXCPU",) or (sig == "SIGKILL" and cpu and duration >= cpu - 0.5):
            status: Status = "timeout"
        elif code == 0:
            status = "passed"
        elif sig is not None:
            status = "error"
        else:
            status = "failed"
        failed = None
        if result_file and status != "passed":
            try:
                failed = json.loads((root / result_file).read_text(encoding="utf-8"))
                if failed.get("stage") == "done":
                    failed = None
            except (OSError, ValueError):
                failed = None
        return SandboxResult(status, code, _read(root / "stdout"), _read(root / "stderr"), round(duration, 3),
                             how, sig, failed)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 512, cpu_s: int | None = None,
               file_size_mb: int = 16, network: bool = False, max_processes: int | None = None) -> SandboxResult:
    """Run `code` as a script (python -I main.py) with the limits above. `cpu_s` defaults to the
    wall-clock timeout plus one second; `network=True` skips the isolation."""
    return _execute({"main.py": code}, [str(Path("..") / "main.py")], timeout_s=timeout_s, memory_mb=memory_mb,
                    cpu_s=cpu_s, file_size_mb=file_size_mb, network=network, max_processes=max_processes)


def run_tests(code: str, tests: list[str], *, timeout_s: float = 10.0, memory_mb: int = 512, cpu_s: int | None = None,
              file_size_mb: int = 16, network: bool = False, max_processes: int | None = None) -> SandboxResult:
    """Run `code`, then each test (Python source: asserts, or a check(...) call) in its namespace.

    The first failing test stops the run; `failed_test` then holds its index, source, error and
    traceback (which shows the failing line), or stage "solution" if the code itself raised."""
    files = {"solution.py": code, "tests.json": json.dumps(list(tests)), "harness.py": HARNESS.read_text("utf-8")}
    argv = ["../harness.py", "../solution.py", "../tests.json", "../result.json"]
    return _execute(files, argv, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s, file_size_mb=file_size_mb,
                    network=network, max_processes=max_processes, result_file="result.json")
