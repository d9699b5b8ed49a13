"""The backend services the gateway serves in-process or forwards to (seed ports)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fastapi import APIRouter

from api.routes import generator, knowledge, pipeline, projects, providers, runs, templates


@dataclass(frozen=True)
class ServiceDef:
    name: str
    port: int
    routers: list[APIRouter]
    paths: list[re.Pattern]  # /api paths this service owns (used when forwarding)
    url_setting: str  # settings field that moves it to its own process
    queues: list[tuple[str, bool]] = field(default_factory=list)  # (task queue, needs workflow pollers)
    knowledge: bool = False  # needs the process's knowledge runtime (embedders + vector store)


SERVICES: dict[str, ServiceDef] = {
    "spec-registry": ServiceDef(
        "spec-registry",
        8000,
        [templates.router],
        [re.compile(r"^/api/(templates|instances)(/|$)"), re.compile(r"^/api/projects/[^/]+/specs/?$")],
        "spec_registry_url",
    ),
    "orchestrator": ServiceDef(
        "orchestrator",
        8003,
        [projects.router, runs.router, pipeline.router],
        [re.compile(r"^/api/(projects|tasks|settings|usage)(/|$)")],  # settings: the pipeline's (tenant defaults)
        "orchestrator_url",
        queues=[("orchestrator", True), ("spec-registry", False), ("integration", False)],
    ),
    "generator": ServiceDef(
        "generator",
        8001,
        [generator.router, providers.router],
        [re.compile(r"^/api/(generate|techniques|models|generations|providers)(/|$)")],
        "generator_url",
        queues=[("generation", True)],
    ),
    "knowledge": ServiceDef(
        "knowledge",
        8002,
        [knowledge.router],
        [re.compile(r"^/api/(snippets|knowledge|similar)(/|$)")],
        "knowledge_url",
        queues=[("knowledge", True)],
        knowledge=True,
    ),
}


def owner_of(path: str, remote: dict[str, str]) -> str | None:
    """The remote service (name) that owns `path`, most specific pattern first."""
    for name in sorted(remote, key=lambda n: n != "spec-registry"):  # .../specs before /projects
        if any(p.match(path) for p in SERVICES[name].paths):
            return name
    return None
