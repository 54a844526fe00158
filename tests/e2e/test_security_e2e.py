"""Signing, replay and permissions through the real web server (gunicorn, several workers, one shared cache)."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from transfers.signing import sign

pytestmark = pytest.mark.e2e

CREATE_PATH = "/api/v1/user/internal_transfer"
BALANCES_PATH = "/api/v1/user/balances"
_user_ids = itertools.count(int(time.time()) % 100_000 * 1000 + 500)


def issue_key(stack, *flags: str) -> tuple[str, str]:
    """(API key, signing secret) as `manage.py create_api_key` prints them: stdout last line, stderr last line."""
    result = stack.manage("create_api_key", "--user-id", str(next(_user_ids)), *flags)
    return result.stdout.strip().splitlines()[-1], result.stderr.strip().splitlines()[-1]


def signature_headers(secret: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    timestamp = str(time.time_ns() // 1_000_000)
    return {"X-API-Timestamp": timestamp, "X-API-Signature": sign(secret, timestamp, method, path, body)}


def transfer_body(amount: str = "1") -> bytes:
    return json.dumps(
        {
            "from_account": {"account_type": "funding", "asset": "USDT"},
            "to_account": {"account_type": "spot", "asset": "USDT"},
            "amount": amount,
        }
    ).encode()


def test_a_signed_transfer_is_accepted_once_whichever_worker_answers(stack):
    key, secret = issue_key(stack)
    body = transfer_body()
    headers = signature_headers(secret, "POST", CREATE_PATH, body)
    status, created = stack.http("POST", CREATE_PATH, key, headers=headers, raw_body=body)
    assert status == 202, created
    # Replays land on any of the web workers: all of them see the same record.
    for _ in range(4):
        status, error = stack.http("POST", CREATE_PATH, key, headers=headers, raw_body=body)
        assert (status, error["error"]["code"]) == (401, "signature_replayed")
    status, listing = stack.http("GET", "/api/v1/user/internal_transfers", key)
    assert status == 200
    assert [item["request_id"] for item in listing["items"]] == [created["request_id"]]


def test_a_wrong_signature_is_refused(stack):
    key, secret = issue_key(stack)
    headers = signature_headers(secret, "GET", BALANCES_PATH)
    assert stack.http("GET", BALANCES_PATH, key, headers=headers)[0] == 200
    headers = signature_headers(secret + "0", "GET", BALANCES_PATH)
    status, error = stack.http("GET", BALANCES_PATH, key, headers=headers)
    assert (status, error["error"]["code"]) == (401, "invalid_signature")


def test_a_read_only_key_reads_but_cannot_transfer(stack):
    key, _ = issue_key(stack, "--read-only")
    status, error = stack.http("POST", CREATE_PATH, key, raw_body=transfer_body())
    assert (status, error["error"]["code"]) == (403, "forbidden")
    assert stack.http("GET", BALANCES_PATH, key)[0] == 200
