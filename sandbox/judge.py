"""The judge of a sandboxed test run: the process that holds the run's nonce and result channel, and
decides the verdict from what it observes of the child (sandbox/child.py), which runs the code.

The judge is PID 1 of the run's namespace (bwrap --as-pid-1): harness.py, become the judge. In order:
1. harness.py starts the child, a fresh `python -I -S child.py`, with only its two pipes and stdio,
   before anything is read: the child's memory never held the nonce, no fd of it leads to the result
   pipe or the input, and it runs nothing but its own code until it is sent its work (step 3);
2. the judge makes itself undumpable (prctl PR_SET_DUMPABLE 0): a process of the same uid can then
   neither read its /proc/1/{mem,fd,environ,maps,root} nor trace it (ptrace, process_vm_readv and
   pidfd_getfd are also refused by sandbox/seccomp.py); it ignores SIGINT (PID 1 gets no other signal
   from inside the namespace);
3. it reads its input fd (the parent's JSON: rlimits, nonce, solution, setup lines, tests), closes it,
   sets the rlimits on the child (prlimit) and on itself, and only then sends the child its work. The
   tests exist nowhere in the sandbox's files: the child learns of them what the judge sends;
4. follows the child's records (sandbox/wire.py): "ok" for each of the solution, each setup line and
   each test in turn, "error" when one raised, and for each top-level `assert LEFT OP RIGHT` with one
   literal side (ast.literal_eval-able, no name or call in it), "value": the other side's encoding.
   That literal never reaches the child: its source is replaced by `...` in the test the child gets,
   and the judge compares the decoded value with it itself (wire.OPS), answering "go" or "fail";
5. writes the verdict on the result fd, with the nonce: {"stage": "done", "passed": n} only when every
   test reported "ok", nothing followed, and the child then exited 0. A failure carries stage, index,
   test, error, traceback, and for a failed comparison actual, expected (reprs) and op. A run that broke
   the protocol (a record out of order or unknown, bytes after the end, the child gone before its last
   "ok", an exit status other than 0) carries `reason` instead. A child killed by a signal (the CPU
   limit, the cgroup's OOM killer) makes the judge exit 128+n without a verdict, as the process itself
   would have.

What remains forgeable: the child is the code under test's own process, so it can write any record.
Where the judge compares, a forged record must still carry a value that satisfies the comparison, which
it can only guess. Everywhere else the child's word is taken: a test that is no comparison assert, a
comparison with no literal side, `is`/`is not` against anything but None, True, False or Ellipsis, and a
value with no encoding (a type of the code's own, a numpy scalar, a set of them; too deep or too large)
for which the child answers "opaque", gets the literal's source and compares it itself. Code that
speaks the protocol can thus claim "opaque" and then "ok", or "ok" for a test that runs as written.
"""

import ctypes
import json
import os
import reprlib
import resource
import select
import signal

if __package__:  # on the host, as sandbox.judge
    from sandbox import wire
    from sandbox.held import Test
else:  # in the sandbox: harness.py has put /sandbox on the judge's sys.path
    import wire
    from held import Test

RESULT_LIMIT = 60_000
REPR_CHARS = 500
PR_SET_DUMPABLE = 4
CHANNEL = "the code under test wrote to the harness's channel"
ENDED = "the run ended before its tests finished"
_REPR = reprlib.Repr()
_REPR.maxlevel = 6
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = REPR_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 100
_REPR.maxdict = 50
_statuses = {}  # pid -> wait status, of every child reaped (orphans of the namespace come to PID 1)


def _reap(signum=None, frame=None):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _statuses[pid] = status


def _undumpable():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0)")


def _limits(pid, lim):
    mb = 1024 * 1024
    for target in (pid, 0):  # the child, then the judge itself
        for which, value in (
            (resource.RLIMIT_AS, lim["memory_mb"] * mb),
            (resource.RLIMIT_FSIZE, lim["file_size_mb"] * mb),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, 256),
        ):
            resource.prlimit(target, which, (value, value))
        resource.prlimit(target, resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))


