"""Spec registry contracts: templates (a JSON Schema per tenant/name/version) and instances."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from models.common import Public, Strict

Name = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
Version = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")


class TemplateCreate(Strict):
    name: str = Name
    version: str = Version
    description: str | None = Field(None, max_length=10_000)
    schema_: dict[str, Any] = Field(alias="schema")


class TemplateUpdate(Strict):
    description: str | None = Field(None, max_length=10_000)
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class TemplatePublic(Public):
    id: UUID
    tenant_id: UUID
    name: str
    version: str
    description: str | None
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    created_at: datetime
    updated_at: datetime


class InstanceCreate(Strict):
    template_id: UUID
    project_id: UUID
    values: dict[str, Any]


class InstanceUpdate(Strict):
    template_id: UUID | None = None
    values: dict[str, Any] | None = None


class InstancePublic(Public):
    id: UUID
    template_id: UUID
    project_id: UUID
    user_id: UUID
    tenant_id: UUID
    values: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ProjectSpec(InstancePublic):
    template_name: str
    template_version: str


class SchemaViolation(Public):
    path: str = Field(description="JSON path of the offending value, e.g. $.tests[0]")
    message: str
