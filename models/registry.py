"""Spec registry contracts: templates (a JSON Schema per tenant/name/version) and instances."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, Field

from models.common import AppliesTo, Public, Strict, UtcDatetime

Name = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
Version = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")

MAX_JSON_DEPTH = 64


def check_depth(doc: Any) -> Any:
    """Refuse documents nested deeper than MAX_JSON_DEPTH: deeper ones could be stored but never served back
    (pydantic's serializer stops at 255 levels) nor validated (Python's recursion limit)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return doc


JsonObject = Annotated[dict[str, Any], AfterValidator(check_depth)]


class TemplateCreate(Strict):
    name: str = Name
    version: str = Version
    description: str | None = Field(None, max_length=10_000)
    schema_: JsonObject = Field(alias="schema")


class TemplateUpdate(Strict):
    description: str | None = Field(None, max_length=10_000)
    schema_: JsonObject | None = Field(None, alias="schema")


class TemplatePublic(Public):
    id: UUID
    tenant_id: UUID
    name: str
    version: str
    description: str | None
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    builtin: bool = Field(False, description="A built-in template: readable by every tenant, read-only.")


class InstanceCreate(Strict):
    template_id: UUID
    project_id: UUID
    values: JsonObject


class InstanceUpdate(Strict):
    template_id: UUID | None = None
    values: JsonObject | None = None


class InstancePublic(Public):
    id: UUID
    template_id: UUID
    project_id: UUID
    user_id: UUID
    tenant_id: UUID
    values: dict[str, Any]
    created_at: UtcDatetime
    updated_at: UtcDatetime


class InstanceSaved(InstancePublic):
    """A spec written: the instance, and which run its values reach (store/fixed.py)."""

    applies_to: AppliesTo = Field(
        description="`this run`: the run that is going has not fixed its specs yet; `next run`: it keeps the old values"
    )
    note: str = Field(description="The same, in a sentence")


class ProjectSpec(InstancePublic):
    template_name: str
    template_version: str


class SchemaViolation(Public):
    path: str = Field(description="JSON path of the offending value, e.g. $.tests[0]")
    message: str
