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


# --- assertion introspection and setup lines (the harness's own) --------------------------------------


def test_a_failed_comparison_reports_both_sides_and_keeps_the_test():
    code = "def inc(x):\n    return x + 2\n"
    r = run_tests(code, ["assert inc(0) == 2", "assert inc(1) == 2, 'one'"])
    assert r.status == "failed" and r.failed_test["index"] == 1
    f = r.failed_test
    assert (f["test"], f["actual"], f["expected"], f["op"], f["error"]) == (
        "assert inc(1) == 2, 'one'",
        "3",
        "2",
        "==",
        "AssertionError: one",
    )
    assert "assert inc(1) == 2, 'one'" in f["traceback"] and "harness.py" not in f["traceback"]


def test_each_comparison_operator_is_introspected_and_both_sides_are_evaluated_once():
    code = "calls = []\ndef f(x):\n    calls.append(x)\n    return x\n"
    for test, expected in [
        ("assert f(1) != 1", "1"),
        ("assert f([1]) is f([1])", "[1]"),
        ("assert f(3) in f([1, 2])", "[1, 2]"),
        ("assert f('a') not in f('abc')", "'abc'"),
        ("assert f(2) >= f(5)", "5"),
    ]:
        r = run_tests(code, [test, "assert len(calls) == 2"])  # never reached: the first one fails
        assert r.failed_test["index"] == 0 and r.failed_test["expected"] == expected, (test, r.failed_test)
    passing = run_tests(code, ["assert f(1) < f(2)", "assert calls == [1, 2]", "assert f(None) is None"])
    assert passing.passed, passing


def test_a_hostile_repr_gives_a_placeholder_and_the_record_still_arrives():
    code = (
        "class Raises:\n    def __repr__(self):\n        raise SystemExit(3)\n"
        "class Spins:\n    def __repr__(self):\n        while True:\n            pass\n"
        "class Huge:\n    def __repr__(self):\n        return 'x' * 5_000_000\n"
    )
    raises = run_tests(code, ["assert Raises() == 1"])
    assert raises.failed_test["actual"].startswith("<") and raises.failed_test["expected"] == "1"
    spins = run_tests(code, ["assert 2 == Spins()"], timeout_s=20)
    assert spins.status == "failed" and spins.failed_test["expected"].startswith("<repr took over")
    assert spins.failed_test["actual"] == "2"
    huge = run_tests(code, ["assert Huge() == 1"])
    assert len(huge.failed_test["actual"]) <= 500 and "..." in huge.failed_test["actual"]


def test_the_code_under_test_cannot_make_a_failing_comparison_pass():
    """The comparison is the harness's own: names the solution binds in the namespace change nothing."""
    code = "AssertionError = None\n__builtins__ = {}\ndef f():\n    return 1\n"
    r = run_tests(code, ["assert f() == 2"])
    assert r.status == "failed" and r.failed_test["actual"] == "1"


def test_other_asserts_and_statements_keep_their_behaviour():
    r = run_tests("def ok():\n    return []\n", ["assert ok()", "assert 1 < 2 < 3"])
    assert r.status == "failed" and r.failed_test["index"] == 0
    assert r.failed_test["error"] == "AssertionError" and r.failed_test["actual"] is None
    r = run_tests("def ok():\n    return 0\n", ["assert 0 < 1 < 2", "for i in range(3):\n    assert ok() == i"])
    assert r.status == "failed" and r.failed_test["index"] == 1 and r.failed_test["actual"] is None


def test_setup_lines_run_before_the_tests_in_their_namespace():
    code = "import datetime\ndef tomorrow(d):\n    return d + datetime.timedelta(days=1)\n"
    tests = ["assert tomorrow(FIRST) == datetime.date(2020, 1, 2)"]
    r = run_tests(code, tests, setup=["import datetime", "FIRST = datetime.date(2020, 1, 1)"])
    assert r.passed, r
    missing = run_tests(code, tests)  # without the setup, the test's names are not defined
    assert missing.failed_test["error"] == "NameError: name 'FIRST' is not defined"
    broken = run_tests(code, tests, setup=["import datetime", "FIRST = 1 / 0"])
    assert broken.status == "failed"
    assert (broken.failed_test["stage"], broken.failed_test["index"], broken.failed_test["test"]) == (
        "setup",
        1,
        "FIRST = 1 / 0",
    )
    assert "ZeroDivisionError" in broken.failed_test["error"]
