"""Walk a draft 2020-12 schema as the validator would, checking every `$ref` and `$dynamicRef`.

A reference must resolve with a registry that has no retriever (inside the schema, or to a bundled
meta-schema) and land on a schema (an object or a boolean). A reference may point outside the
keyword positions the meta-schema checks (`{"x-foo": {...}, "$ref": "#/x-foo"}`): such a target is
checked against the meta-schema too, and walked, so that what validation will evaluate is what was
checked at save time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing._core import Resolver
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, EMPTY_REGISTRY

_ONE = (
    "additionalProperties",
    "contains",
    "contentSchema",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("$defs", "definitions", "dependentSchemas", "patternProperties", "properties")
REF_KEYWORDS = ("$ref", "$dynamicRef")


@dataclass
class Found:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (JSON path, message)
    patterns: list[tuple[str, str]] = field(default_factory=list)  # (JSON path, pattern)


def _key(path: str, key: str) -> str:
    return f"{path}.{key}"


def subschemas(node: dict[str, Any], path: str) -> Iterator[tuple[Any, str]]:
    """The direct subschemas of a schema object, with their JSON paths."""
    for kw in _ONE:
        if kw in node:
            yield node[kw], _key(path, kw)
    for kw in _MANY:
        if isinstance(node.get(kw), list):
            for i, child in enumerate(node[kw]):
                yield child, f"{_key(path, kw)}[{i}]"
    for kw in _MAP:
        if isinstance(node.get(kw), dict):
            for name, child in node[kw].items():
                yield child, _key(_key(path, kw), name)


def check(schema: dict[str, Any], *, meta_errors: Callable[[Any], list[str]]) -> Found:
    """The reference problems of `schema` and every pattern it uses. `meta_errors(node)`: the
    meta-schema's complaints about a reference target outside the checked positions."""
    found = Found()
    resolver = SPECIFICATIONS.combine(EMPTY_REGISTRY).resolver_with_root(DRAFT202012.create_resource(schema))
    seen: set[int] = set()
    pending: list[tuple[Any, Resolver, str]] = [(schema, resolver, "$")]
    targets: list[tuple[Any, Resolver, str]] = []
    while pending or targets:
        if not pending:  # the whole tree is walked: now the targets it has not reached
            node, res, path = targets.pop()
            if not isinstance(node, dict) or id(node) in seen:
                continue
            complaints = meta_errors(node)
            if complaints:
                found.problems.append((path, f"points to something that is not a valid schema: {complaints[0]}"))
                continue
            pending.append((node, res, path))
        node, res, path = pending.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        _patterns(node, path, found)
        for kw in REF_KEYWORDS:
            ref = node.get(kw)
            if isinstance(ref, str):
                target = _lookup(res, kw, ref, _key(path, kw), found)
                if target is not None:
                    targets.append(target)
        for child, child_path in subschemas(node, path):
            child_res = res.in_subresource(DRAFT202012.create_resource(child)) if isinstance(child, dict) else res
            pending.append((child, child_res, child_path))
    return found


def _lookup(res: Resolver, kw: str, ref: str, path: str, found: Found) -> tuple[Any, Resolver, str] | None:
    try:
        resolved = res.lookup(ref)
    except (Unresolvable, ValueError, TypeError, LookupError):  # a pointer through a non-container, a bad index
        found.problems.append(
            (
                path,
                f"{kw} {ref!r} does not resolve inside this schema: only local references "
                "('#...', or to an $id/$anchor defined in it) and the draft 2020-12 "
                "meta-schemas are allowed; nothing is fetched",
            )
        )
        return None
    target = resolved.contents
    if not isinstance(target, (dict, bool)):
        found.problems.append(
            (path, f"{kw} {ref!r} points to a {type(target).__name__}, not a schema (an object or a boolean)")
        )
        return None
    return target, resolved.resolver, f"{path} -> {ref}"


def _patterns(node: dict[str, Any], path: str, found: Found) -> None:
    if isinstance(node.get("pattern"), str):
        found.patterns.append((_key(path, "pattern"), node["pattern"]))
    if isinstance(node.get("patternProperties"), dict):
        for pattern in node["patternProperties"]:
            found.patterns.append((_key(path, "patternProperties"), pattern))  # the key is in the message
