"""The verdict of a test run cannot be forged from inside it (sandbox/judge.py): the code runs in a
process that never held the nonce nor the result channel, and the judge compares what it can itself.

Each payload says on fd 1 (os.write: it ends with os._exit, which would lose a buffered print) what it
is about to forge, before it writes (the judge may end the run at its first forged byte), so that each
test also checks that the attack ran; the judge's reason says that it reached the channel."""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest

from sandbox import run_tests

# The red team's payload, first as it broke the old harness: the frames reachable from sys._getframe()
# hold `nonce` and `result_fd` locals; one forged "done" record there, then os._exit(0).
DIRECT = textwrap.dedent("""
    import json, os, sys
    frame = sys._getframe()
    while frame is not None:
        scope = frame.f_locals
        if isinstance(scope.get('nonce'), str) and isinstance(scope.get('result_fd'), int):
            count = len(scope['tests']) if isinstance(scope.get('tests'), list) else 1
            record = {'nonce': scope['nonce'], 'stage': 'done', 'index': None, 'passed': count}
            os.write(scope['result_fd'], json.dumps(record).encode())
            os.write(1, b'forging: done, on the result fd\\n')
            os._exit(0)
        frame = frame.f_back
""")

# Then everything else it can reach: every object gc knows, every process's fds and memory that /proc
# lets it read; each nonce-like string it finds goes into a forged "done" record, written (as the old
# harness wrote it, and framed as the judge's channel is) on every fd it can write; then os._exit(0).
SPRAY = textwrap.dedent("""
    import gc, json, os, re
    found, fds = set(), set()
    hexes = re.compile(rb'[0-9a-f]{32}')
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            for name, value in list(obj.items()):
                if isinstance(value, str) and re.fullmatch('[0-9a-f]{32}', value):
                    found.add(value)
                if type(value) is int and 2 < value < 1024 and 'fd' in str(name):
                    fds.add(value)
    paths = []
    for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
        try:
            paths += [f'/proc/{pid}/fd/{fd}' for fd in os.listdir(f'/proc/{pid}/fd')]
            with open(f'/proc/{pid}/maps') as maps, open(f'/proc/{pid}/mem', 'rb') as mem:
                for line in maps:
                    start, end = (int(x, 16) for x in line.split()[0].split('-'))
                    if 'rw' in line.split()[1] and end - start < 1 << 28:
                        try:
                            mem.seek(start)
                            found.update(m.decode() for m in hexes.findall(mem.read(end - start)))
                        except OSError:
                            pass
        except OSError:
            pass
    records = []
    for nonce in sorted(found)[:200] or ['0' * 32]:
        body = json.dumps({'nonce': nonce, 'stage': 'done', 'index': None, 'passed': 1}).encode()
        records += [body, len(body).to_bytes(4, 'big') + body]
    targets = sorted(fd for fd in fds | {int(fd) for fd in os.listdir('/proc/self/fd')} if fd > 2)
    os.write(1, f'forging: {len(found)} nonces, {len(targets)} fds, {len(paths)} paths\\n'.encode())
    for fd in targets:
        for record in records:
            try:
                os.write(fd, record)
            except OSError:
                pass
    for path in paths:
        try:
            with open(path, 'wb', buffering=0) as f:
                for record in records:
                    f.write(record)
        except OSError:
            pass
    os._exit(0)
""")

# The child's own protocol, spoken by the code: "ok" for each step of the run (the setup line, two
# tests) on every fd it can write, as many as would end the run had the judge nothing to compare.
FORGE_OK = textwrap.dedent("""
    import json, os
    ok = json.dumps({'t': 'ok'}).encode()
    os.write(1, b'forging: ok\\n')
    for fd in sorted(int(fd) for fd in os.listdir('/proc/self/fd')):
        if fd > 2:
            try:
                for _ in range(3):
                    os.write(fd, len(ok).to_bytes(4, 'big') + ok)
            except OSError:
                pass
    os._exit(0)
""")

SOLUTION = "def f():\n    return 1\n"


def _not_passed(run) -> None:
    assert not run.passed and run.status == "failed", run
    assert "forging: " in run.stdout, run  # the payload ran


@pytest.mark.parametrize("where", ["setup", "solution"])
def test_a_payload_that_walks_the_stack_and_forges_the_verdict_does_not_pass(where):
    payload = DIRECT + SPRAY
    if where == "setup":
        run = run_tests(SOLUTION, ["assert f() == 2"], setup=[payload])
    else:
        run = run_tests(SOLUTION + payload, ["assert f() == 2"])
    _not_passed(run)
    assert run.reason is not None and run.reason.startswith("the code under test wrote to the harness's channel"), run


