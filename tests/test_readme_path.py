"""The README's path, walked as a newcomer walks it: each block marked `<!-- run: NAME -->` runs in bash,
top to bottom, against a live gateway on a real socket (real PostgreSQL, Temporal, workers, sandbox; the
model is the scripted OpenAI-protocol fake, so that one function fails on purpose and a rerun repairs it).

Every curl the block makes is traced (its status, method and URL on stderr), so a step that answers a
5xx, or a 4xx the README does not announce, fails the test. Every shell block of the README carries such
a marker, and a test here or in tests/test_readme_ops.py runs it (test_every_shell_block_is_run).
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# a marked block: the marker on the line above its fence, both indented alike (a block inside a list item)
MARKED = re.compile(r"^( *)<!-- run: (\w+) -->\n\1```bash\n(.*?)^\1```[ \t]*$", flags=re.M | re.S)
BLOCKS = {name: textwrap.dedent(body) for _indent, name, body in MARKED.findall(README)}
SHELL_FENCE = re.compile(r"( *)```(bash|sh|shell|console)[ \t]*")
# curl as the README calls it, plus one line per request on stderr: <<status method url>>
TRACE = "curl() { command curl -w '%{stderr}<<%{http_code} %{method} %{url_effective}>>\\n' \"$@\"; }\n"
CALL = re.compile(r"<<(\d{3}) (\w+) (\S+)>>")
# the calls that run README blocks, by name: a test that calls one of them with a block's name runs it
RUNNERS = {"_walk", "_script", "block"}


def block(name: str) -> str:
    """The README's block marked `<!-- run: NAME -->`, as a user would paste it (its indentation removed)."""
    assert name in BLOCKS, f"the README has no block marked <!-- run: {name} -->: {sorted(BLOCKS)}"
    return BLOCKS[name]


def quickstart_setup() -> str:
    """The quick start's first lines, up to its first blank line: B, H, J, MODEL, `get` and `wait_state`, which
    the later blocks use "in the quick start's shell"."""
    setup = block("quickstart").split("\n\n", 1)[0] + "\n"
    assert "\nget() {" in setup and "J=" in setup, setup
    return setup


pytestmark = pytest.mark.slow

DAYS = "def days_between(a, b):\n    return (datetime.date.fromisoformat(b) - datetime.date.fromisoformat(a)).days"
MEDIAN = (
    "def median(values):\n    s, n = sorted(values), len(values)\n"
    "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n"
)
# what the scripted model answers: (function, first answer, repair); days_between is off by one at first
SCRIPTS = [
    ("slugify", 'import re\n\ndef slugify(text):\n    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))\n', None),
    ("days_between", DAYS + " + 1\n", DAYS + "\n"),
    ("median", MEDIAN, None),
]


def _script(names: list[str], *, setup: bool = False) -> str:
    """The bash script of the README's blocks `names`, in order, curl traced; with `setup`, after the quick
    start's first lines (quickstart_setup), as the blocks run "in the quick start's shell"."""
    return TRACE + (quickstart_setup() if setup else "") + "".join(block(n) for n in names)


