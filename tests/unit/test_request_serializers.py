"""The request serializers copy their declared fields shallowly (StrictSerializer.get_fields).

DRF deep-copies them so that an instance may change its fields without
touching the class; a shallow copy keeps that promise only if binding a copy
never reaches the declared field. These tests hold it to that.
"""

from __future__ import annotations

import pytest
from rest_framework import serializers

from transfers.api.serializers import CreateTransferSerializer, StrictSerializer, TransferListQuerySerializer


def body(**changes) -> dict:
    data = {
        "from_account": {"account_type": "funding", "asset": "USDT"},
        "to_account": {"account_type": "spot", "asset": "USDT"},
        "amount": "1.5",
    }
    data.update(changes)
    return data


def test_each_instance_binds_its_own_fields_down_to_the_nested_ones():
    first, second = CreateTransferSerializer(data=body()), CreateTransferSerializer(data=body())
    assert first.is_valid() and second.is_valid()
    for name in ("from_account", "to_account", "amount"):
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert first.fields[name].field_name == name
    nested = first.fields["from_account"]
    assert nested.fields["asset"] is not second.fields["from_account"].fields["asset"]
    assert nested.fields["asset"].parent is nested
    assert nested.fields["asset"].root is first


def test_the_declared_fields_stay_unbound():
    serializer = CreateTransferSerializer(data=body())
    assert serializer.is_valid()
    for name, declared in CreateTransferSerializer._declared_fields.items():
        assert declared.parent is None, name
        assert declared.field_name is None, name
        assert declared.source is None, name
        assert "fields" not in declared.__dict__, name  # a nested serializer built no bound fields


def test_errors_of_one_instance_do_not_reach_the_next():
    bad = CreateTransferSerializer(data=body(from_account={"account_type": "funding", "asset": "X" * 17}))
    assert not bad.is_valid()
    assert "from_account" in bad.errors
    good = CreateTransferSerializer(data=body())
    assert good.is_valid(), good.errors
    assert good.validated_data["from_account"] == {"account_type": "funding", "asset": "USDT"}


def test_validation_is_what_the_declarations_say():
    # Length, type, blank and unknown-field rules all still apply through the copies.
    cases = [
        (body(from_account={"account_type": "funding", "asset": "X" * 17}), "from_account"),
        (body(to_account={"account_type": 5, "asset": "USDT"}), "to_account"),
        (body(from_account={"account_type": "funding", "asset": ""}), "from_account"),
        (body(to_account={"account_type": "spot", "asset": "USDT", "user_id": 1}), "to_account"),
        (body(memo="hi"), "memo"),
    ]
    for data, field in cases:
        serializer = CreateTransferSerializer(data=data)
        with pytest.raises(serializers.ValidationError) as raised:
            serializer.is_valid(raise_exception=True)
        assert field in raised.value.detail, data


def test_query_serializer_defaults_and_bounds_still_apply():
    query = TransferListQuerySerializer(data={})
    assert query.is_valid()
    assert query.validated_data == {"limit": 50}
    assert not TransferListQuerySerializer(data={"limit": "101"}).is_valid()


class _WithChildren(StrictSerializer):
    codes = serializers.ListField(child=serializers.CharField(max_length=4))


def test_a_field_with_a_child_gets_a_child_of_its_own():
    # ListField.bind() binds its child: a child shared between instances would be rebound by each.
    first, second = _WithChildren(data={"codes": ["USDT"]}), _WithChildren(data={"codes": ["BTC"]})
    assert first.is_valid() and second.is_valid()
    assert first.fields["codes"].child is not second.fields["codes"].child
    assert first.fields["codes"].child.parent is first.fields["codes"]
    assert _WithChildren._declared_fields["codes"].child.parent is _WithChildren._declared_fields["codes"]
    assert not _WithChildren(data={"codes": ["TOOLONG"]}).is_valid()
