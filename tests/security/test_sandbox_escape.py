"""The attacks that escaped the old test runner, against the sandbox, each run as a spec's test would
run (run_tests, the debugging activity's path): each is contained, and recorded as that test's failure.

A test's source is any Python (`assert not exec(...)` defeats the `^\\s*assert` pattern), so each
attack is written as plain code here.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from sandbox import SandboxConfig, isolation, run_python, run_tests

CHECKOUT = Path(__file__).resolve().parents[2]


def attack(source: str, **kw):
    """Run `source` as the one test of an empty solution."""
    return run_tests("", [textwrap.dedent(source)], **kw)


def failed_with(run, error: str) -> bool:
    return run.status == "failed" and run.failed_test is not None and run.failed_test["error"].startswith(error)


# --- secrets and the host's files -------------------------------------------------------------


def test_the_env_file_and_etc_shadow_cannot_be_read(tmp_path):
    env = tmp_path / "env"
    env.write_text("JWT_SECRET=do-not-leak\n")
    env.chmod(0o600)
    for path in (env, Path("/etc/shadow"), CHECKOUT / ".specmill" / "env", Path("/proc/1/root/etc/shadow")):
        run = attack(f"print(open({str(path)!r}).read())")
        # /proc/1 is the judge of a test run, undumpable: its root cannot even be entered
        refused = ("FileNotFoundError", "PermissionError") if str(path).startswith("/proc/1/") else "FileNotFoundError"
        assert failed_with(run, refused), (path, run)
        assert "do-not-leak" not in run.stdout + run.stderr


def test_listing_shows_only_the_sandbox_root():
    run = run_python("import os, json\nprint(json.dumps(sorted(os.listdir('/'))))")
    assert run.status == "passed"
    assert set(json.loads(run.stdout)) <= {"usr", "lib", "lib64", "bin", "proc", "dev", "tmp", "work", "sandbox"}
    usr = run_python("import os\nprint(sorted(os.listdir('/usr/lib')), sorted(os.listdir('/usr')))")
    assert usr.status == "passed" and "jvm" not in usr.stdout and "python3'" not in usr.stdout  # no dist-packages
    for path in (CHECKOUT, CHECKOUT / ".specmill", Path("/etc"), Path("/root"), Path("/run"), Path("/var")):
        run = attack(f"import os\nprint(os.listdir({str(path)!r}))")
        assert failed_with(run, "FileNotFoundError"), (path, run)


def test_other_runs_leave_nothing_to_find():
    marker = f"marker-{uuid.uuid4().hex}"
    first = run_python(f"open('/work/{marker}', 'w').write('x')\nopen('/tmp/{marker}', 'w').write('x')\n")
    assert first.status == "passed"
    second = attack(f"""
        import os
        found = [os.path.join(d, f) for top in ('/work', '/tmp', '/sandbox', '/dev/shm')
                 for d, _, files in os.walk(top) for f in files if '{marker}' in f]
        assert not found, found
    """)
    assert second.status == "passed", second
    assert not list(Path("/tmp").glob(f"**/{marker}"))  # nothing of it reached the host either


def test_writing_outside_the_tmpfs_fails():
    for path in ("/usr/lib/x", "/sandbox/solution.py", "/x", "/proc/sys/kernel/hostname"):
        run = attack(f"open({path!r}, 'w').write('x')")
        assert (
            run.status == "failed"
            and "OSError" in run.failed_test["error"]
            or "PermissionError" in run.failed_test["error"]
        ), (path, run)


# --- services and the network -----------------------------------------------------------------


def test_the_database_socket_and_the_platform_ports_are_unreachable(stack):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        ports = [8080, 7233, 54329, stack.pg_port, stack.temporal_port, listener.getsockname()[1]]
        with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=3):
            pass  # reachable from the host, so a failure inside is the sandbox's doing
        for port in ports:
            run = attack(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)")
            assert failed_with(run, "OSError: [Errno 97]"), (port, run)  # EAFNOSUPPORT: seccomp refuses AF_INET
        sockets = list(stack.settings.data_dir.rglob(f".s.PGSQL.{stack.pg_port}"))
        assert sockets  # the server's Unix socket exists on the host
        for path in sockets:
            run = attack(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})")
            assert failed_with(run, "FileNotFoundError"), run
    finally:
        listener.close()


def test_setns_on_the_parent_namespaces_is_refused():
    run = attack("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for pid in ('1', 'self'):
            for ns in ('net', 'mnt', 'pid', 'user'):
                try:
                    fd = os.open(f'/proc/{pid}/ns/{ns}', os.O_RDONLY)
                except PermissionError:  # /proc/1 is the judge of a test run, undumpable
                    assert pid == '1', (pid, ns)
                    continue
                assert libc.setns(fd, 0) == -1 and ctypes.get_errno() == 1, (pid, ns)
        assert libc.unshare(0x10000000) == -1 and ctypes.get_errno() == 1  # CLONE_NEWUSER
        raise PermissionError('contained')
    """)
    assert failed_with(run, "PermissionError: contained"), run