# --- following the child ---------------------------------------------------------------------


class Ended(Exception):
    pass


class Judge:
    def __init__(self, pid, pidfd, work_fd, report_fd, given):
        self.pid, self.pidfd, self.work, self.report = pid, pidfd, work_fd, report_fd
        self.solution, self.setup = given["solution"], list(given["setup"])
        self.tests = [Test(i, t) for i, t in enumerate(given["tests"])]
        self.buffer, self.closed = b"", False
        os.set_blocking(report_fd, False)
        self.where = "the solution"

    def _work(self):
        tests = [{"source": t.shown, "withheld": {str(i): h.side for i, h in t.held.items()}} for t in self.tests]
        return {"t": "work", "solution": self.solution, "setup": self.setup, "tests": tests}

    def run(self):
        """(verdict record or None, exit status of the judge)."""
        units = [("solution", None, self.solution, None)]
        units += [("setup", i, s, None) for i, s in enumerate(self.setup)]
        units += [("tests", i, t.source, t) for i, t in enumerate(self.tests)]
        try:
            self._answer(self._work(), wire.MAX_WORK)
            for stage, index, source, test in units:
                self.where = {"solution": "the solution", "setup": f"setup line {index}"}.get(stage, f"test {index}")
                failure = self._unit(test)
                if failure is not None:
                    return {"stage": stage, "index": index, "test": source, **failure}, 1
            self.where = "after its last test"
            if self._next() is not None:
                raise wire.ProtocolError("a record after the last test's")
        except wire.ProtocolError as err:
            return {"reason": f"{CHANNEL} ({err}, {self.where})"}, 1
        except Ended:
            pass
        status = self._status()
        if os.WIFSIGNALED(status):
            return None, 128 + os.WTERMSIG(status)
        code = os.waitstatus_to_exitcode(status)
        if self.where == "after its last test":
            if code == 0:
                return {"stage": "done", "passed": len(self.tests)}, 0
            return {"reason": f"the code under test exited with status {code} after its last test"}, 1
        return {"reason": f"{ENDED} (the code under test exited with status {code} in {self.where})"}, 1

    def _unit(self, test):
        pending = sorted(test.held) if test is not None else []
        while True:
            record = self._next()
            if record is None:
                raise Ended
            kind = record["t"]
            if kind == "ok" and not pending:
                return None
            if kind == "error":
                return self._error(record, test)
            if kind in ("value", "opaque") and pending and record.get("at") == pending[0]:
                failure = self._judge(test, test.held[pending.pop(0)], record)
                if failure is not None:
                    return failure
                continue
            due = f"statement {pending[0]}'s value" if pending else "the end of the step"
            raise wire.ProtocolError(f"an unexpected {kind[:20]!r} record where {due} was due")

    def _judge(self, test, held, record):
        if record["t"] == "opaque":
            self._answer({"t": "right", "src": held.source})
            return None
        value = wire.decode(record.get("v"))
        left, right = (held.value, value) if held.side == "left" else (value, held.value)
        try:
            holds = held.holds(left, right)
        except Exception as err:  # noqa: BLE001 - e.g. TypeError: '<' between a str and an int, as Python says
            self._answer({"t": "stop"})
            self._linger()
            error = _error(err)
            return {"error": error, "traceback": _traceback(test, held, error)}
        if holds:
            self._answer({"t": "go"})
            return None
        self._answer({"t": "fail"})
        compared = {"actual": _shown(left), "expected": _shown(right), "op": held.symbol}
        try:
            record = self._next()
        except (wire.ProtocolError, Ended):
            record = None
        if record is None or record["t"] != "error":  # the failure is the judge's: only its text is missing
            self._linger()
            return {"error": "AssertionError", "traceback": _traceback(test, held, "AssertionError"), **compared}
        return {**self._error(record, test), **compared}

    def _error(self, record, test):
        self._linger()
        error, tb = record.get("error"), record.get("traceback")
        error = error if isinstance(error, str) else "an error the code under test did not describe"
        tb = tb if isinstance(tb, str) else ""
        if test is not None:
            tb = test.restore(tb)
        failure = {"error": error[:2000], "traceback": tb[-8000:]}
        for key in ("actual", "expected", "op"):
            if isinstance(record.get(key), str):
                failure[key] = record[key][:REPR_CHARS]
        return failure

    def _answer(self, record, limit=wire.MAX_RECORD):
        try:
            wire.send(self.work, record, limit)
        except OSError as err:  # the child is gone
            raise Ended from err

    def _next(self):
        """The child's next record; None when its stream has ended (it exited, or closed it)."""
        while True:
            if len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "big")
                if size > wire.MAX_RECORD:
                    raise wire.ProtocolError(f"a record header announcing {size} bytes")
                if len(self.buffer) >= 4 + size:
                    head, body, self.buffer = self.buffer[:4], self.buffer[4 : 4 + size], self.buffer[4 + size :]
                    return wire.parse(head, lambda n, body=body: body)
            if self.closed:
                if self.buffer:
                    raise wire.ProtocolError("bytes that are no whole record")
                return None
            ready, _, _ = select.select([self.report, self.pidfd], [], [])
            if self.pidfd in ready:  # gone: what it wrote is in the pipe; a survivor's later bytes do not count
                self._read()
                self.closed = True
            elif self.report in ready:
                self._read()

    def _read(self):
        try:
            while len(self.buffer) <= wire.MAX_RECORD + 4:
                chunk = os.read(self.report, 65536)
                if not chunk:
                    self.closed = True
                    return
                self.buffer += chunk
        except BlockingIOError:
            return

    def _linger(self, seconds=2.0):
        """A child that has failed flushes its output and exits: wait for that, a little."""
        select.select([self.pidfd], [], [], seconds)

    def _status(self):
        """The child's wait status, once it has exited (a child that closed its stream but lives on is
        waited for: the wall-clock limit ends it)."""
        while self.pid not in _statuses:
            try:
                pid, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                _reap()
                continue
            _statuses[pid] = status
        return _statuses[self.pid]


