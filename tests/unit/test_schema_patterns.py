"""The schema says exactly what the service's own parsers take: a client that trusts the schema is
never refused for an amount or a cursor it calls valid, and never told valid what is refused. An
amount is valid by its pattern and its maxLength together, as the schema publishes them."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transfers.amounts import InvalidAmount, parse_amount
from transfers.api.schema import amount_pattern, create_transfer_request_schema, cursor_pattern
from transfers.models import Asset
from transfers.store.base import InvalidCursor
from transfers.store.scylla import decode_cursor

# (decimals, largest single transfer in minor units): the seeded assets' shapes and edges around them.
ASSETS = [(6, 1_000_000 * 10**6), (8, 10_000 * 10**8), (18, 1_000 * 10**18), (0, 500), (2, 10**2), (3, 7 * 10**3)]

amount_texts = st.one_of(
    st.from_regex(r"\A[0-9]{0,8}(\.[0-9]{0,20})?\Z"),
    st.from_regex(r"\A0*[0-9]{1,8}\.?[0-9]{0,20}0*\Z"),
    st.text(alphabet="0123456789.e-+ ", max_size=12),
)


def accepted_amount(text: str, decimals: int, maximum_minor: int) -> bool:
    try:
        parse_amount(text, decimals, maximum_minor)
    except InvalidAmount:
        return False
    return True


@pytest.mark.parametrize(("decimals", "maximum_minor"), ASSETS)
@settings(max_examples=400, deadline=None)
@given(text=amount_texts)
@example(text="0")
@example(text="0.0")
@example(text="000.000001")
@example(text="1.")
@example(text=".5")
@example(text="0" * 30 + "1." + "0" * 33)  # 65 characters: the pattern alone would take it
def test_amount_schema_matches_exactly_what_the_service_takes(decimals, maximum_minor, text):
    expected = accepted_amount(text, decimals, maximum_minor)
    assert schema_valid_amount(text, decimals, maximum_minor) is expected, text


def schema_valid_amount(text: str, decimals: int, maximum_minor: int) -> bool:
    """What a JSON Schema validator says of the amount as the create's schema publishes it for such
    an asset: its `maxLength` and its `pattern` both hold."""
    asset = Asset(code="X", decimals=decimals, maximum_transfer_minor=maximum_minor, transfers_enabled=True)
    amount = create_transfer_request_schema([asset])["oneOf"][0]["properties"]["amount"]
    return len(text) <= amount["maxLength"] and bool(re.fullmatch(amount["pattern"], text))


@pytest.mark.parametrize(("decimals", "maximum_minor"), ASSETS)
def test_amount_pattern_edges(decimals, maximum_minor):
    pattern = amount_pattern(decimals, maximum_minor)
    whole = maximum_minor // 10**decimals
    smallest = "0." + "0" * (decimals - 1) + "1" if decimals else "1"
    for text in (str(whole), f"00{whole}", smallest, f"{whole - 1}" if whole > 1 else smallest):
        assert re.fullmatch(pattern, text), text
        assert accepted_amount(text, decimals, maximum_minor), text
    for text in (str(whole + 1), "0", "", "-1", f"{whole}.{'0' * decimals}1"):
        assert not re.fullmatch(pattern, text), text
        assert not accepted_amount(text, decimals, maximum_minor), text


def accepted_cursor(text: str) -> bool:
    try:
        decode_cursor(text)
    except InvalidCursor:
        return False
    return True


@settings(max_examples=1000, deadline=None)
@given(
    text=st.one_of(
        st.from_regex(r"\A[0-9]{1,20}\Z"),
        st.integers(min_value=2**63 - 10**6, max_value=2**63 + 10**6).map(str),
        st.text(max_size=20),
    )
)
@example(text=str(2**63 - 1))
@example(text=str(2**63))
@example(text="0" * 19)
@example(text="9" * 19)
def test_cursor_pattern_matches_exactly_what_the_stores_take(text):
    assert bool(re.fullmatch(cursor_pattern(), text)) is accepted_cursor(text), text
