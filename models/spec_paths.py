"""The file path a spec instance's code is written to, from its template's `x-specmill` path hint.

A hint such as "{function_name}.py" or "src/{module_name}.py" is checked when the template is saved
(`hint_problem`), and the path an instance's values render is checked when the instance is saved and
when a project's specs are checked (`path_problem` on `render`): a path that leaves the project's tree
must fail there, with a reason, and never reach the integration step.
"""

from __future__ import annotations

import re
import string
from typing import Any

EXTENSIONS = {"python": ".py", "javascript": ".js", "typescript": ".ts", "go": ".go", "rust": ".rs", "java": ".java"}
MAX_PATH_LENGTH = 255
MAX_SEGMENTS = 16
# A segment: ASCII letters, digits, `_`, `-`, `.`; it starts with a letter, a digit or `_` (no hidden
# file, no `.`/`..`, nothing that reads as an option); `/` separates segments.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED = frozenset({"manifest.json"})  # the project download's own manifest


def object_at(node: dict[str, Any], key: str) -> dict[str, Any]:
    """`node[key]` when it is an object (a schema's `x-specmill` or `properties`), else {}."""
    value = node.get(key)
    return value if isinstance(value, dict) else {}


def path_problem(path: str) -> str | None:
    """Why `path` is not a safe relative path inside the project's tree (None: it is)."""
    if not path:
        return "it is empty"
    if len(path) > MAX_PATH_LENGTH:
        return f"it is longer than {MAX_PATH_LENGTH} characters"
    if path.startswith("/"):
        return "it is absolute"
    if "\\" in path:
        return "it contains a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "it contains a control character"
    parts = path.split("/")
    if ".." in parts:
        return "it contains '..'"
    if len(parts) > MAX_SEGMENTS:
        return f"it has more than {MAX_SEGMENTS} segments"
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            return (
                f"segment {part[:40]!r} is not made of letters, digits, '_', '-' and '.' "
                "(starting with a letter, a digit or '_')"
            )
    if path in RESERVED:
        return f"{path!r} is reserved"
    return None


def hint_fields(hint: str) -> list[str]:
    """The `{field}` names of a path hint; ValueError when it is not a plain one (a format spec, a
    conversion, an attribute or index, a positional field, an unmatched brace)."""
    fields = []
    for _literal, field, spec, conversion in string.Formatter().parse(hint):
        if field is None:
            continue
        if not _FIELD.fullmatch(field):
            raise ValueError(f"{{{field}}} is not a plain property name (no positional fields, attributes or indexes)")
        if spec or conversion:
            raise ValueError(f"{{{field}}} may not have a format spec or a conversion")
        fields.append(field)
    return fields


def hint_problem(hint: Any, properties: dict[str, Any]) -> str | None:
    """Why a template's path hint cannot be used (None: it can). Its fields are `name` or the
    template's properties; with any value in them it must give a safe relative path."""
    if not isinstance(hint, str):
        return "must be a string"
    if "\x00" in hint:
        return "contains a NUL character"
    try:
        fields = hint_fields(hint)
    except ValueError as err:
        return str(err)
    unknown = [f for f in fields if f != "name" and f not in properties]
    if unknown:
        return f"names {{{unknown[0]}}}, which is not a property of this template"
    problem = path_problem(hint.format(**{f: "x" for f in fields}))
    return f"does not give a safe relative path: {problem}" if problem else None


def name_value(schema: dict[str, Any], values: Any) -> str | None:
    """The value of the property with role `name` (the last one, as the prompt builder reads it)."""
    props = object_at(schema, "properties")
    name = None
    for key, value in values.items() if isinstance(values, dict) else ():
        prop = props.get(key)
        hints = prop.get("x-specmill") if isinstance(prop, dict) else None
        if isinstance(hints, dict) and hints.get("role") == "name":
            name = str(value)
    return name


def render(schema: dict[str, Any], values: Any, name: str | None = None) -> str:
    """The path the hint gives with these values, unchecked (the default: `{name}` and the language's
    extension; a hint whose field has no value falls back to that default)."""
    hints = object_at(schema, "x-specmill")
    ext = EXTENSIONS.get(str(hints.get("language", "python")), ".txt")
    name = name if name is not None else name_value(schema, values)
    default = f"{name or 'main'}{ext}"
    hint = hints.get("path")
    if not hint or not isinstance(hint, str):
        return default
    fmt = (
        {**{k: v for k, v in values.items() if isinstance(v, (str, int))}, "name": name or "main"}
        if isinstance(values, dict)
        else {"name": name or "main"}
    )
    try:
        fields = hint_fields(hint)
        return hint.format(**{f: fmt[f] for f in fields})
    except (KeyError, ValueError):
        return default


def file_path(schema: dict[str, Any], values: Any, name: str | None = None) -> str:
    """`render`, or `main` and the extension when that is not a safe relative path (a template saved
    before hints were checked: its instances fail the spec check with the reason)."""
    path = render(schema, values, name)
    if path_problem(path) is None:
        return path
    hints = object_at(schema, "x-specmill")
    return "main" + EXTENSIONS.get(str(hints.get("language", "python")), ".txt")