def shell_env(cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """A plain environment for a README block, with `env` (B, KEY, ...) on top."""
    return {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", **env}


def calls_of(stderr: str) -> list[tuple[int, str, str]]:
    """The requests a traced block made: (status, method, url), in order."""
    return [(int(code), method, url) for code, method, url in CALL.findall(stderr)]


def _walk(
    names: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 600, *, setup: bool = False
) -> tuple[str, list]:
    """Run the README's blocks `names` in one bash (-e, -u, pipefail), in order (with `setup`: after the quick
    start's first lines); its stdout and the requests it made."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _script(names, setup=setup)],
        cwd=cwd,
        env=shell_env(cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"the README's {names} stopped:\n{done.stderr[-3000:]}"
    return done.stdout, calls_of(done.stderr)


def like_the_repository(directory: Path) -> Path:
    """`directory`, made like the repository's root for a block: `.venv/bin/python`, `.venv/bin/specmill` and
    `.venv/bin/temporal` are there."""
    (directory / ".venv").symlink_to(Path(sys.executable).parents[1])
    return directory


@pytest.fixture
def shell_dir(tmp_path: Path) -> Path:
    return like_the_repository(tmp_path)


def test_the_readme_has_the_blocks_this_test_runs():
    assert {"tenant", "quickstart", "reference"} <= set(BLOCKS), sorted(BLOCKS)


def _name(node: ast.AST) -> str:
    return getattr(node, "id", getattr(node, "attr", ""))


def _names_run_by_tests() -> set[str]:
    """The block names that a test function of tests/test_readme*.py passes to a runner (RUNNERS)."""
    names: set[str] = set()
    for path in sorted(Path(__file__).parent.glob("test_readme*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name.startswith("test_")):
                continue
            for call in ast.walk(fn):  # a runner called, or handed to a call (asyncio.to_thread(_walk, ...))
                if isinstance(call, ast.Call) and {_name(f) for f in (call.func, *call.args)} & RUNNERS:
                    args = [*call.args, *(k.value for k in call.keywords)]
                    names |= {
                        c.value
                        for arg in args
                        for c in ast.walk(arg)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str)
                    }
    return names


def test_every_shell_block_is_run():
    """Each shell fence of the README (bash, sh, shell, console) has a `<!-- run: NAME -->` marker on the line
    above it, indented like it, that parses as a block, and a test runs the block of that NAME."""
    run = _names_run_by_tests()
    lines = README.splitlines()
    unrun = []
    for number, line in enumerate(lines):
        fence = SHELL_FENCE.fullmatch(line)
        if fence is None:
            continue
        marker = re.fullmatch(re.escape(fence[1]) + r"<!-- run: (\w+) -->", lines[number - 1]) if number else None
        if marker is None:
            unrun.append(f"line {number + 1}: no <!-- run: NAME --> marker above {line.strip()}")
        elif marker[1] not in BLOCKS:
            unrun.append(f"line {number + 1}: {marker[1]} is not a ```bash block the tests can read")
        elif marker[1] not in run:
            unrun.append(f"line {number + 1}: no test runs the block {marker[1]}")
    assert not unrun, "\n".join(unrun)
    assert len(BLOCKS) == len(MARKED.findall(README)), "two blocks are marked with one name"


# the 4xx the reference block announces in its comments: (method, path pattern, status)
ANNOUNCED = [
    ("DELETE", r"/api/templates/[^/]+", 409),  # while instances use it
    ("PUT", r"/api/projects/[^/]+/state", 409),  # the run has moved on
    ("POST", r"/api/projects/[^/]+/regenerate", 409),  # nothing changed
    ("POST", r"/api/techniques/[^/]+/train", 422),  # no built-in tree checkpoint on this machine yet
    ("POST", r"/auth/(signup|login|refresh|logout)", 404),  # Supabase sign-in is not configured here
]


def _unannounced(calls: list, start: int) -> list:
    return [
        (code, method, url)
        for code, method, url in calls[start:]
        if code >= 400
        and not any(m == method and re.search(p + "$", url.split("?")[0]) and c == code for m, p, c in ANNOUNCED)
    ]


async def test_the_readme_top_to_bottom(live_url, tenant, coder, shell_dir, stack):
    """A tenant made with the CLI, the quick start with its key, then the API tour, in one shell as the README
    says. (`tenant` is not used: its fixture waits for the workers' fresh model report, which the quick start's
    GET /api/models needs.)"""
    for name, first, repair in SCRIPTS:
        coder.script(name, first=first, repair=repair)
    coder.script("cube", first="def cube(x):\n    return x ** 3\n")
    # the CLI finds the database as `make run`'s .specmill/env would tell it, through DATABASE_URL
    env = {"B": live_url, "MODEL": "openai_api", "DATABASE_URL": stack.settings.app_dsn()}
    out, calls = await asyncio.to_thread(_walk, ["tenant", "quickstart", "reference"], shell_dir, env)
    created = json.loads(out.splitlines()[0])  # what `specmill tenant create` printed, echoed
    assert set(created) >= {"tenant_id", "user_id", "api_key"} and created["api_key"].startswith("sm_"), created
    headers = {"X-API-Key": created["api_key"]}

    assert calls and not [c for c in calls if c[0] >= 500], [c for c in calls if c[0] >= 500]
    tour = next(i for i, (_, method, url) in enumerate(calls) if method == "POST" and url.endswith("/auth/token"))
    assert not [c for c in calls[:tour] if c[0] >= 400], calls[:tour]  # the quick start: no error at all
    assert not _unannounced(calls, tour)
    # the tour visited every route of /openapi.json (a stream aside)
    async with httpx.AsyncClient(base_url=live_url) as anon:
        spec = (await anon.get("/openapi.json")).json()
    visited = {(m, re.sub(r"[0-9a-f-]{36}", "{}", url.split("?")[0].removeprefix(live_url))) for _, m, url in calls}
    for path, ops in spec["paths"].items():
        if not path.startswith(("/api", "/auth", "/health")) or path.endswith("/stream") or "{path" in path:
            continue
        shape = re.sub(r"\{[a-z_]+\}", "{}", path)
        for method in ops:
            assert any(
                m == method.upper() and re.fullmatch(re.escape(shape).replace(r"\{\}", "[^/]+"), v) for m, v in visited
            ), f"the README's tour does not call {method.upper()} {path}"
    # the first run, followed with `specmill watch`: its progress line, to the last
    assert "failed          round 1/1  2 passed, 1 failed, 0 generated, 0 waiting of 3" in out, out
    assert '{"waiting": 0, "generated": 0, "tested": 3, "passed": 2, "failed": 1}' in out, out
    # the rerun's 202 says what it runs with
    assert '"debug_rounds": 2' in out, out
    # the first run: days_between fails, by name, with the values it compared
    assert "1 of 3 instance(s) still fail after 1 round(s): days_between: " in out, out
    assert "expected 59, got 60" in out, out
    # the second run, told how it failed, repaired it in its first round
    assert "all 1 instance(s) pass their tests (round 1)" in out, out
    # the code: every current file with its status, not the first artifact whatever it is
    for name in ("slugify", "days_between", "median"):
        assert f"# {name}.py: passed\n" in out and f"def {name}(" in out, out
    assert (shell_dir / "project.zip").stat().st_size > 0

    async with httpx.AsyncClient(base_url=live_url, headers=headers) as api:
        me = (await api.get("/auth/me")).json()
        assert (me["tenant_id"], me["user_id"], me["role"]) == (created["tenant_id"], created["user_id"], "owner")
        projects = {p["name"]: p for p in (await api.get("/api/projects")).json()["items"]}
        assert (projects["dates"]["state"], projects["calc"]["state"], projects["scratch"]["state"]) == (
            "completed",
            "completed",
            "cancelled",
        )
        project = projects["dates"]
        assert {i["name"]: i["status"] for i in project["outcome"]["instances"]} == {
            "slugify": "passed",
            "days_between": "passed",
            "median": "passed",
        }
        runs = (await api.get(f"/api/projects/{project['id']}/runs")).json()["items"]
        assert [(r["scope"], r["state"], r["settings"]["debug_rounds"]) for r in runs] == [
            ("initial", "failed", 0),
            ("failed", "completed", 2),
        ]
