"""Built-in spec templates, available to every tenant (owned by the system tenant, read-only).

Generation hints are JSON Schema annotations: `x-specmill` on the template says the language and
the file to write; `x-specmill` on a property gives its role in the prompt (name, description,
signature, tests, context, items). The prompt builder reads only these hints, never template names.
"""

from __future__ import annotations

import uuid
from typing import Any

SYSTEM_TENANT = uuid.UUID(int=0)
_NS = uuid.UUID("5bec3111-0000-4000-8000-000000000001")


def builtin_id(name: str, version: str) -> uuid.UUID:
    return uuid.uuid5(_NS, f"{name}@{version}")


PYTHON_FUNCTION: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Python function",
    "type": "object",
    "x-specmill": {"language": "python", "path": "{function_name}.py"},
    "required": ["function_name", "description"],
    "additionalProperties": False,
    "properties": {
        "function_name": {
            "type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "description": "The function's name.",
            "x-specmill": {"role": "name"},
        },
        "description": {
            "type": "string",
            "minLength": 1,
            "description": "What the function does.",
            "x-specmill": {"role": "description"},
        },
        "signature": {
            "type": "string",
            "description": "e.g. def add(a: int, b: int) -> int",
            "x-specmill": {"role": "signature"},
        },
        "tests": {
            "type": "array",
            "items": {"type": "string", "pattern": "^\\s*assert\\b"},
            "description": "Python assert statements the function must pass.",
            "x-specmill": {"role": "tests"},
        },
    },
}

PYTHON_MODULE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Python module",
    "type": "object",
    "x-specmill": {"language": "python", "path": "{module_name}.py"},
    "required": ["module_name", "description", "items"],
    "additionalProperties": False,
    "properties": {
        "module_name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "x-specmill": {"role": "name"}},
        "description": {"type": "string", "minLength": 1, "x-specmill": {"role": "description"}},
        "items": {
            "type": "array",
            "minItems": 1,
            "x-specmill": {"role": "items"},
            "description": "The functions and classes of the module.",
            "items": {
                "type": "object",
                "required": ["kind", "name", "description"],
                "additionalProperties": False,
                "properties": {
                    "kind": {"enum": ["function", "class"]},
                    "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                    "signature": {"type": "string"},
                    "description": {"type": "string", "minLength": 1},
                },
            },
        },
        "tests": {
            "type": "array",
            "items": {"type": "string", "pattern": "^\\s*assert\\b"},
            "x-specmill": {"role": "tests"},
        },
    },
}

PYTHON_CLASS: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Python class",
    "type": "object",
    "x-specmill": {"language": "python", "path": "{class_name}.py"},
    "required": ["class_name", "description"],
    "additionalProperties": False,
    "properties": {
        "class_name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "x-specmill": {"role": "name"}},
        "description": {"type": "string", "minLength": 1, "x-specmill": {"role": "description"}},
        "methods": {
            "type": "array",
            "items": {"type": "string"},
            "x-specmill": {"role": "signature"},
            "description": "Method signatures, e.g. def push(self, item: int) -> None",
        },
        "tests": {
            "type": "array",
            "items": {"type": "string", "pattern": "^\\s*assert\\b"},
            "x-specmill": {"role": "tests"},
        },
    },
}

BUILTINS: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "python-function",
        "1.0.0",
        "One Python function from a description, an optional signature and tests.",
        PYTHON_FUNCTION,
    ),
    ("python-module", "1.0.0", "A Python module: several functions and classes described together.", PYTHON_MODULE),
    ("python-class", "1.0.0", "One Python class with its methods.", PYTHON_CLASS),
]