def test_the_process_has_no_privileges_inside():
    run = run_python(
        textwrap.dedent("""
        status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)
        keys = ('CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp')
        print(status['Uid'].split()[0], *(status[k].strip() for k in keys))
    """)
    )
    assert run.status == "passed", run
    assert run.stdout.split() == ["65534", "0000000000000000", "0000000000000000", "1", "2"]


def test_the_run_has_its_own_unprivileged_uid_on_the_host():
    token = f"whoami-{uuid.uuid4().hex}"
    code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'while True: pass', '{token}'])\n"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_python, code, timeout_s=20)
        seen = None
        deadline = time.monotonic() + 15
        while seen is None and time.monotonic() < deadline and not running.done():
            seen = next(
                (
                    p.info["uids"]
                    for p in psutil.process_iter(["cmdline", "uids"])
                    if token in " ".join(p.info["cmdline"] or [])
                ),
                None,
            )
        run = running.result()
    assert run.status == "timeout"
    assert seen is not None, "the run's process never showed on the host"
    assert SandboxConfig().uid_base <= seen.real < SandboxConfig().uid_base + SandboxConfig().uid_count
    assert seen.real == seen.effective == seen.saved != os.geteuid()


# --- limits hold for the run, not per process -------------------------------------------------


def test_a_fork_bomb_is_capped():
    run = attack("""
        import os
        forked = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    import signal; signal.pause()  # hold the slot until the run's namespace is killed
                forked += 1
        except BlockingIOError:
            raise AssertionError(f'forked {forked}')
        print('forked', forked)
    """)
    assert run.status == "failed", run
    forked = int(run.failed_test["error"].split()[-1])
    assert forked < SandboxConfig().max_processes


def test_children_share_one_memory_limit():
    # each child stays under the per-process limit; together they exceed the run's
    run = attack(
        """
        import os, select
        held_r, held_w = os.pipe()
        go_r, go_w = os.pipe()
        for _ in range(4):
            if os.fork() == 0:
                block = bytearray(300 * 1024 * 1024)
                os.write(held_w, b'h')
                os.read(go_r, 1)
                os._exit(0)
        os.close(held_w)
        held = 0
        while held < 4 and select.select([held_r], [], [], 5)[0]:
            if not os.read(held_r, 1):
                break
            held += 1
        os.close(go_w)
        assert held == 4, f'held {held}'
    """,
        memory_mb=512,
    )
    assert run.status in ("failed", "error"), run
    assert run.reason and "memory limit" in run.reason or (run.failed_test and "held" in run.failed_test["error"])


