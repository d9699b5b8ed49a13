"""Built-in spec templates, available to every tenant (owned by the system tenant, read-only).

Generation hints are JSON Schema annotations: `x-specmill` on the template says the language and
the file to write; `x-specmill` on a property gives its role in the prompt (name, description,
signature, tests, context, items, imports, setup). The prompt builder reads only these hints, never
template names.

A built-in version is never changed once tenants' instances may reference it: a change is a new
version (python-function 1.1.0 adds `imports` and test `setup` lines), and the latest version of each
name is the one a project gets by default (store.pipeline_settings.attach_templates, and a lookup by
name without a version).
"""

from __future__ import annotations

import copy
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


def _python_function_1_1() -> dict[str, Any]:
    """python-function 1.1.0: 1.0.0 plus the module's `imports` and the tests' `setup` lines. Its tests must
    still be `assert` statements; models.spec_code.code_violations refuses any other line there with a
    message that points to `setup` (a schema `pattern` could not say that)."""
    schema = copy.deepcopy(PYTHON_FUNCTION)
    props = schema["properties"]
    props["imports"] = {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "description": "Import lines the module needs, e.g. import datetime or from typing import Optional.",
        "x-specmill": {"role": "imports"},
    }
    props["tests"] = {
        "type": "array",
        "items": {"type": "string"},
        "description": "Python assert statements the function must pass (imports and fixtures go in setup).",
        "x-specmill": {"role": "tests"},
    }
    props["setup"] = {
        "type": "array",
        "items": {"type": "string"},
        "description": "Python lines run before the tests, e.g. import datetime or a fixture value.",
        "x-specmill": {"role": "setup"},
    }
    return schema


PYTHON_FUNCTION_1_1: dict[str, Any] = _python_function_1_1()

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
    (
        "python-function",
        "1.1.0",
        "One Python function from a description, an optional signature, the imports it needs, and tests "
        "with their setup lines.",
        PYTHON_FUNCTION_1_1,
    ),
    ("python-module", "1.0.0", "A Python module: several functions and classes described together.", PYTHON_MODULE),
    ("python-class", "1.0.0", "One Python class with its methods.", PYTHON_CLASS),
]
