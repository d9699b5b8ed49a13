"""The README's path, walked as a newcomer walks it: each block marked `<!-- run: NAME -->` runs in bash,
top to bottom, against a live gateway on a real socket (real PostgreSQL, Temporal, workers, sandbox; the
model is the scripted OpenAI-protocol fake, so that one function fails on purpose and a rerun repairs it).

Every curl the block makes is traced (its status, method and URL on stderr), so a step that answers a
5xx, or a 4xx the README does not announce, fails the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = dict(re.findall(r"<!-- run: (\w+) -->\n```bash\n(.*?)```", README, flags=re.S))
# curl as the README calls it, plus one line per request on stderr: <<status method url>>
TRACE = "curl() { command curl -w '%{stderr}<<%{http_code} %{method} %{url_effective}>>\\n' \"$@\"; }\n"
CALL = re.compile(r"<<(\d{3}) (\w+) (\S+)>>")

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


def _walk(names: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 600) -> tuple[str, list]:
    """Run the README's blocks `names` in one bash (-e, -u, pipefail), in order; its stdout and the requests
    it made."""
    shell_env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", **env}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", TRACE + "".join(BLOCKS[n] for n in names)],
        cwd=cwd,
        env=shell_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    calls = [(int(code), method, url) for code, method, url in CALL.findall(done.stderr)]
    assert done.returncode == 0, f"the README's {names} stopped:\n{done.stderr[-3000:]}"
    return done.stdout, calls


@pytest.fixture
def shell_dir(tmp_path: Path) -> Path:
    """A directory like the repository's root for the block: `.venv/bin/python` is there."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    return tmp_path


def test_the_readme_has_the_blocks_this_test_runs():
    assert {"quickstart", "reference"} <= set(BLOCKS), sorted(BLOCKS)


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


async def test_the_readme_top_to_bottom(live_url, tenant, coder, shell_dir):
    """The quick start, then the API tour, in one shell as the README says."""
    for name, first, repair in SCRIPTS:
        coder.script(name, first=first, repair=repair)
    coder.script("cube", first="def cube(x):\n    return x ** 3\n")
    env = {"B": live_url, "KEY": tenant.api_key, "MODEL": "openai_api"}
    out, calls = await asyncio.to_thread(_walk, ["quickstart", "reference"], shell_dir, env)

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
    # the first run: days_between fails, by name, with the values it compared
    assert "1 of 3 instance(s) still fail after 1 round(s): days_between: " in out, out
    assert "expected 59, got 60" in out, out
    # the second run, told how it failed, repaired it in its first round
    assert "all 1 instance(s) pass their tests (round 1)" in out, out
    # the code: every current file with its status, not the first artifact whatever it is
    for name in ("slugify", "days_between", "median"):
        assert f"# {name}.py: passed\n" in out and f"def {name}(" in out, out
    assert (shell_dir / "project.zip").stat().st_size > 0

    async with httpx.AsyncClient(base_url=live_url, headers=tenant.headers) as api:
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