def test_a_setsid_grandchild_does_not_survive_the_run():
    token = f"survivor-{uuid.uuid4().hex}"
    run = attack(
        f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, '-c', 'import signal; signal.pause()', '{token}'])
            os._exit(0)
        assert False, 'left a survivor'
    """,
        timeout_s=10,
    )
    assert failed_with(run, "AssertionError: left a survivor"), run
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])] == []


# --- forged results ---------------------------------------------------------------------------


def test_writing_a_result_file_and_exiting_zero_is_a_failure():
    run = run_tests(
        "def f():\n    return 1\n",
        [
            textwrap.dedent("""
        import json, os
        forged = json.dumps({'stage': 'done', 'index': None, 'passed': 2, 'nonce': '0' * 32}).encode()
        for path in ('/work/result.json', '/tmp/result.json', 'result.json'):
            open(path, 'wb').write(forged)
        for fd in range(3, 64):
            try:
                os.write(fd, forged)
            except OSError:
                pass
        os._exit(0)
    """),
            "assert f() == 2",
        ],
    )
    assert run.status == "failed" and run.reason.startswith("the code under test wrote to the harness's channel"), run


@pytest.mark.parametrize("ending", ["os._exit(0)", "os.kill(os.getpid(), 9)", "sys.exit(0)", "raise SystemExit(0)"])
def test_ending_the_process_early_is_never_a_pass(ending):
    run = run_tests("import os, sys\n", [ending, "assert False, 'never reached'"])
    assert run.status in ("failed", "error") and not run.passed, run


# --- the normal path still works --------------------------------------------------------------


def test_standard_library_imports_and_passing_tests():
    code = textwrap.dedent("""
        import collections, dataclasses, functools, heapq, itertools, json, math, re, statistics, typing
        import bz2, ctypes, decimal, hashlib, lzma, sqlite3, ssl, unicodedata, zlib, zoneinfo
        from concurrent.futures import ThreadPoolExecutor

        def word_counts(text: str) -> dict[str, int]:
            with ThreadPoolExecutor(2) as pool:
                words = list(pool.map(str.lower, re.findall(r"\\w+", text)))
            return dict(collections.Counter(words))
    """)
    run = run_tests(
        code,
        [
            "assert word_counts('a B b') == {'a': 1, 'b': 2}",
            "assert math.isclose(1.0, 1.0)",
            "assert sqlite3.connect(':memory:').execute('select 2').fetchone() == (2,)",
            "assert str(zoneinfo.ZoneInfo('Europe/Paris')) == 'Europe/Paris'",
        ],
    )
    assert run.passed, run


def test_multiprocessing_within_the_limits_works():
    code = (
        "import multiprocessing as mp\n\n"
        "def squares(n):\n    with mp.Pool(2) as p:\n        return p.map(abs, range(-n, 0))\n"
    )
    run = run_tests(code, ["assert squares(3) == [3, 2, 1]"])
    assert run.passed, run


def test_an_allowed_package_imports_and_others_do_not():
    config = SandboxConfig(packages=("numpy",))
    ok = run_tests(
        "import numpy as np\n\ndef total(n):\n    return int(np.arange(n).sum())\n",
        ["assert total(5) == 10"],
        config=config,
    )
    assert ok.passed, ok
    for module in ("torch", "asyncpg", "temporalio", "specmill", "models"):
        run = run_tests(f"import {module}\n", ["assert True"], config=config)
        assert run.status == "failed" and run.failed_test["error"].startswith("ModuleNotFoundError"), (module, run)


def test_a_run_whose_cgroup_cannot_be_joined_never_starts(monkeypatch):
    """The process that becomes bwrap joins the run's cgroup between fork and exec; if it cannot, bwrap is
    never executed (it would run outside the limits), and the run raises."""
    from sandbox.cgroups import RunCgroup

    token = f"unlimited-{uuid.uuid4().hex}"

    def refuse(self, pid):
        raise OSError("cgroup.procs: refused")

    config = SandboxConfig(max_processes=63)  # an engine of its own, built (and probed) before the fault
    assert isolation(config)
    monkeypatch.setattr(RunCgroup, "join", refuse)
    code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'while True: pass', '{token}'])\n"
    with pytest.raises(OSError, match="refused"):
        run_python(code, timeout_s=5, config=config)
    base, count = config.uid_base, config.uid_count
    left = [
        p.info
        for p in psutil.process_iter(["pid", "cmdline", "uids", "status"])
        if p.info["uids"] and base <= p.info["uids"].real < base + count and p.info["status"] != "zombie"
    ]
    assert left == []  # nothing of the run was started
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])] == []
