"""JSON Schema rules of the spec registry: a template's schema and an instance's values.

Safe by construction, whoever wrote the schema:
- references resolve only inside the schema and to the bundled draft 2020-12 meta-schemas (a registry
  with no retriever: nothing is ever fetched or read from disk); any other `$ref` / `$dynamicRef`, and
  one that points at something that is not a schema, is refused when the template is saved;
- `pattern`, `patternProperties` and the `regex` format use RE2, a linear-time engine (no
  backreferences, no lookaround: such a pattern is refused when saved); patterns and the strings
  checked against them are capped in length;
- the number and size of the reported violations are capped.
These functions are synchronous and CPU-bound: callers run them through models.schema_safety, in a
separate process with a deadline, never on an event loop.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from referencing.exceptions import Unresolvable
from referencing.jsonschema import EMPTY_REGISTRY

from models import schema_refs, spec_paths
from models.registry import SchemaViolation
from models.spec_code import code_violations
from models.spec_paths import object_at


@dataclass(frozen=True)
class Limits:
    """The caps of one validation (models.settings, section `validation`, documents each)."""

    max_pattern_length: int = 1000
    max_pattern_value_length: int = 100_000
    max_schema_bytes: int = 256 * 1024
    max_errors: int = 50
    max_message_length: int = 500

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_pattern_length=settings.validation_max_pattern_length,
            max_pattern_value_length=settings.validation_max_pattern_value_length,
            max_schema_bytes=settings.validation_max_schema_bytes,
            max_errors=settings.validation_max_errors,
        )


def default_limits() -> Limits:
    from models.settings import get_settings

    return Limits.from_settings(get_settings())


def json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


# --- RE2 ---------------------------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20  # a pattern whose automaton needs more is refused, not built


@lru_cache(maxsize=1024)
def _regex(pattern: str):
    return re2.compile(pattern, _RE2_OPTIONS)


def _re2_reason(err: Exception) -> str:
    reason = err.args[0] if err.args else err
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def regex_problem(pattern: str, limits: Limits) -> str | None:
    """Why `pattern` cannot be used (None: it can): too long, or not RE2 syntax."""
    if len(pattern) > limits.max_pattern_length:
        return f"is longer than {limits.max_pattern_length} characters"
    try:
        _regex(pattern)
    except re2.error as err:
        return (
            f"is not supported: patterns use RE2, a linear-time engine without backreferences or "
            f"lookaround ({_re2_reason(err)})"
        )
    return None


def _search(validator, pattern: str, text: str, what: str) -> tuple[bool, ValidationError | None]:
    """Whether `text` matches `pattern`, or the error that says why it cannot be checked."""
    limits: Limits = validator.LIMITS
    if len(text) > limits.max_pattern_value_length:
        return False, ValidationError(
            f"{what} of {len(text)} characters is too long to check against a pattern "
            f"(at most {limits.max_pattern_value_length})"
        )
    problem = regex_problem(pattern, limits)
    if problem:
        return False, ValidationError(f"the schema's pattern {pattern[:80]!r} {problem}")
    return bool(_regex(pattern).search(text)), None


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string"):
        matched, error = _search(validator, pattern, instance, "a string")
        if error:
            yield error
        elif not matched:
            yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            matched, error = _search(validator, pattern, key, "a property name")
            if error:
                yield error
            elif matched:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _format_checker(*, regex: bool) -> FormatChecker:
    checker = FormatChecker([f for f in FormatChecker.checkers if f != "regex"])
    if regex:
        checker.checks("regex", raises=re2.error)(lambda text: not isinstance(text, str) or bool(_regex(text)))
    return checker


_VALUE_FORMATS = _format_checker(regex=True)
# The meta-schema's own `format: regex` is left to regex_problem, which says why a pattern is refused.
_META_FORMATS = _format_checker(regex=False)


@lru_cache(maxsize=8)
def validator_class(limits: Limits) -> type:
    """Draft 2020-12 with RE2 for `pattern` and `patternProperties`, under these limits."""
    cls = validators.extend(Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties})
    cls.LIMITS = limits
    return cls


def _validator(schema: Any, limits: Limits, formats: FormatChecker):
    # EMPTY_REGISTRY has no retriever: jsonschema adds the bundled meta-schemas, nothing else resolves.
    return validator_class(limits)(schema, registry=EMPTY_REGISTRY, format_checker=formats)


def _errors(validator, instance: Any, limits: Limits) -> list[SchemaViolation]:
    errors = itertools.islice(validator.iter_errors(instance), limits.max_errors)
    return [_violation(e, limits) for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))]


def _violation(err: ValidationError, limits: Limits) -> SchemaViolation:
    return SchemaViolation(path=_cut(json_path(err.absolute_path), limits), message=_cut(err.message, limits))


def _cut(text: str, limits: Limits) -> str:
    n = limits.max_message_length
    return text if len(text) <= n else text[:n] + f"... ({len(text) - n} more characters)"


# --- the rules ---------------------------------------------------------------------------------


def schema_problems(schema: dict[str, Any], limits: Limits | None = None) -> list[SchemaViolation]:
    """Every way `schema` cannot be a template's schema (empty when it can): not draft 2020-12, over the
    size cap, a reference that leaves the schema, a pattern RE2 refuses, a bad `x-specmill` hint."""
    limits = limits or default_limits()
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    if size > limits.max_schema_bytes:
        return [
            SchemaViolation(
                path="$", message=f"the schema is {size} bytes as JSON, over the {limits.max_schema_bytes}-byte limit"
            )
        ]
    meta = _validator(Draft202012Validator.META_SCHEMA, limits, _META_FORMATS)
    problems = _errors(meta, schema, limits)
    declared = schema.get("$schema")
    if declared is not None and "2020-12" not in str(declared):
        problems.append(SchemaViolation(path="$.$schema", message=f"only draft 2020-12 is supported, not {declared}"))
    if problems:
        return problems
    found = schema_refs.check(
        schema, meta_errors=lambda node: [e.message for e in itertools.islice(meta.iter_errors(node), 3)]
    )
    for path, message in found.problems:
        problems.append(SchemaViolation(path=path, message=_cut(message, limits)))
    for path, pattern in found.patterns:
        problem = regex_problem(pattern, limits)
        if problem:
            problems.append(SchemaViolation(path=path, message=_cut(f"pattern {pattern[:80]!r} {problem}", limits)))
    problems += _hint_problems(schema)
    return problems[: limits.max_errors]


def _hint_problems(schema: dict[str, Any]) -> list[SchemaViolation]:
    hints = schema.get("x-specmill")
    if hints is None:
        return []
    if not isinstance(hints, dict):
        return [SchemaViolation(path="$.x-specmill", message='must be an object ({"language": ..., "path": ...})')]
    out = []
    if "language" in hints and not isinstance(hints["language"], str):
        out.append(SchemaViolation(path="$.x-specmill.language", message="must be a string"))
    if "path" in hints:
        props = object_at(schema, "properties")
        problem = spec_paths.hint_problem(hints["path"], props)
        if problem:
            out.append(
                SchemaViolation(path="$.x-specmill.path", message=f"path hint {str(hints['path'])[:80]!r}: {problem}")
            )
    for key, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and "x-specmill" in prop and not isinstance(prop["x-specmill"], dict):
            out.append(SchemaViolation(path=f"$.properties.{key}.x-specmill", message="must be an object"))
    return out


def value_violations(schema: dict[str, Any], values: Any, limits: Limits | None = None) -> list[SchemaViolation]:
    """Every violation of `schema` by `values`, each with its JSON path (empty when valid); then the
    code they carry and the file path they give."""
    limits = limits or default_limits()
    try:
        errors = _errors(_validator(schema, limits, _VALUE_FORMATS), values, limits)
    except Unresolvable as err:
        return [
            SchemaViolation(
                path="$",
                message=_cut(f"the template's schema has a reference that does not resolve inside it: {err}", limits),
            )
        ]
    except RecursionError:
        return [
            SchemaViolation(
                path="$",
                message="checking these values against the template's schema recursed "
                "too deeply: a $ref cycle, or values nested too deep for it",
            )
        ]
    except Exception as err:  # noqa: BLE001 - a schema saved before today's checks: a violation, not a 500
        return [
            SchemaViolation(
                path="$", message=_cut(f"the template's schema cannot be applied: {type(err).__name__}: {err}", limits)
            )
        ]
    if errors:
        return errors
    return code_violations(schema, values) + path_violations(schema, values)


def path_violations(schema: dict[str, Any], values: Any) -> list[SchemaViolation]:
    """The file path the template's path hint gives with these values, when it is not a safe one."""
    if not isinstance(values, dict):
        return []
    path = spec_paths.render(schema, values)
    problem = spec_paths.path_problem(path)
    if problem is None:
        return []
    return [
        SchemaViolation(
            path="$",
            message=f"these values give the file path {path[:120]!r}, which is not a "
            f"safe relative path inside the project: {problem}",
        )
    ]


def values_hash(values: Any) -> str:
    """A stable hash of an instance's values: canonical JSON, sorted keys."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