def test_the_childs_own_protocol_spoken_by_the_code_does_not_pass_a_literal_comparison():
    """An "ok" for each step: the judge wanted the value of `f()`, which only the judge compares with 2."""
    run = run_tests(SOLUTION, ["assert f() == 2", "assert True"], setup=[DIRECT + FORGE_OK])
    _not_passed(run)
    assert run.reason == (
        "the code under test wrote to the harness's channel"
        " (an unexpected 'ok' record where statement 0's value was due, test 0)"
    ), run


@pytest.mark.parametrize("test", ["assert f() == {m!r}", "assert {m!r} == f()", "assert f() in [{m!r}, 'other']"])
def test_the_code_cannot_read_the_literal_it_is_compared_with(test):
    """The tests are in no file of the sandbox, and the child gets `...` in place of a held literal: a
    solution that searches the files and its own memory for it finds nothing to return."""
    marker = f"secret-{uuid.uuid4().hex}"
    solution = textwrap.dedent("""
        import gc, os, re
        PATTERN = re.compile('secret' + '-[0-9a-f]{32}')

        def f():
            paths = ['/proc/self/cmdline', '/proc/self/environ', '/proc/1/cmdline', '/proc/1/environ']
            for top in ('/sandbox', '/work', '/tmp'):
                paths += [os.path.join(root, name) for root, _, files in os.walk(top) for name in files]
            for path in paths:
                try:
                    with open(path, errors='replace') as fh:
                        seen = PATTERN.search(fh.read(1 << 22))
                except OSError:
                    continue
                if seen:
                    return seen.group()
            for obj in gc.get_objects():
                for value in (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()):
                    if isinstance(value, str) and PATTERN.search(value):
                        return PATTERN.search(value).group()
    """)
    run = run_tests(solution, [test.format(m=marker)])
    assert run.status == "failed" and run.failed_test is not None, run
    f = run.failed_test
    assert f["actual"] in ("None", repr(marker)) and f["expected"] in ("None", repr(marker), repr([marker, "other"]))
    assert "None" in (f["actual"], f["expected"]), f  # f() found nothing
    assert f["test"] == test.format(m=marker) and marker in f["traceback"]  # the test's own line comes back


def test_the_judge_is_closed_to_the_code():
    """PID 1 is the judge: undumpable, so its fds, memory and environment cannot be opened; and the
    code's own process has no fd but stdio and its two pipes."""
    probe = textwrap.dedent("""
        import json, os
        denied = []
        for path in ('/proc/1/fd', '/proc/1/mem', '/proc/1/environ', '/proc/1/maps', '/proc/1/root/sandbox'):
            try:
                os.listdir(path) if path.endswith(('fd', 'sandbox')) else open(path, 'rb').read(1)
            except PermissionError:
                denied.append(path)
            except OSError:  # opened, but not read at this offset: not closed to the code
                pass
        mine = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))
        print(json.dumps({'denied': denied, 'fds': len(mine)}))
    """)
    run = run_tests(probe, ["assert True"])
    assert run.passed, run
    seen = json.loads(run.stdout)
    assert seen["denied"] == ["/proc/1/fd", "/proc/1/mem", "/proc/1/environ", "/proc/1/maps", "/proc/1/root/sandbox"]
    assert seen["fds"] <= 6  # 0, 1, 2, the two pipes, and listdir's own


AFTER_END = textwrap.dedent("""
    import atexit, json, os

    def forge():
        ok = json.dumps({'t': 'ok'}).encode()
        for fd in sorted(int(fd) for fd in os.listdir('/proc/self/fd')):
            if fd > 2:
                try:
                    os.write(fd, len(ok).to_bytes(4, 'big') + ok)
                except OSError:
                    pass

    atexit.register(forge)
""")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            "import os\nos._exit(0)",
            "the run ended before its tests finished (the code under test exited with status 0 in setup line 0)",
        ),
        (
            "import atexit, os\natexit.register(os._exit, 3)",
            "the code under test exited with status 3 after its last test",
        ),
        (
            AFTER_END,
            "the code under test wrote to the harness's channel (a record after the last test's, after its last test)",
        ),
    ],
    ids=["ended-early", "exit-status", "after-the-end"],
)
def test_a_run_that_breaks_the_protocol_fails_saying_how(setup, reason):
    run = run_tests(SOLUTION, ["assert f() == 1"], setup=[setup])
    assert run.status == "failed" and run.failed_test is None and run.reason == reason, run
