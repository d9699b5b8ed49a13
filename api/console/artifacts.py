"""Console pages of generated files: the code highlighted on the server with its tests per round and its
provenance (model, techniques, snippets, candidates and how the kept one was chosen, each line's reliance
on the prompt), what changed between two rounds, and the project's files as a zip."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from api.console.client import ApiError
from api.console.web import Page, PageDep, code_html, unified_diff, uuid_or_404

router = APIRouter()
MAX_PAGES = 20  # artifacts are listed 100 at a time; a project's history beyond 2,000 files is not searched


async def all_artifacts(page: Page, pid: str) -> list[dict[str, Any]]:
    out, cursor = [], None
    for _ in range(MAX_PAGES):
        listed = await page.api.get(f"/api/projects/{pid}/artifacts", all="true", limit=100, cursor=cursor)
        out += listed["items"]
        cursor = listed["next_cursor"]
        if cursor is None:
            break
    return out


def history_of(artifacts: list[dict[str, Any]], instance_id: str) -> list[dict[str, Any]]:
    """One spec's files, in the order they were written (round by round)."""
    mine = [a for a in artifacts if str(a["instance_id"]) == instance_id]
    return sorted(mine, key=lambda a: (a["created_at"], a["round"]))


def test_rows(tests: list[str], artifact: dict[str, Any]) -> list[str]:
    """Each test's status in one file's run: the sandbox stops at the first failure, so the tests before it
    passed and those after it did not run."""
    status = artifact.get("test_status")
    if status in (None, "no_tests"):
        return ["not run"] * len(tests)
    if status == "passed":
        return ["passed"] * len(tests)
    failed = ((artifact.get("tests") or {}).get("failed_test") or {}).get("test")
    if failed in tests:
        at = tests.index(failed)
        return ["passed"] * at + [status] + ["not run"] * (len(tests) - at - 1)
    return [status] * len(tests)  # the code failed before any test (or a setup line did)


async def _artifact(page: Page, project_id: str, artifact_id: str):
    pid, aid = str(uuid_or_404(project_id)), str(uuid_or_404(artifact_id))
    project = await page.api.get(f"/api/projects/{pid}")
    artifacts = await all_artifacts(page, pid)
    found = next((a for a in artifacts if a["id"] == aid), None)
    if found is None:
        raise ApiError(404, {"detail": "no such file in this project"})
    return pid, project, artifacts, found


async def _tests(page: Page, instance_id: str) -> list[str]:
    """The spec's visible tests as they are now (a deleted spec: none)."""
    try:
        instance = await page.api.get(f"/api/instances/{instance_id}")
    except ApiError as err:
        if err.status == 404:
            return []
        raise
    tests = (instance.get("values") or {}).get("tests")
    return [t for t in tests if isinstance(t, str)] if isinstance(tests, list) else []


@router.get("/projects/{project_id}/artifacts/{artifact_id}")
async def artifact(page: PageDep, project_id: str, artifact_id: str):
    pid, project, artifacts, found = await _artifact(page, project_id, artifact_id)
    history = history_of(artifacts, str(found["instance_id"]))
    tests = await _tests(page, str(found["instance_id"]))
    generation = None
    if found.get("generation_id"):
        try:
            generation = await page.api.get(f"/api/generations/{found['generation_id']}")
        except ApiError as err:
            if err.status != 404:
                raise
    result = (generation or {}).get("result") or {}
    reliance = found.get("reliance")
    return page.render(
        "artifact.html",
        title=found["path"],
        project=project,
        artifact=found,
        code=code_html(found["content"], _language(found["path"])),
        history=[{**a, "tests_shown": test_rows(tests, a)} for a in history],
        tests=tests,
        candidates=result.get("candidates") or [],
        provenance=result.get("provenance") or {},
        reliance=reliance,
    )


def _language(path: str) -> str:
    return "python" if path.endswith(".py") else "text"


@router.get("/projects/{project_id}/artifacts/{artifact_id}/diff")
async def diff(page: PageDep, project_id: str, artifact_id: str):
    """This file against the one its spec had just before (the previous round, or the previous run's)."""
    pid, project, artifacts, found = await _artifact(page, project_id, artifact_id)
    history = history_of(artifacts, str(found["instance_id"]))
    at = history.index(found)
    before = history[at - 1] if at > 0 else None
    tests = await _tests(page, str(found["instance_id"]))
    then = test_rows(tests, before) if before else ["not run"] * len(tests)
    now = test_rows(tests, found)
    turned = [{"test": t, "before": b, "after": a} for t, b, a in zip(tests, then, now, strict=True) if b != a]
    rows = unified_diff(
        before["content"] if before else "",
        found["content"],
        f"round {before['round']}" if before else "(nothing)",
        f"round {found['round']}",
    )
    return page.render(
        "diff.html",
        title=f"What changed in {found['path']}",
        project=project,
        artifact=found,
        before=before,
        rows=rows,
        turned=turned,
    )


@router.get("/projects/{project_id}/files.zip")
async def files_zip(page: PageDep, project_id: str):
    pid = str(uuid_or_404(project_id))
    resp = await page.api.get(f"/api/projects/{pid}/artifacts.zip")
    return page.finish(
        Response(
            resp.content,
            media_type="application/zip",
            headers={
                "Content-Disposition": resp.headers.get("content-disposition", 'attachment; filename="files.zip"')
            },
        )
    )
