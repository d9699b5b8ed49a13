"""Per-run cgroups: memory, pids and cpu limits that hold for a run's processes together.

cgroup v2 where the machine has it (a unified hierarchy with the three controllers), v1 otherwise
(one directory per controller under /sys/fs/cgroup/<controller>/). Runs live under `specmill/`;
each gets `run-<id>`, is joined by the sandbox's first process before any untrusted code runs, and
is emptied (SIGKILL) and removed afterwards. Creating them needs root, or a delegated subtree named
with SANDBOX_CGROUP_ROOT (for example a systemd unit with Delegate=yes).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


class CgroupUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    pids: int
    cpus: float


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class Hierarchy:
    """Where run cgroups are made: `version` 2 (one base) or 1 (a base per controller)."""

    def __init__(self, root: Path | None = None) -> None:
        self.version, self.bases = self._find(root)

    @staticmethod
    def _find(root: Path | None) -> tuple[int, dict[str, Path]]:
        if root is not None:  # a delegated subtree: v2 if it has cgroup.controllers
            if (root / "cgroup.controllers").exists():
                return 2, {"": root}
            raise CgroupUnavailable(f"{root} is not a cgroup v2 directory")
        v2 = CGROUP_FS / "cgroup.controllers"
        if v2.exists() and set(CONTROLLERS) <= set(v2.read_text().split()):
            return 2, {"": CGROUP_FS / "specmill"}
        v1 = {c: CGROUP_FS / c / "specmill" for c in CONTROLLERS if (CGROUP_FS / c / "tasks").exists()}
        if set(v1) == set(CONTROLLERS):
            return 1, v1
        raise CgroupUnavailable("no cgroup hierarchy with the memory, pids and cpu controllers under /sys/fs/cgroup")

    def prepare(self) -> None:
        try:
            for base in self.bases.values():
                base.mkdir(exist_ok=True)
            if self.version == 2:
                base = self.bases[""]
                if base.parent == CGROUP_FS:
                    _write(CGROUP_FS / "cgroup.subtree_control", "+memory +pids +cpu")
                _write(base / "cgroup.subtree_control", "+memory +pids +cpu")
        except OSError as err:
            raise CgroupUnavailable(f"cannot create run cgroups under {list(self.bases.values())[0]}: {err}") from err
        self._sweep()

    def _sweep(self, min_age_s: float = 3600) -> None:
        """Remove run cgroups a crashed worker left: empty ones (rmdir refuses others), old enough
        not to be another worker's run that is being set up."""
        cutoff = time.time() - min_age_s
        for base in self.bases.values():
            for old in base.glob("run-*"):
                try:
                    if old.stat().st_mtime < cutoff:
                        old.rmdir()
                except OSError:
                    pass

    def create(self, limits: Limits) -> "RunCgroup":
        run = RunCgroup(self, f"run-{uuid.uuid4().hex}")
        try:
            run.make(limits)
        except OSError as err:
            run.destroy()
            raise CgroupUnavailable(f"cannot set up a run cgroup: {err}") from err
        return run


class RunCgroup:
    def __init__(self, hierarchy: Hierarchy, name: str) -> None:
        self.h, self.name = hierarchy, name
        self.dirs = {c: base / name for c, base in hierarchy.bases.items()}

    def make(self, limits: Limits) -> None:
        memory = str(limits.memory_mb * 1024 * 1024)
        quota = str(max(1000, int(CPU_PERIOD_US * limits.cpus)))
        for d in self.dirs.values():
            d.mkdir()
        if self.h.version == 2:
            d = self.dirs[""]
            _write(d / "memory.max", memory)
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(limits.pids))
            _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        mem = self.dirs["memory"]
        _write(mem / "memory.limit_in_bytes", memory)
        if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit
            _write(mem / "memory.memsw.limit_in_bytes", memory)
        _write(self.dirs["pids"] / "pids.max", str(limits.pids))
        _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(self.dirs["cpu"] / "cpu.cfs_quota_us", quota)

    def join(self, pid: int) -> None:
        """Move `pid` into the run's cgroup. Plain system calls only: it also runs between fork and exec
        (sandbox/engine.py), where a lock another thread held at the fork would never be released."""
        data = str(pid).encode()
        for d in self.dirs.values():
            fd = os.open(d / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def oom_killed(self) -> bool:
        """Did the memory limit kill a process of this run?"""
        d = self.dirs.get("") or self.dirs["memory"]
        name = "memory.events" if self.h.version == 2 else "memory.oom_control"
        try:
            for line in (d / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def destroy(self, deadline_s: float = 5.0) -> None:
        """SIGKILL whatever is left in the run, then remove its directories."""
        end = time.monotonic() + deadline_s
        while True:
            pids = self._pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            removed = True
            for d in self.dirs.values():
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    removed = False
            if removed or time.monotonic() > end:
                return
            time.sleep(0.01)  # the killed processes are being reaped by the kernel
