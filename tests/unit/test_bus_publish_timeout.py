"""A publish gives up within PUBLISH_TIMEOUT_SECONDS, well inside gunicorn's worker timeout.

With the broker gone, a publisher must get BusUnavailable and try again later
(the relay's next batch, the next re-drive) -- and an admin's re-drive, which
publishes in a web request, must answer -- rather than block in
KafkaProducer.send() for its default 60 s and be killed by gunicorn.
"""

import importlib.util
from pathlib import Path

import kafka
import pytest
from kafka.errors import KafkaTimeoutError

from transfer_site import bus
from transfer_site.messages import BalanceOperation

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "transfer_site" / "gunicorn.conf.py"


class ProducerWithoutMetadata:
    created_with: dict = {}

    def __init__(self, **config):
        ProducerWithoutMetadata.created_with = config

    def send(self, *args, **kwargs):
        raise KafkaTimeoutError(f"Failed to update metadata after {self.created_with['max_block_ms'] / 1000} secs.")


def gunicorn_timeout() -> int:
    spec = importlib.util.spec_from_file_location("gunicorn_conf", GUNICORN_CONF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.timeout


def test_a_publish_without_a_broker_fails_within_the_publish_timeout(monkeypatch):
    monkeypatch.setattr(kafka, "KafkaProducer", ProducerWithoutMetadata)
    message = BalanceOperation(ref_id=1, operation="TransferOut", user_id=1, asset_id=1, amount=1)

    with pytest.raises(bus.BusUnavailable):
        bus.KafkaMessageBus("127.0.0.1:1").publish("balance.operations", 1, message)

    config = ProducerWithoutMetadata.created_with
    assert config["max_block_ms"] <= bus.PUBLISH_TIMEOUT_SECONDS * 1000
    assert config["request_timeout_ms"] <= bus.PUBLISH_TIMEOUT_SECONDS * 1000
    assert bus.PUBLISH_TIMEOUT_SECONDS * 2 < gunicorn_timeout()
