"""What a sandboxed run sees of the host through /proc: nothing host-wide (the machine's load, counters
and memory would time other tenants' runs), its own cgroup as `/`, and no host path (the checkout, its
virtualenv, bubblewrap's binary) in any command line, mount table or link it can read."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox import SandboxConfig, run_python, run_tests
from sandbox.engine import engine

CHECKOUT = Path(__file__).resolve().parents[2]
HOST_WIDE = ["loadavg", "stat", "meminfo", "version", "kallsyms", "uptime", "vmstat", "diskstats", "cgroups"]
HOST_WIDE += ["sys/kernel/random/boot_id"]

PROBE = textwrap.dedent("""
    import json, os
    seen = {}
    for path in PATHS:
        try:
            seen[path] = os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read().decode(errors='replace')
            if path.endswith('/maps'):  # the files mapped, each once
                seen[path] = sorted({line.split()[5] for line in seen[path].splitlines() if len(line.split()) > 5})
        except OSError as err:
            seen[path] = f'<{type(err).__name__}>'
    for link in LINKS:
        try:
            seen[link] = os.readlink(link)
        except OSError as err:
            seen[link] = f'<{type(err).__name__}>'
    print(json.dumps(seen))
""")
OWN = ["/proc/1/cmdline", "/proc/self/cmdline", "/proc/self/mountinfo", "/proc/self/cgroup"]
OWN += ["/proc/1/cgroup", "/proc/self/environ", "/proc/self/maps", "/proc/1/maps", "/proc/1/environ"]
LINKS = ["/proc/1/exe", "/proc/self/exe", "/proc/self/cwd", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]


def _probe(paths: list[str], *, tests: bool = False, config: SandboxConfig | None = None, before: str = "") -> dict:
    code = f"{before}\nPATHS = {paths!r}\nLINKS = {LINKS!r}\n{PROBE}"
    run = run_tests(code, ["assert True"], config=config) if tests else run_python(code, config=config)
    assert run.passed, run
    return json.loads(run.stdout)


def test_host_wide_proc_files_are_empty_inside():
    host = [f"/proc/{name}" for name in HOST_WIDE if os.path.isfile(f"/proc/{name}")]
    assert "/proc/loadavg" in host and "/proc/stat" in host and "/proc/meminfo" in host
    dirs = ["/proc/pressure"] if os.path.isdir("/proc/pressure") else []
    code = f"import json, os\nprint(json.dumps({{p: len(open(p, 'rb').read()) for p in {host!r}}}))\n"
    code += f"print(json.dumps({{d: os.listdir(d) for d in {dirs!r}}}))\n"
    run = run_python(code)
    assert run.passed, run
    sizes, listed = map(json.loads, run.stdout.splitlines())
    assert {path: size for path, size in sizes.items() if size} == {}
    assert all(files == [] for files in listed.values()), listed
    assert open("/proc/loadavg").read() != ""  # the host's own is not empty: the mask hid it


def test_the_runs_cgroup_is_the_root_of_its_cgroup_namespace():
    host = [line.split(":", 2)[2] for line in open("/proc/self/cgroup").read().splitlines()]
    seen = _probe(["/proc/self/cgroup", "/proc/1/cgroup"], tests=True)
    for path in ("/proc/self/cgroup", "/proc/1/cgroup"):
        lines = seen[path].splitlines()
        assert lines and all(line.endswith(":/") for line in lines), seen[path]
    assert "specmill" not in seen["/proc/self/cgroup"]
    assert not [h for h in host if h != "/" and h in seen["/proc/self/cgroup"]]


@pytest.mark.parametrize("tests", [False, True], ids=["script", "tests"])
def test_no_host_path_shows_in_the_runs_proc(tests):
    config = SandboxConfig(packages=("numpy",))
    seen = _probe(OWN, tests=tests, config=config, before="import numpy")
    text = json.dumps(seen)
    assert "/sandbox/site/numpy" in seen["/proc/self/mountinfo"]  # the package is bound, under its inside name
    for host_path in {str(CHECKOUT), sys.prefix, os.path.dirname(engine(config).bwrap)}:
        assert host_path not in text, (host_path, [k for k, v in seen.items() if host_path in str(v)])
    assert "/tmp/#" not in text  # stdout and stderr are no host temporary file
    assert seen["/proc/1/cmdline"].split("\0")[:4] == [
        engine(config).python.executable,
        "-I",
        "-S",
        "/sandbox/harness.py",
    ]
