"""The sandbox's PID 1 (bwrap --as-pid-1), under `python -I -S`, before any untrusted code.

    harness.py script MAIN --result-fd N --input-fd M    run MAIN as __main__ (its exit status is the result)
    harness.py tests --result-fd N --input-fd M          the judge of a test run (sandbox/judge.py)

fd M holds the parent's JSON (the rlimits; for `tests` also the nonce, the solution, the setup lines
and the tests); fd N is a pipe only the parent reads.

`script`: reads fd M, closes both, sets the rlimits on itself and forks: the child runs MAIN (under
the rlimits, which it cannot raise again), this process reaps whatever ends in the namespace and exits
with MAIN's status (128+n if a signal ended it). MAIN is not PID 1 itself, so the signals it sends
itself act as they do elsewhere.

`tests`: see sandbox/judge.py (the process holding the nonce and fd N) and sandbox/child.py (the
process running the code).
"""

import os
import resource
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "child.py")
SITE_DIR = "/sandbox/site"


def _rlimits(lim):
    mb = 1024 * 1024
    for which, value in (
        (resource.RLIMIT_AS, lim["memory_mb"] * mb),
        (resource.RLIMIT_FSIZE, lim["file_size_mb"] * mb),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ):
        resource.setrlimit(which, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))


def script(path, result_fd, input_fd):
    import json

    os.close(result_fd)
    with os.fdopen(input_fd, "rb") as f:
        _rlimits(json.loads(f.read())["limits"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        import runpy

        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, SITE_DIR)
        sys.argv = [path]
        runpy.run_path(path, run_name="__main__")
        return
    while True:
        try:
            got, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if got == pid:
            break
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status))


def main(argv):
    opts = dict(zip(argv[-4::2], argv[-3::2], strict=False))
    result_fd, input_fd = int(opts["--result-fd"]), int(opts["--input-fd"])
    if argv[0] == "script":
        script(argv[1], result_fd, input_fd)
        return
    child = _start_child()  # first: its interpreter starts while the judge's modules load
    sys.path.insert(0, HERE)
    import judge

    judge.main(result_fd, input_fd, *child)


def _start_child():
    """The child of a test run (sandbox/child.py), a fresh interpreter, before anything is read: it gets
    stdio and its two pipes, no other fd of this process (not the result pipe, not the input)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2:
                os.set_inheritable(int(name), False)
        except OSError:  # listdir's own fd, closed by now
            pass
    work_r, work_w = os.pipe()
    report_r, report_w = os.pipe()
    os.set_inheritable(work_r, True)
    os.set_inheritable(report_w, True)
    argv = [sys.executable, "-I", "-S", CHILD, str(work_r), str(report_w)]
    pid = os.posix_spawn(sys.executable, argv, dict(os.environ))
    os.close(work_r)
    os.close(report_w)
    return pid, work_w, report_r


if __name__ == "__main__":
    main(sys.argv[1:])
