"""The per-process dead-letter counter of transfer_site.bus."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from transfer_site import bus
from transfer_site.messages import TransferRequested


def record(value: bytes, offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic="internal_transfer.requests", partition=0, offset=offset, key=b"7", value=value)


def test_dead_letters_are_counted_once_published(monkeypatch, caplog):
    published = []
    monkeypatch.setattr(bus, "_publish_dead_letters", published.extend)
    before = bus.dead_letter_count
    good = TransferRequested(request_id=1, user_id=7, asset_id=1, amount=5, direction="funding_to_spot").to_json()
    polled = {"tp": [record(b"garbage", 10), record(good, 11), record(b'{"type": "Nope", "version": 1}', 12)]}

    with caplog.at_level(logging.ERROR, logger="transfer_site.bus"):
        deliveries = bus._decode_or_dead_letter(polled)

    assert [d.offset for d in deliveries] == [11]
    assert [(r.offset, reason.split(":")[0]) for r, reason in published] == [
        (10, "not JSON"),
        (12, "unknown message type 'Nope'"),
    ]
    assert bus.dead_letter_count == before + 2
    assert [(r.offset, r.dead_letters_total) for r in caplog.records] == [(10, before + 1), (12, before + 2)]
    assert all(r.reason for r in caplog.records)


def test_a_failed_publish_counts_nothing(monkeypatch):
    def broker_down(records):
        raise RuntimeError("broker down")

    monkeypatch.setattr(bus, "_publish_dead_letters", broker_down)
    before = bus.dead_letter_count
    with pytest.raises(RuntimeError):
        bus._decode_or_dead_letter({"tp": [record(b"garbage", 1)]})
    assert bus.dead_letter_count == before
