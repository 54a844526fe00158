"""Decimal strings at the edge, integers in minor units inside: parse_amount and format_amount."""

import itertools
from decimal import Decimal

import pytest

from transfers.amounts import InvalidAmount, format_amount, parse_amount

USDT_DECIMALS = 6
USDT_MAX = 1_000_000_000 * 10**USDT_DECIMALS


def parse(text, decimals=USDT_DECIMALS, maximum=USDT_MAX):
    return parse_amount(text, decimals, maximum)


@pytest.mark.parametrize(
    ("text", "decimals", "expected"),
    [
        ("12.5", 6, 12_500_000),
        ("12", 6, 12_000_000),
        ("0.000001", 6, 1),
        ("1.000001", 6, 1_000_001),
        ("12.500000", 6, 12_500_000),  # trailing zeros within the asset's decimals
        ("12.50000000000", 6, 12_500_000),  # trailing zeros beyond them are not extra precision
        ("00012.5", 6, 12_500_000),  # leading zeros
        ("0.1", 8, 10_000_000),
        ("0.00000001", 8, 1),
        ("21000000", 8, 21_000_000 * 10**8),
        ("7", 0, 7),
        ("7.000", 0, 7),
    ],
)
def test_parse_valid_amounts(text, decimals, expected):
    assert parse(text, decimals, 10**30) == expected


@pytest.mark.parametrize("text", ["0", "0.0", "0.000000", "000", "0.0000000000000"])
def test_zero_is_rejected(text):
    with pytest.raises(InvalidAmount, match="greater than zero"):
        parse(text)


@pytest.mark.parametrize("text", ["-1", "-0.5", "-0", "+1", "+12.5"])
def test_signs_are_rejected(text):
    with pytest.raises(InvalidAmount, match="plain decimal"):
        parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "1e3",
        "1E3",
        "1.5e-2",
        "1e+3",
        "\uff11\uff12",  # fullwidth digits
        "\u0661\u0662",  # Arabic-Indic digits
        "\u0967\u0968",  # Devanagari digits
        "12.\uff15",  # a fullwidth fraction digit
        "\u00b2",  # superscript two
        " 12",
        "12 ",
        " 12 ",
        "12\n",
        "\t12",
        "1 2",
        "\u00a012",
        "",
        ".",
        ".5",
        "5.",
        "1.2.3",
        "1,5",
        "1_000",
        "0x10",
        "NaN",
        "nan",
        "Infinity",
        "inf",
        "abc",
        "12.5 USDT",
        "$12",
    ],
)
def test_anything_but_a_plain_ascii_decimal_is_rejected(text):
    with pytest.raises(InvalidAmount, match="plain decimal"):
        parse(text)


@pytest.mark.parametrize(
    ("text", "decimals"),
    [("0.0000001", 6), ("12.1234567", 6), ("1.5", 0), ("0.000000001", 8), ("1.0000000010", 8)],
)
def test_more_decimal_places_than_the_asset_has_is_rejected(text, decimals):
    with pytest.raises(InvalidAmount, match=f"more than {decimals} decimal places"):
        parse(text, decimals, 10**30)


def test_the_maximum_itself_is_accepted_and_one_minor_unit_more_is_not():
    assert parse("1000000000", USDT_DECIMALS, USDT_MAX) == USDT_MAX
    assert parse("1000000000.000000", USDT_DECIMALS, USDT_MAX) == USDT_MAX
    with pytest.raises(InvalidAmount, match=r"above the maximum of 1000000000\b"):
        parse("1000000000.000001", USDT_DECIMALS, USDT_MAX)
    with pytest.raises(InvalidAmount, match="above the maximum"):
        parse("99999999999", USDT_DECIMALS, USDT_MAX)


def test_maximum_is_reported_in_asset_units():
    with pytest.raises(InvalidAmount, match=r"above the maximum of 10000\.5$"):
        parse("10001", 8, 1_000_050_000_000)


@pytest.mark.parametrize(
    "value",
    [12.5, 12, 0, 1, True, False, None, [], ["12.5"], {"amount": "12.5"}, Decimal("12.5"), b"12.5", bytearray(b"1")],
)
def test_non_strings_are_rejected(value):
    with pytest.raises(InvalidAmount, match="must be a decimal string"):
        parse(value)


@pytest.mark.parametrize("length", [65, 100, 10_000, 1_000_000])
def test_huge_strings_are_rejected_before_parsing(length):
    with pytest.raises(InvalidAmount, match="too long"):
        parse("1" * length, USDT_DECIMALS, 10**2_000_000)


def test_huge_strings_of_zeros_and_fraction_are_rejected_as_too_long():
    with pytest.raises(InvalidAmount, match="too long"):
        parse("0." + "0" * 63 + "1")
    with pytest.raises(InvalidAmount, match="too long"):
        parse("0" * 100 + "1")


def test_long_but_allowed_strings_still_respect_the_maximum():
    text = "9" * 64
    with pytest.raises(InvalidAmount, match="above the maximum"):
        parse(text)
    # The same length of leading zeros is a small, valid amount.
    assert parse("0" * 62 + "12") == 12_000_000


def test_invalid_amount_is_a_value_error():
    assert issubclass(InvalidAmount, ValueError)


@pytest.mark.parametrize(
    ("minor", "decimals", "expected"),
    [
        (12_500_000, 6, "12.5"),
        (12_000_000, 6, "12"),
        (1, 6, "0.000001"),
        (0, 6, "0"),
        (0, 0, "0"),
        (10, 0, "10"),
        (100, 2, "1"),
        (101, 2, "1.01"),
        (110, 2, "1.1"),
        (-5, 2, "-0.05"),
        (-12_500_000, 6, "-12.5"),
        (1_000_000_000 * 10**6, 6, "1000000000"),
        (2**63 - 1, 8, "92233720368.54775807"),
    ],
)
def test_format_amount(minor, decimals, expected):
    assert format_amount(minor, decimals) == expected


@pytest.mark.parametrize("decimals", [0, 1, 2, 3, 6, 8])
def test_format_then_parse_round_trips_exhaustively_for_small_amounts(decimals):
    maximum = 10**9
    limit = 3000 if decimals else 1000
    for minor in range(1, limit):
        text = format_amount(minor, decimals)
        assert parse(text, decimals, maximum) == minor, text
        # The shortest form: no trailing zeros after a point, no bare point.
        assert not text.endswith(".")
        if "." in text:
            assert not text.endswith("0"), text
        # Exact: the same value as decimal arithmetic gives.
        assert Decimal(text) == Decimal(minor).scaleb(-decimals)


def test_parse_then_format_gives_the_canonical_text_for_every_small_string():
    decimals = 2
    digits = "0123456789"
    seen = 0
    # Every text of up to two whole digits and up to two fraction digits.
    for whole_len, fraction_len in itertools.product(range(1, 3), range(0, 3)):
        for whole in itertools.product(digits, repeat=whole_len):
            for fraction in itertools.product(digits, repeat=fraction_len):
                text = "".join(whole) + ("." + "".join(fraction) if fraction_len else "")
                value = Decimal(text)
                if value == 0:
                    with pytest.raises(InvalidAmount):
                        parse(text, decimals, 10**9)
                    continue
                minor = parse(text, decimals, 10**9)
                assert minor == int(value * 100), text
                canonical = format_amount(minor, decimals)
                assert Decimal(canonical) == value
                assert parse(canonical, decimals, 10**9) == minor
                seen += 1
    assert seen > 10_000