def _error(err):
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _traceback(test, held, error):
    frame = f'  File "{test.filename}", line {held.lineno}, in <module>\n    {held.line.strip()}\n'
    return f"Traceback (most recent call last):\n{frame}{error}\n"


def _shown(value):
    text = _REPR.repr(value)
    return text if len(text) <= REPR_CHARS else text[: REPR_CHARS - 3] + "..."


def _send(fd, record):
    data = json.dumps(record).encode("utf-8")
    if len(data) > RESULT_LIMIT:  # keep the record whole: shorten the long fields
        record["traceback"] = record.get("traceback", "")[-4000:]
        record["test"] = (record.get("test") or "")[:4000]
        data = json.dumps(record).encode("utf-8")[:RESULT_LIMIT]
    while data:
        data = data[os.write(fd, data) :]


def main(result_fd, input_fd, pid, work_w, report_r):
    """The judge of the child `pid` (started by harness.py, with the other ends of the two pipes)."""
    _undumpable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pidfd = os.pidfd_open(pid)
    signal.signal(signal.SIGCHLD, _reap)
    with os.fdopen(input_fd, "rb") as f:
        given = json.loads(f.read())
    _limits(pid, given["limits"])
    judge = Judge(pid, pidfd, work_w, report_r, given)
    record, code = judge.run()
    if record is not None:
        if record.get("traceback"):
            try:
                os.write(2, record["traceback"].encode("utf-8", "backslashreplace"))
            except OSError:
                pass
        _send(result_fd, {"nonce": given["nonce"], **record})
    os._exit(code)
