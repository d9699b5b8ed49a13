"""Failures no retry can fix, as non-retryable activity errors, so the project ends `failed` with the reason.

A repository's domain error (NotFound, Conflict, Invalid, Forbidden) or a pydantic validation error
says the same thing on every attempt: retried, it would keep a workflow in its state for ever. Every
activity is wrapped with `permanent_failures`, which turns them into
`ApplicationError(non_retryable=True)` typed by the error's class; the workflow then ends with the
message as its reason. An activity that knows better (a race that a few retries cover) catches the
error itself and raises a retryable ApplicationError, which passes through untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from store.errors import DomainError

P = ParamSpec("P")
T = TypeVar("T")
VALIDATION_ERROR = "ValidationError"


def permanent(err: DomainError | ValidationError) -> ApplicationError:
    """The non-retryable ApplicationError for a domain or validation error, with a message a user can read."""
    if isinstance(err, DomainError):
        details = (err.extra,) if err.extra else ()
        return ApplicationError(err.message, *details, type=type(err).__name__, non_retryable=True)
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '$'}: {e['msg']}" for e in err.errors()[:5])
    return ApplicationError(f"{err.title} is not valid: {problems}"[:1000], type=VALIDATION_ERROR, non_retryable=True)


def permanent_failures(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorate an activity (below `@activity.defn`): its domain and validation errors end it at once."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (DomainError, ValidationError) as err:
            raise permanent(err) from err

    return wrapper
