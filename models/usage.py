"""Usage per tenant: what GET /api/usage answers (store/usage.py writes and sums it)."""

from __future__ import annotations

from datetime import date
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

UsageKind = Literal["generation", "sandbox_run", "embedding", "snippet"]


class UsageRow(BaseModel):
    """One day's usage of one project (null: work outside a project) with one model (null: work of no model)."""

    day: date
    project_id: UUID | None
    model: str | None
    generations: int = Field(description="Generations recorded")
    tokens_in: int = Field(description="Prompt tokens of their candidates, every round")
    tokens_out: int = Field(description="Tokens their candidates generated")
    sandbox_runs: int = Field(description="Sandboxed test runs")
    sandbox_seconds: float = Field(description="Their duration, summed")
    embeddings: int = Field(description="Entries embedded and stored in the knowledge base")
    snippets: int = Field(description="Snippets stored")
