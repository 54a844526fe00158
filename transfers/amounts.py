"""Decimal strings at the edge, integers in minor units inside. Never floats."""

import re

# ASCII digits only: no sign, exponent, whitespace or unicode digits.
_AMOUNT_PATTERN = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?", re.ASCII)
MAX_AMOUNT_CHARS = 64  # the API schema publishes it as the amount's maxLength


class InvalidAmount(ValueError):
    """The amount text is not a positive decimal this asset can hold."""


def parse_amount(text: object, decimals: int, maximum_minor: int) -> int:
    """Return `text` in minor units, or raise InvalidAmount saying why."""
    if not isinstance(text, str):
        raise InvalidAmount("amount must be a decimal string, for example \"12.5\"")
    if len(text) > MAX_AMOUNT_CHARS:
        raise InvalidAmount("amount is too long")
    match = _AMOUNT_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidAmount("amount must be a plain decimal number, for example \"12.5\"")
    fraction = (match["fraction"] or "").rstrip("0")
    if len(fraction) > decimals:
        raise InvalidAmount(f"amount has more than {decimals} decimal places")
    minor = int(match["whole"]) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    if minor <= 0:
        raise InvalidAmount("amount must be greater than zero")
    if minor > maximum_minor:
        raise InvalidAmount(f"amount is above the maximum of {format_amount(maximum_minor, decimals)}")
    return minor


def format_amount(minor: int, decimals: int) -> str:
    """Minor units to the shortest exact decimal string: 12500000, 6 -> "12.5"."""
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**decimals)
    text = f"{whole}.{fraction:0{decimals}d}".rstrip("0").rstrip(".") if decimals else str(whole)
    return sign + text
