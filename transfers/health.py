"""GET /health (liveness) and GET /ready (readiness).

/health answers 200 as long as the process answers: a load balancer or an
orchestrator restarts a process that stops answering, never one whose
dependencies are down (restarting would not help). /ready answers 200 only
when the database, the funding ledger, Kafka and the Celery broker answer,
else 503 with what is down: take the process out of rotation until then.
Every check has a deadline (READY_CHECK_TIMEOUT_SECONDS) so /ready itself
answers quickly when a dependency hangs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from settlement.ledger import get_funding_ledger
from transfer_site.bus import get_message_bus

logger = logging.getLogger(__name__)


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_celery_broker() -> None:
    from kombu import Connection

    url = settings.CELERY_BROKER_URL
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    if url.startswith("filesystem://"):
        # The folder broker has no server: ready when its folders can be written.
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            folder = options.get(key)
            if folder and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
                raise OSError(f"Celery broker folder {folder} is missing or not writable")
        return
    timeout = settings.READY_CHECK_TIMEOUT_SECONDS
    with Connection(url, transport_options=options, connect_timeout=timeout) as broker:
        broker.ensure_connection(max_retries=1, timeout=timeout)
        client = getattr(broker.default_channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()  # Redis: the connection pool connects lazily


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "ledger": lambda: get_funding_ledger().ping(),
    "kafka": lambda: get_message_bus().ping(),
    "celery_broker": _check_celery_broker,
}

# One check of each kind at a time: a dependency that hangs holds one thread, not one per probe.
_running: dict[str, threading.Thread] = {}
_running_lock = threading.Lock()


def _run_check(name: str, check: Callable[[], None], outcome: dict[str, str | None]) -> None:
    try:
        check()
        outcome[name] = None
    except Exception as error:  # any failure means "down", with what it said
        outcome[name] = f"{type(error).__name__}: {error}"
    finally:
        if name in ("database", "ledger"):
            connection.close()  # this thread's own connection; never left open


def run_checks(checks: dict[str, Callable[[], None]] | None = None, timeout: float | None = None) -> dict[str, str]:
    """Run the checks side by side; returns {name: why} for those down or too slow."""
    checks = CHECKS if checks is None else checks
    timeout = settings.READY_CHECK_TIMEOUT_SECONDS if timeout is None else timeout
    outcome: dict[str, str | None] = {}
    started: dict[str, threading.Thread] = {}
    down: dict[str, str] = {}
    with _running_lock:
        for name, check in checks.items():
            if (previous := _running.get(name)) is not None and previous.is_alive():
                down[name] = "the previous check has not answered yet"
                continue
            thread = threading.Thread(target=_run_check, args=(name, check, outcome), daemon=True,
                                      name=f"ready-{name}")
            _running[name] = started[name] = thread
            thread.start()
    deadline = time.monotonic() + timeout  # the threads run together: one timeout in all
    for name, thread in started.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            down[name] = f"no answer within {timeout:g} s"
        elif outcome.get(name) is not None:
            down[name] = outcome[name]
    for name, why in down.items():
        logger.warning("readiness check %s failed: %s", name, why)
    return down


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """Readiness: every dependency answers."""
    down = run_checks()
    if down:
        return JsonResponse({"status": "unavailable", "down": down}, status=503)
    return JsonResponse({"status": "ready", "checked": sorted(CHECKS)})
