"""Activities are called through the table of models/activities.py: its name and its result type."""

from __future__ import annotations

from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.activities import ActivityType

A = TypeVar("A")
R = TypeVar("R")


def execute(act: ActivityType[A, R], arg: A, **options: Any):
    """`workflow.execute_activity` for one of the table's activities (an awaitable of its result)."""
    return workflow.execute_activity(act.name, arg, result_type=act.result, **options)
