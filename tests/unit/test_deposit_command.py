"""manage.py deposit: says clearly when the broker did not take a spot deposit (nothing credited)."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from transfer_site.bus import BusUnavailable

pytestmark = pytest.mark.django_db


def test_a_broker_that_does_not_answer_is_a_clear_error_with_the_reference_to_repeat(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:19093"
    with mock.patch("settlement.management.commands.deposit.deposit_to_spot",
                    side_effect=BusUnavailable("Kafka did not take the message")), \
            pytest.raises(CommandError) as refused:
        call_command("deposit", "--user-id", "7", "--asset", "USDT", "--amount", "5", "--to", "spot",
                     "--reference", "4242")
    message = str(refused.value)
    assert "127.0.0.1:19093" in message and "nothing was credited" in message
    assert "--reference 4242" in message
