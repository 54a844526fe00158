"""Writes of the operations app."""

from __future__ import annotations

from typing import Literal

from django.db import IntegrityError, transaction
from django.db.models import F

from operations.models import TaskOutcomeCount


def count_task_outcome(task: str, outcome: Literal["failures", "retries"]) -> None:
    """Add one to the task's failure or retry count (atomic across processes)."""
    if TaskOutcomeCount.objects.filter(task=task).update(**{outcome: F(outcome) + 1}):
        return
    try:
        with transaction.atomic():
            TaskOutcomeCount.objects.create(task=task, **{outcome: 1})
    except IntegrityError:  # another worker created the row first
        TaskOutcomeCount.objects.filter(task=task).update(**{outcome: F(outcome) + 1})
