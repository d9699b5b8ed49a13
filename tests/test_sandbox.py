"""sandbox/: generated code runs in a subprocess with limits, no network and a temp dir of its own."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sandbox import isolation, run_python, run_tests


def test_passing_code_and_its_output():
    r = run_python("print(sum(range(10)))")
    assert r.status == "passed" and r.exit_code == 0
    assert r.stdout.strip() == "45"


def test_failing_assert_is_reported_with_its_line():
    code = "def inc(x):\n    return x + 2\n"
    r = run_tests(code, ["assert inc(0) == 2", "assert inc(1) == 2, 'one'", "assert inc(2) == 4"])
    assert r.status == "failed" and r.exit_code == 1
    assert r.failed_test["index"] == 1 and r.failed_test["test"] == "assert inc(1) == 2, 'one'"
    assert "AssertionError: one" in r.failed_test["error"]
    assert "assert inc(1) == 2, 'one'" in r.failed_test["traceback"]  # the line itself, not just its number
    assert "test_1.py" in r.stderr


def test_code_that_raises_is_reported_as_the_solution_stage():
    r = run_tests("raise ValueError('broken')\n", ["assert True"])
    assert r.status == "failed" and r.failed_test["stage"] == "solution"
    assert "ValueError: broken" in r.failed_test["error"]


def test_all_tests_passing():
    r = run_tests("def inc(x):\n    return x + 1\n", ["assert inc(0) == 1", "assert inc(1) == 2"])
    assert r.status == "passed" and r.failed_test is None


def test_infinite_loop_times_out_and_the_process_is_killed():
    r = run_python("import os, sys\nprint(os.getpid(), flush=True)\nwhile True:\n    pass\n", timeout_s=1)
    assert r.status == "timeout"
    assert 0.9 <= r.duration_s < 5
    pid = int(r.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cpu_limit_stops_a_busy_loop_before_the_wall_clock():
    r = run_python("while True:\n    pass\n", timeout_s=30, cpu_s=1)
    assert r.status == "timeout" and r.duration_s < 10


def test_memory_bomb_is_stopped_by_the_limit():
    r = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')\n", memory_mb=256)
    assert r.status in ("failed", "error")
    assert "allocated" not in r.stdout
    assert "MemoryError" in r.stderr or r.signal is not None


def test_writing_a_huge_file_is_limited():
    code = ("import os\nwith open('big', 'wb') as f:\n    for _ in range(64):\n        f.write(b'x' * 1024 * 1024)\n"
            "print('wrote', os.path.getsize('big'))\n")
    r = run_python(code, file_size_mb=1)
    assert r.status in ("failed", "error")
    assert "wrote" not in r.stdout
    assert "File too large" in r.stderr or r.signal == "SIGXFSZ"


def test_output_is_truncated():
    r = run_python("print('x' * 1_000_000)")
    assert r.status == "passed" and len(r.stdout) < 20_000 and r.stdout.endswith("[truncated]")


def test_network_connection_fails_when_isolation_applies():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).close()\nprint('connected')\n"
    try:
        open_run = run_python(code, network=True)
        assert open_run.status == "passed" and open_run.isolation == "none"
        closed = run_python(code)
    finally:
        server.close()
    if isolation() == "none":
        pytest.skip("this platform allows no network namespace: the sandbox runs with the network")
    assert closed.isolation in ("netns", "userns+netns")
    assert closed.status == "failed" and "connected" not in closed.stdout
    assert "OSError" in closed.stderr or "Error" in closed.stderr


def test_temp_dir_is_removed_afterwards():
    r = run_python("import os\nopen('left-behind', 'w').write('x')\nprint(os.getcwd())\n")
    assert r.status == "passed"
    workdir = Path(r.stdout.strip())
    assert workdir.name == "work" and not workdir.exists() and not workdir.parent.exists()


def test_isolated_mode_ignores_the_environment(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-specmill")
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    r = run_python("import os, sys\nprint(sys.flags.isolated, os.environ.get('SECRET_TOKEN'))\n")
    assert r.stdout.split() == ["1", "None"]
