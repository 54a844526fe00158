"""Celery signal handlers: log context for one-transfer tasks, failure and retry counts.

Instrumentation only; no business logic. Connected once, in OperationsConfig.ready.
"""

from __future__ import annotations

import contextvars
import json
import logging
from typing import Any

from transfer_site.logging import request_id_var, user_id_var

logger = logging.getLogger(__name__)

_tokens: dict[str, list[tuple[contextvars.ContextVar, contextvars.Token]]] = {}


def single_transfer_of(task_name: str, args: Any) -> tuple[str, str | None] | None:
    """(request id, user id) when a settlement task's batch is exactly one transfer."""
    args = tuple(args or ())
    if task_name == "settlement.settle_batch" and len(args) == 2:
        request_ids, events = args
    elif task_name == "settlement.reserve_funding_to_spot" and args:
        request_ids, events = args[0], []
    elif task_name == "settlement.settle_balance_events" and args:
        request_ids, events = [], args[0]
    else:
        return None
    if not isinstance(request_ids, list | tuple) or not isinstance(events, list | tuple):
        return None
    if len(request_ids) + len(events) != 1:
        return None
    if request_ids:
        return str(request_ids[0]), None
    try:
        event = json.loads(events[0])
        return str(event["ref_id"]), str(event["user_id"])
    except (ValueError, KeyError, TypeError):
        return None


def _on_prerun(sender=None, task_id: str | None = None, task=None, args=None, **kwargs: Any) -> None:
    # Celery's own lines about this task ("succeeded in ...") then carry the request id too.
    single = single_transfer_of(getattr(task, "name", ""), args)
    if single is None or task_id is None:
        return
    request_id, user_id = single
    tokens = [(request_id_var, request_id_var.set(request_id))]
    if user_id is not None:
        tokens.append((user_id_var, user_id_var.set(user_id)))
    _tokens[task_id] = tokens


def _on_postrun(sender=None, task_id: str | None = None, **kwargs: Any) -> None:
    for var, token in reversed(_tokens.pop(task_id, [])):
        try:
            var.reset(token)
        except ValueError:  # set in another context (thread pools); clear it instead
            var.set(None)


def _count(task: Any, outcome: str) -> None:
    from operations.services import count_task_outcome

    name = getattr(task, "name", None) or str(task)
    try:
        count_task_outcome(name, outcome)  # type: ignore[arg-type]
    except Exception:  # counting must never break the task's own handling
        logger.warning("could not count a task %s", outcome, exc_info=True, extra={"task": name})


def _on_failure(sender=None, **kwargs: Any) -> None:
    _count(sender, "failures")


def _on_retry(sender=None, **kwargs: Any) -> None:
    _count(sender, "retries")


def connect() -> None:
    from celery import signals

    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="operations.log_context_prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="operations.log_context_postrun")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="operations.count_failure")
    signals.task_retry.connect(_on_retry, weak=False, dispatch_uid="operations.count_retry")
