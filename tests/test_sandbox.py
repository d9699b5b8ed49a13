"""sandbox/: generated code runs in the bubblewrap engine with limits; the attacks live in tests/security."""

from __future__ import annotations

import uuid

import psutil

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


def _processes_with(token: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])]


def test_infinite_loop_times_out_and_the_process_is_killed():
    token = f"spin-{uuid.uuid4().hex}"
    code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'while True: pass', '{token}'])\n"
    r = run_python(code, timeout_s=1)
    assert r.status == "timeout" and r.reason == "wall-clock limit of 1 s"
    assert 0.9 <= r.duration_s < 5
    assert _processes_with(token) == []


def test_cpu_limit_stops_a_busy_loop_before_the_wall_clock():
    r = run_python("while True:\n    pass\n", timeout_s=30, cpu_s=1)
    assert r.status == "timeout" and r.duration_s < 10


def test_memory_bomb_is_stopped_by_the_limit():
    r = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')\n", memory_mb=256)
    assert r.status in ("failed", "error")
    assert "allocated" not in r.stdout
    assert "MemoryError" in r.stderr or r.signal is not None


def test_writing_a_huge_file_is_limited():
    code = (
        "import os\nwith open('big', 'wb') as f:\n    for _ in range(64):\n        f.write(b'x' * 1024 * 1024)\n"
        "print('wrote', os.path.getsize('big'))\n"
    )
    r = run_python(code, file_size_mb=1)
    assert r.status in ("failed", "error")
    assert "wrote" not in r.stdout
    assert "File too large" in r.stderr or r.signal == "SIGXFSZ"


def test_output_is_truncated():
    r = run_python("print('x' * 1_000_000)")
    assert r.status == "passed" and len(r.stdout) < 20_000 and r.stdout.endswith("[truncated]")


def test_each_run_starts_in_an_empty_working_directory_that_vanishes():
    first = run_python(
        "import os\nopen('left-behind', 'w').write('x')\nopen('/tmp/also', 'w').write('x')\n"
        "print(os.getcwd(), sorted(os.listdir('.')))\n"
    )
    assert first.status == "passed" and first.stdout.split() == ["/work", "['left-behind']"]
    second = run_python("import os\nprint(sorted(os.listdir('/work')), sorted(os.listdir('/tmp')))\n")
    assert second.status == "passed" and second.stdout.split() == ["[]", "[]"]


def test_the_environment_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-specmill")
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    r = run_python("import os, sys\nprint(sys.flags.isolated, sorted(os.environ))\n")
    assert r.status == "passed"
    flag, names = r.stdout.split(" ", 1)
    assert flag == "1" and eval(names) == ["HOME", "LANG", "PATH", "PWD", "PYTHONHASHSEED", "TMPDIR"]


def test_the_run_records_its_isolation():
    r = run_tests("def one():\n    return 1\n", ["assert one() == 1"])
    assert r.passed and r.isolation == isolation() and r.isolation.startswith("bubblewrap+seccomp+cgroup-v")
