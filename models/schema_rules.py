"""JSON Schema rules of the spec registry: a template's schema and an instance's values."""
from __future__ import annotations

import ast
import hashlib
import json
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing.exceptions import Unresolvable

from models.registry import SchemaViolation


def json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def schema_problems(schema: dict[str, Any]) -> list[SchemaViolation]:
    """Every way `schema` breaks the draft 2020-12 meta-schema (empty when it is valid)."""
    # With the format checker, as jsonschema's own check_schema: a `pattern` must be a regex that compiles.
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = [
        SchemaViolation(path=json_path(e.absolute_path), message=e.message)
        for e in sorted(meta.iter_errors(schema), key=lambda e: list(map(str, e.absolute_path)))
    ]
    declared = schema.get("$schema")
    if declared is not None and "2020-12" not in str(declared):
        problems.append(SchemaViolation(path="$.$schema", message=f"only draft 2020-12 is supported, not {declared}"))
    return problems


def value_violations(schema: dict[str, Any], values: Any) -> list[SchemaViolation]:
    """Every violation of `schema` by `values`, each with its JSON path (empty when valid)."""
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    try:
        errors = sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    except Unresolvable as err:
        return [SchemaViolation(path="$", message=f"the template's schema has an unresolvable $ref: {err}")]
    except RecursionError:
        return [SchemaViolation(path="$", message="checking these values against the template's schema recursed "
                                                  "too deeply: a $ref cycle, or values nested too deep for it")]
    if errors:
        return [_violation(e) for e in errors]
    return code_violations(schema, values)


def code_violations(schema: dict[str, Any], values: Any) -> list[SchemaViolation]:
    """Values a Python template marks as code (`x-specmill` role `tests`) that do not parse."""
    if not isinstance(values, dict) or (schema.get("x-specmill") or {}).get("language", "python") != "python":
        return []
    out = []
    for key, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict) or (prop.get("x-specmill") or {}).get("role") != "tests" or key not in values:
            continue
        value = values[key]
        for i, source in (enumerate(value) if isinstance(value, list) else [(None, value)]):
            if not isinstance(source, str):
                continue
            try:
                ast.parse(source)
            except (SyntaxError, ValueError) as err:
                where = f"$.{key}" + (f"[{i}]" if i is not None else "")
                line = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
                out.append(SchemaViolation(path=where, message=f"not valid Python: {getattr(err, 'msg', err)}{line}"))
    return out


def _violation(err: ValidationError) -> SchemaViolation:
    return SchemaViolation(path=json_path(err.absolute_path), message=err.message)


def values_hash(values: Any) -> str:
    """A stable hash of an instance's values: canonical JSON, sorted keys."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
