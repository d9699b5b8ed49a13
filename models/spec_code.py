"""The values a Python template marks as code, checked when an instance is written: nothing is executed.

By `x-specmill` role:
- `tests`: each must parse; when the template also has a `setup` role, each must be `assert`
  statements only (any other line belongs in setup, and the message says so);
- `setup`: each must parse (lines the tests run after: an import, a fixture value);
- `imports`: each must be exactly one `import x` / `from x import y` statement, absolute, naming what
  it imports (no `*`: the static check of undefined names could not see through it).
Pure and CPU-bound: called from models.schema_rules.value_violations, in the validation process.
"""

from __future__ import annotations

import ast
from typing import Any

from models.registry import SchemaViolation
from models.spec_paths import object_at

CODE_ROLES = ("tests", "setup", "imports")


def code_violations(schema: dict[str, Any], values: Any) -> list[SchemaViolation]:
    """Every code value of a Python template's instance that is not what its role asks for."""
    hints = object_at(schema, "x-specmill")
    if not isinstance(values, dict) or hints.get("language", "python") != "python":
        return []
    roles = _roles(schema)
    setup_key = next((key for key, role in roles.items() if role == "setup"), None)
    out: list[SchemaViolation] = []
    for key, role in roles.items():
        if key not in values:
            continue
        value = values[key]
        for i, source in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(source, str):
                where = f"$.{key}" + (f"[{i}]" if i is not None else "")
                message = _problem(source, role, setup_key)
                if message is not None:
                    out.append(SchemaViolation(path=where, message=message))
    return out


def _roles(schema: dict[str, Any]) -> dict[str, str]:
    """Property name -> its code role, for the properties that have one."""
    out = {}
    props = object_at(schema, "properties")
    for key, prop in props.items():
        prop_hints = prop.get("x-specmill") if isinstance(prop, dict) else None
        role = prop_hints.get("role") if isinstance(prop_hints, dict) else None
        if role in CODE_ROLES:
            out[key] = role
    return out


def _problem(source: str, role: str, setup_key: str | None) -> str | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as err:
        line = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
        return f"not valid Python: {getattr(err, 'msg', err)}{line}"
    except (RecursionError, MemoryError):
        return "not valid Python here: nested too deeply to parse"
    if role == "imports":
        return import_problem(tree)
    if role == "tests" and setup_key is not None:
        other = next((node for node in tree.body if not isinstance(node, ast.Assert)), None)
        if not tree.body:
            return "a test must be an `assert` statement, and this one is empty"
        if other is not None:
            line = (ast.get_source_segment(source, other) or type(other).__name__).splitlines()[0][:80]
            return (
                f"a test must be an `assert` statement, and `{line}` is not one: put other lines (imports, "
                f"fixture values) in `{setup_key}`, which runs before the tests"
            )
    return None


def import_problem(tree: ast.Module) -> str | None:
    """Why a parsed import line is not one absolute `import x` / `from x import y` statement (None: it is)."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.Import, ast.ImportFrom)):
        return "an import line must be one `import x` or `from x import y` statement"
    node = tree.body[0]
    if isinstance(node, ast.ImportFrom) and node.level:
        return "an import line must be absolute: a relative import has no package to be relative to"
    if any(alias.name == "*" for alias in node.names):
        return "an import line must name what it imports, not `*`"
    return None
