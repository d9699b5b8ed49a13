"""What a debugging round says of one instance's artifact, in three forms from one `Verdict`:
- the InstanceTestResult fields (status, failure, test, error, actual, expected: the contract the
  project's outcome is built from);
- the report stored with the artifact (record_test_result's `tests`: the API, the zip's manifest);
- `failure`, the text the next round's prompt is told; its first line is a summary of its own
  ("the test `assert add(1, 2) == 3` failed: expected 3, got -1"), then the traceback or the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox import compared

FAILURE_CHARS = 1500  # how much of a failure the next round's prompt is told


@dataclass
class Verdict:
    status: str  # passed | failed | error | timeout | no_tests (a stored test status)
    report: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    test: str | None = None
    error: str | None = None
    actual: str | None = None
    expected: str | None = None

    def fields(self) -> dict[str, Any]:
        """The InstanceTestResult fields it gives (with instance_id, artifact_id and problems besides)."""
        return {k: getattr(self, k) for k in ("status", "failure", "test", "error", "actual", "expected")}


def no_tests() -> Verdict:
    return Verdict(status="no_tests", report={"tests": 0})


def static_error(blocking: list[str], problems: list[str], total: int) -> Verdict:
    """An artifact whose static check found undefined names: an error before any test, and no sandbox run
    (the tests would only stop at the NameError). The failure lists every finding."""
    summary = f"error: the code uses names it never defines, so no test ran: {'; '.join(blocking)}"
    text = "\n".join([summary, "static check:", *(f"- {p}" for p in problems)])
    report = {"status": "error", "stage": "static", "tests": total, "problems": problems, "reason": summary}
    return Verdict(status="error", report=report, failure=text[:FAILURE_CHARS], error="; ".join(blocking))


def of_run(run, total: int) -> Verdict:
    """A sandbox run of the tests (sandbox.SandboxResult)."""
    f = run.failed_test or {}
    verdict = Verdict(
        status=run.status,
        report=_report(run, total),
        test=f.get("test"),
        error=f.get("error") or (run.reason if run.status != "passed" else None),
        actual=f.get("actual"),
        expected=f.get("expected"),
    )
    if run.status != "passed":
        details = f"traceback:\n{f['traceback']}" if f.get("traceback") else _output(run)
        verdict.failure = "\n".join(filter(None, [summary(run), details]))[:FAILURE_CHARS]
    return verdict


def summary(run) -> str:
    """One line: what failed, and with which values when the test was a comparison."""
    f = run.failed_test or {}
    head = run.status + (f" ({run.reason})" if run.reason else "")
    if f.get("stage") == "solution":
        return f"{head}: the code raised {f.get('error')} before any test ran"
    if f.get("stage") == "setup":
        return f"{head}: the setup line `{f.get('test')}` raised {f.get('error')}"
    if f.get("test") is None:
        return head
    what = f"{head}: the test `{f['test']}`"
    values = compared(f)
    return f"{what} failed: {values}" if values else f"{what} raised {f.get('error')}"


def _output(run) -> str | None:
    return f"output:\n{run.stderr.strip()}" if run.stderr.strip() else None


def _report(run, total: int) -> dict:
    report = {"status": run.status, "tests": total, "duration_s": round(run.duration_s, 3), "isolation": run.isolation}
    if run.reason:
        report["reason"] = run.reason
    if run.failed_test:
        report["failed_test"] = run.failed_test
        for key in ("actual", "expected"):
            if run.failed_test.get(key) is not None:
                report[key] = run.failed_test[key]
    if run.status != "passed":
        report["stderr"] = run.stderr[-2000:]
    return report
