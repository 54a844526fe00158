"""Versioned JSON messages on the Kafka topics.

Every message is a JSON object with `type` and `version`. Integers that can
exceed 2**53 (ids, amounts in minor units) travel as decimal strings so no
consumer in any language reads them through a float.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from typing import Any, ClassVar, Self


class MalformedMessage(ValueError):
    """The bytes are not a message this service understands."""


class BalanceOperationType(enum.StrEnum):
    TRANSFER_IN = "TransferIn"  # credit spot available (funding -> spot)
    TRANSFER_OUT = "TransferOut"  # debit spot available (spot -> funding)
    DEPOSIT = "Deposit"  # credit spot available from outside


class BalanceOperationStatus(enum.StrEnum):
    APPLIED = "applied"
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"type": self.TYPE, "version": self.VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            body[field.name] = str(value) if field.type == "int" else value
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Self:
        version = body.get("version")
        if type(version) is not int or version != cls.VERSION:  # True == 1 in Python
            raise MalformedMessage(f"{cls.TYPE} version {version!r} is not supported")
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in body:
                raise MalformedMessage(f"{cls.TYPE} lacks {field.name!r}")
            values[field.name] = _coerce(cls.TYPE, field.name, field.type, body[field.name])
        return cls(**values)


_UINT64_TEXT = re.compile(r"[0-9]{1,20}", re.ASCII)


def _coerce(type_name: str, name: str, annotation: object, value: object) -> object:
    if annotation == "int":
        # Ids and amounts are unsigned 64-bit integers.
        if not isinstance(value, str) or _UINT64_TEXT.fullmatch(value) is None or int(value) >= 1 << 64:
            raise MalformedMessage(f"{type_name}.{name} must be an unsigned 64-bit integer string")
        return int(value)
    if annotation == "str":
        if not isinstance(value, str):
            raise MalformedMessage(f"{type_name}.{name} must be a string")
        return value
    if annotation == "str | None":
        if value is not None and not isinstance(value, str):
            raise MalformedMessage(f"{type_name}.{name} must be a string or null")
        return value
    raise TypeError(f"unsupported field type {annotation!r}")


@dataclasses.dataclass(frozen=True)
class TransferRequested(Message):
    """internal_transfer.requests: the API accepted a funding -> spot transfer."""

    TYPE: ClassVar[str] = "TransferRequested"
    request_id: int
    user_id: int
    asset_id: int
    amount: int
    direction: str


@dataclasses.dataclass(frozen=True)
class BalanceOperation(Message):
    """balance.operations: what UBSCore is asked to apply, once per ref_id."""

    TYPE: ClassVar[str] = "BalanceOperation"
    ref_id: int
    operation: str  # BalanceOperationType
    user_id: int
    asset_id: int
    amount: int


@dataclasses.dataclass(frozen=True)
class BalanceEvent(Message):
    """balance.events: UBSCore's answer to the operation with the same ref_id."""

    TYPE: ClassVar[str] = "BalanceEvent"
    ref_id: int
    operation: str  # BalanceOperationType
    user_id: int
    asset_id: int
    amount: int
    status: str  # BalanceOperationStatus
    reason: str | None


_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (TransferRequested, BalanceOperation, BalanceEvent)
}


def decode(raw: bytes) -> Message:
    """Parse one message, or raise MalformedMessage saying what is wrong."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise MalformedMessage(f"not JSON: {error!r}"[:200]) from None
    if not isinstance(body, dict):
        raise MalformedMessage("not a JSON object")
    type_name = body.get("type")
    message_type = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if message_type is None:
        raise MalformedMessage(f"unknown message type {body.get('type')!r}")
    message = message_type.from_dict(body)
    if isinstance(message, BalanceOperation | BalanceEvent):
        if message.operation not in BalanceOperationType.__members__.values():
            raise MalformedMessage(f"unknown operation {message.operation!r}")
        if message.amount <= 0:
            raise MalformedMessage("amount must be positive")
    if isinstance(message, BalanceEvent) and message.status not in BalanceOperationStatus.__members__.values():
        raise MalformedMessage(f"unknown status {message.status!r}")
    return message
