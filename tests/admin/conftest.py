"""Staff users in the roles the migrations create, and transfers with timelines."""

from __future__ import annotations

import importlib
import random

import pytest
from django.apps import apps
from django.contrib.auth.models import Group

from transfer_site.bus import InMemoryMessageBus, get_message_bus
from transfers import services
from transfers.relay import TransferRelay
from transfers.store import get_transfer_store

_groups_migration = importlib.import_module("transfers.migrations.0005_staff_groups")
_reconcile_grant_migration = importlib.import_module("settlement.migrations.0003_support_views_reconcile_runs")
_webhooks_grant_migration = importlib.import_module("webhooks.migrations.0002_attempt_counts_and_support")


# Permissions later migrations grant to "support".
GRANTED_LATER = ["view_reconcilerun", "redeliver_webhookdelivery"]


@pytest.fixture
def groups(db) -> None:
    """The "support" and "admin" groups (made by a migration; again here if a flush removed them)."""
    support = Group.objects.filter(name="support").first()
    if (set(Group.objects.filter(name__in=["support", "admin"]).values_list("name", flat=True)) != {"support", "admin"}
            or support.permissions.filter(codename__in=GRANTED_LATER).count() != len(GRANTED_LATER)):
        from django.db import connection

        class SchemaEditor:
            pass

        editor = SchemaEditor()
        editor.connection = connection
        _groups_migration.create_groups(apps, editor)
        _reconcile_grant_migration.grant(apps, editor)
        _webhooks_grant_migration.seed(apps, editor)


def _staff(django_user_model, name: str, *group_names: str):
    user = django_user_model.objects.create_user(name, password="pw-" + name, is_staff=True)
    user.groups.set(Group.objects.filter(name__in=group_names))
    return user


@pytest.fixture
def support_user(groups, django_user_model):
    return _staff(django_user_model, "sam-support", "support")


@pytest.fixture
def admin_user_role(groups, django_user_model):
    return _staff(django_user_model, "ada-admin", "admin")


@pytest.fixture
def support_client(client, support_user):
    client.force_login(support_user)
    return client


@pytest.fixture
def admin_client_role(client, admin_user_role):
    client.force_login(admin_user_role)
    return client


@pytest.fixture
def bus() -> InMemoryMessageBus:
    message_bus = get_message_bus()
    message_bus.published.clear()
    yield message_bus
    message_bus.published.clear()


@pytest.fixture
def user_id() -> int:
    return random.randrange(1, 2**40)


@pytest.fixture
def make_transfer(db, bus, user_id):
    """make_transfer("funding", "spot", "USDT", "12.5", client_transfer_id=...): accepted and relayed (`pending`)."""

    def make(source: str = "funding", destination: str = "spot", asset: str = "USDT", amount: str = "12.5",
             client_transfer_id: str | None = None, user: int | None = None):
        request = services.TransferRequest(source, asset, destination, asset, amount, client_transfer_id)
        request_id = services.create_transfer(user or user_id, request).record.request_id
        TransferRelay(bus=bus).relay_batch()
        return get_transfer_store().get(request_id)

    return make

