"""make bench-sandbox: what the sandbox adds to one test run, against the runner it replaced.

Three ways to run the same solution and tests, interleaved round-robin in one process so that a
noisy neighbour hits all of them alike:

- `previous`: the runner before the sandbox (a temp dir, `unshare -n`, rlimits set between fork and
  exec, this interpreter with -I, a result file), rebuilt here as the baseline;
- `sandbox`: sandbox.run_tests, the product's path (bubblewrap as the run's own uid, namespaces,
  read-only root with host-wide /proc files masked, seccomp, a per-run cgroup, and two interpreters
  inside: the judge holding the result channel, and the child running the code, which it follows);
- `bare`: the sandbox's interpreter started with nothing around it, the floor for both.

Prints p50 and p95 per way in ms, and the sandbox's added cost over `previous`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import run_tests
from sandbox.layout import python

SOLUTION = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add('a', 'b') == 'ab'"]
OLD_HARNESS = (
    "import json, sys\nns = {'__name__': 'solution'}\nexec(open(sys.argv[1]).read(), ns)\n"
    "for t in json.load(open(sys.argv[2])):\n    exec(t, ns)\n"
    "json.dump({'stage': 'done'}, open(sys.argv[3], 'w'))\n"
)


def previous() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    try:
        (root / "work").mkdir()
        (root / "solution.py").write_text(SOLUTION)
        (root / "tests.json").write_text(json.dumps(TESTS))
        (root / "harness.py").write_text(OLD_HARNESS)

        def limits() -> None:
            mb = 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (512 * mb, 512 * mb))
            resource.setrlimit(resource.RLIMIT_CPU, (11, 12))
            resource.setrlimit(resource.RLIMIT_FSIZE, (16 * mb, 16 * mb))

        proc = subprocess.run(
            [
                "unshare",
                "-n",
                sys.executable,
                "-I",
                "../harness.py",
                "../solution.py",
                "../tests.json",
                "../result.json",
            ],
            cwd=root / "work",
            capture_output=True,
            preexec_fn=limits,
            start_new_session=True,
            timeout=10,
        )
        assert proc.returncode == 0 and json.loads((root / "result.json").read_text())["stage"] == "done"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sandboxed() -> None:
    r = run_tests(SOLUTION, TESTS)
    assert r.passed, r


def bare() -> None:
    subprocess.run([python().executable, "-I", "-S", "-c", "pass"], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=60, help="runs of each way (after 3 warm-up runs each)")
    args = p.parse_args()
    ways = {"previous": previous, "sandbox": sandboxed, "bare": bare}
    for fn in ways.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.runs):
        for name, fn in ways.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)

    def pct(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[int(q) - 1]

    print(
        f"sandbox cost per run: {args.runs} runs of each way, interleaved; {os.cpu_count()} CPUs; "
        f"sandbox interpreter {python().executable}"
    )
    print(f"{'way':10} {'p50 ms':>8} {'p95 ms':>8}")
    for name, xs in times.items():
        print(f"{name:10} {statistics.median(xs):8.1f} {pct(xs, 95):8.1f}")
    added50 = statistics.median(times["sandbox"]) - statistics.median(times["previous"])
    added95 = pct(times["sandbox"], 95) - pct(times["previous"], 95)
    ratio = statistics.median(times["sandbox"]) / statistics.median(times["previous"])
    print(
        f"added by the sandbox over the previous runner: p50 {added50:+.1f} ms, p95 {added95:+.1f} ms "
        f"({ratio:.2f}x at p50; target: at most +150 ms)"
    )


if __name__ == "__main__":
    main()
