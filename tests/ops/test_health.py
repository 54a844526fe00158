"""/health (liveness) and /ready (readiness) with real dead dependencies."""

from __future__ import annotations

import socket
import time
from unittest import mock

import pytest

from transfer_site.bus import KafkaMessageBus
from transfers import health

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens once it is closed


def test_health_answers_while_a_dependency_is_down(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    with mock.patch.object(health, "get_message_bus", return_value=KafkaMessageBus(f"127.0.0.1:{closed_port()}")):
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_every_dependency_answers(client):
    response = client.get("/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ready", "checked": ["celery_broker", "database", "kafka", "ledger"]}


def test_ready_is_503_with_a_dead_kafka(client, settings):
    settings.READY_CHECK_TIMEOUT_SECONDS = 10
    dead = KafkaMessageBus(f"127.0.0.1:{closed_port()}")
    with mock.patch.object(health, "get_message_bus", return_value=dead):
        response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert set(body["down"]) == {"kafka"}


def test_ready_is_503_with_a_dead_celery_broker(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = client.get("/ready")
    assert response.status_code == 503
    assert set(response.json()["down"]) == {"celery_broker"}


def test_ready_is_503_when_the_folder_broker_cannot_be_written(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(tmp_path / "missing"), "data_folder_out": str(tmp_path), "control_folder": str(tmp_path)}
    response = client.get("/ready")
    assert response.status_code == 503
    assert "missing" in response.json()["down"]["celery_broker"]


def test_ready_is_503_with_a_dead_ledger(client):
    from settlement.ledger.base import LedgerUnavailable

    ledger = mock.Mock()
    ledger.ping.side_effect = LedgerUnavailable("connection refused")
    with mock.patch.object(health, "get_funding_ledger", return_value=ledger):
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["down"] == {"ledger": "LedgerUnavailable: connection refused"}


def test_a_hanging_dependency_is_down_within_the_timeout_and_not_checked_twice_at_once():
    release = __import__("threading").Event()
    checks = {"slow": lambda: release.wait(5), "fast": lambda: None}
    started = time.monotonic()
    assert health.run_checks(checks, timeout=0.2) == {"slow": "no answer within 0.2 s"}
    assert time.monotonic() - started < 2
    # The hanging check still holds its thread: the next probe does not start another.
    assert health.run_checks(checks, timeout=0.2) == {"slow": "the previous check has not answered yet"}
    release.set()
    time.sleep(0.1)
    assert health.run_checks(checks, timeout=1) == {}
