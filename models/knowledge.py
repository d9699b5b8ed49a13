"""Knowledge base contracts: code snippets, project knowledge, similarity search, indexing I/O."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field, field_validator

from models.common import Public, Strict, UtcDatetime
from models.registry import check_depth

# The language codes snippets may carry (documented in the README). Lower-case, as sent.
LANGUAGES: tuple[str, ...] = (
    "bash",
    "c",
    "cpp",
    "csharp",
    "css",
    "dart",
    "elixir",
    "go",
    "haskell",
    "html",
    "java",
    "javascript",
    "json",
    "julia",
    "kotlin",
    "lua",
    "markdown",
    "ocaml",
    "perl",
    "php",
    "python",
    "r",
    "ruby",
    "rust",
    "scala",
    "shell",
    "sql",
    "swift",
    "text",
    "toml",
    "typescript",
    "yaml",
    "zig",
)

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/+\-]{0,63}")


def _language(value: str) -> str:
    if value not in LANGUAGES:
        raise ValueError(f"unknown language {value!r}; one of: {', '.join(LANGUAGES)}")
    return value


def _tags(value: list[str] | None) -> list[str] | None:
    """1-64 letters, digits or _.:/+- each, not starting with a symbol; duplicates dropped."""
    if value is None:
        return None
    seen: list[str] = []
    for tag in value:
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r}: 1-64 letters, digits or _.:/+-, not starting with a symbol")
        if tag not in seen:
            seen.append(tag)
    return seen


Language = Annotated[str, AfterValidator(_language)]
Tags = Annotated[list[str] | None, Field(max_length=50), AfterValidator(_tags)]


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


Content = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class SnippetCreate(Strict):
    language: Language
    content: Content  # the byte limit (SNIPPET_MAX_BYTES) is a setting, checked by the repository
    description: str | None = Field(None, max_length=10_000)
    tags: Tags = None


class SnippetUpdate(Strict):
    language: Language | None = None
    content: Content | None = None
    description: str | None = Field(None, max_length=10_000)
    tags: Tags = None


class SnippetPublic(Public):
    id: UUID
    tenant_id: UUID
    user_id: UUID
    language: str
    content: str
    description: str | None
    tags: list[str] | None
    created_at: UtcDatetime


class KnowledgeUpsert(Strict):
    key: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    value: Annotated[Any, AfterValidator(check_depth)]


class KnowledgePublic(Public):
    id: UUID
    project_id: UUID
    tenant_id: UUID
    key: str
    value: Any
    created_at: UtcDatetime
    updated_at: UtcDatetime


class SimilarRequest(Strict):
    query: str = Field(min_length=1, max_length=10_000)
    top_k: int = Field(default=5, ge=1, le=50)
    language: Language | None = None
    tags: Tags = None
    project_id: UUID | None = Field(default=None, description="Also search this project's knowledge entries.")
    mode: Literal["dense", "hybrid"] = "hybrid"
    embedder: str | None = Field(default=None, description="Default: DEFAULT_EMBEDDER")

    _query = field_validator("query")(_not_blank)


class SimilarHit(BaseModel):
    id: UUID
    score: float
    kind: Literal["snippet", "knowledge"] = "snippet"
    language: str
    description: str | None
    content: str
    tags: list[str]


class SimilarResponse(BaseModel):
    """The top_k hits, best first: one page (next_cursor is always null; ask for a larger top_k)."""

    items: list[SimilarHit]
    next_cursor: None = None
    mode: Literal["dense", "hybrid"]
    embedder: str


class EmbedderInfo(BaseModel):
    name: str
    model: str
    dimension: int | None
    engine: str | None = Field(None, description="What runs it once loaded: onnxruntime or torch.")
    collection: str
    loaded: bool
    default: bool
    error: str | None = None


# --- workflow and activity I/O ----------------------------------------------------------

ItemKind = Literal["snippet", "knowledge"]


class IndexItem(BaseModel):
    kind: ItemKind
    id: UUID


class IndexRequest(BaseModel):
    """Signal payload: items whose current database state the index must reflect."""

    items: list[IndexItem]


class IndexWorkflowInput(BaseModel):
    tenant_id: UUID
    batch_size: int = 64
    pending: list[IndexItem] = Field(default_factory=list, description="Carried over by continue-as-new.")


class IndexInput(BaseModel):
    tenant_id: UUID
    items: list[IndexItem]


class IndexResult(BaseModel):
    upserted: int
    deleted: int


class ReindexInput(BaseModel):
    tenant_id: UUID


class ReindexPageInput(BaseModel):
    tenant_id: UUID
    after: UUID | None = None
    limit: int = 500


class ReindexPage(BaseModel):
    items: list[IndexItem]
    last: UUID | None


class ReindexResult(BaseModel):
    indexed: int
    removed: int


def index_workflow_id(tenant_id: UUID) -> str:
    return f"knowledge-index-{tenant_id}"


INDEX_WORKFLOW = "KnowledgeIndexWorkflow"
REINDEX_WORKFLOW = "KnowledgeReindexWorkflow"
