"""OpenAPI links: what a created resource's `id` feeds next, for clients and for stateful fuzzing.

A POST that creates a resource links to every operation that takes its id as a path parameter
(`POST /api/projects` -> `GET /api/projects/{project_id}/state`, `POST /api/knowledge/{project_id}`,
...) and to every POST whose body names it (`POST /api/templates` -> `POST /api/instances`'s
`template_id`). Only operations this app serves are linked.
"""

from __future__ import annotations

from typing import Any

CREATES = {  # the creating operation -> the id's name elsewhere
    ("/api/templates", "post"): "template_id",
    ("/api/instances", "post"): "instance_id",
    ("/api/projects", "post"): "project_id",
    ("/api/tasks", "post"): "task_id",
    ("/api/snippets", "post"): "snippet_id",
    ("/api/generate", "post"): "generation_id",
}
ID = "$response.body#/id"


def _body_properties(schema: dict[str, Any], op: dict[str, Any]) -> set[str]:
    content = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ref = content.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        content = schema.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    return set(content.get("properties", {}))


def add_links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    for (source_path, source_method), name in CREATES.items():
        source = paths.get(source_path, {}).get(source_method)
        if source is None:
            continue
        links: dict[str, Any] = {}
        for path, ops in paths.items():
            for method, op in ops.items():
                if (
                    not isinstance(op, dict)
                    or "operationId" not in op
                    or (path, method) == (source_path, source_method)
                ):
                    continue
                link: dict[str, Any] = {}
                if "{" + name + "}" in path:
                    link["parameters"] = {name: ID}
                elif method == "post" and name in _body_properties(schema, op):
                    link["requestBody"] = {name: ID}
                if link:
                    links[op["operationId"]] = {"operationId": op["operationId"], **link}
        for code, response in source.get("responses", {}).items():
            if code.startswith("2") and links:
                response["links"] = links
