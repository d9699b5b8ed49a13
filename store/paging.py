"""Keyset pagination: an opaque cursor naming the last (created_at, id) a page returned."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from store.errors import Invalid

MAX_LIMIT = 100


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, rid = json.loads(raw)
        after = datetime.fromisoformat(ts), UUID(rid)
    except (ValueError, TypeError, AttributeError) as err:  # UUID(5) is an AttributeError
        raise Invalid("cursor is not one this API issued") from err
    if after[0].tzinfo is not None:  # the API issues naive UTC timestamps, as the columns hold
        raise Invalid("cursor is not one this API issued")
    return after


def keyset(cursor: str | None, args: list[Any], alias: str = "", *, descending: bool = False) -> str:
    """SQL condition for rows after the cursor (in `order by created_at, id`, or with `descending` in
    `order by created_at desc, id desc`); appends its parameters to args."""
    after = decode_cursor(cursor)
    if after is None:
        return "true"
    args.extend(after)
    return f"({alias}created_at, {alias}id) {'<' if descending else '>'} (${len(args) - 1}, ${len(args)})"


def limit_sql(limit: int | None, args: list[Any]) -> str:
    """`limit $n` for one row more than a page (page() reads the extra row); appends its parameter to args.
    No limit: every row (the callers inside the platform that need them all)."""
    if limit is None:
        return ""
    args.append(limit + 1)
    return f"limit ${len(args)}"


def page(rows: list[Any], limit: int | None) -> tuple[list[Any], str | None]:
    """Rows were fetched with limit + 1: the extra row says whether a next page exists."""
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        return rows, encode_cursor(last["created_at"], last["id"])
    return rows, None
