"""Domain errors raised by repositories; the API maps them to HTTP, activities to ApplicationError."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    pass


class Invalid(DomainError):
    """Input that is well-formed but breaks a rule (a schema, a reference)."""


class Forbidden(DomainError):
    """Allowed to see, not to change (a built-in template)."""


class Busy(DomainError):
    """A limit of the tenant is reached for now (running projects): try again once some work ends."""


class Gone(DomainError):
    """It existed, and can no longer be used (an invitation expired, used or revoked)."""
