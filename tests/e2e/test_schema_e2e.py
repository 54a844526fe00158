"""The running service does what its own /api/schema/ says, tried as a new client would.

schemathesis' CLI against the real stack (gunicorn, relay, bridge, Celery
worker, UBSCore), configured by tests/fuzz/schemathesis.toml:

1. every operation through the examples, coverage and fuzzing phases with every
   check, including `positive_data_acceptance` (a request the schema calls
   valid is not refused);
2. the stateful phase over the transfer operations, following the schema's
   links from a create to the transfer it made and to the history: it must
   read a real transfer by its id.

Then the money: every transfer the runs made ends `success` or `failed`, and
the user's balances still add up to what was deposited.

    SCHEMA_E2E_MAX_EXAMPLES=100 .venv/bin/pytest tests/e2e/test_schema_e2e.py   # a longer run
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.stack import wait_until

pytestmark = pytest.mark.e2e

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).parents[1] / "fuzz" / "schemathesis.toml"
MAX_EXAMPLES = int(os.environ.get("SCHEMA_E2E_MAX_EXAMPLES", "15"))
DEPOSIT = {"USDT": "1000", "BTC": "1", "ETH": "10"}  # some creates succeed, others fail for lack of funds
CREATE = ("POST", "/api/v1/user/internal_transfer")
GET_ONE = ("GET", "/api/v1/user/internal_transfer/{request_id}")


@pytest.fixture
def funded_key(stack) -> str:
    user_id = 77_000_000 + int.from_bytes(os.urandom(2), "big")
    api_key = stack.create_api_key(user_id)
    for asset, amount in DEPOSIT.items():
        stack.deposit(user_id, asset, amount, "funding")
    return api_key


def test_the_running_service_answers_as_its_schema_says(stack, funded_key, tmp_path):
    schemathesis(stack, funded_key, tmp_path / "stateless", "--phases", "examples,coverage,fuzzing")
    # Registering a webhook needs a URL whose host resolves to a public address, which generated data
    # almost never is: those scenarios would go nowhere (their lifecycle is proven in tests/webhooks).
    report = schemathesis(stack, funded_key, tmp_path / "stateful", "--phases", "stateful", "--exclude-tag", "webhooks")

    steps = stateful_steps(report)
    created = {body["request_id"] for (method, path, status, body) in steps if (method, path, status) == (*CREATE, 202)}
    read = {body["request_id"] for (method, path, status, body) in steps if (method, path, status) == (*GET_ONE, 200)}
    assert created & read, "the stateful run never read a transfer it created: the create's links were not followed"

    transfers = wait_until(lambda: all_final(stack, funded_key), 90, "every transfer of the runs to finish")
    assert {"success", "failed"} <= {transfer["status"] for transfer in transfers}, "expected both outcomes"
    status, body = stack.http("GET", "/api/v1/user/balances", funded_key)
    assert status == 200, body
    for row in body["balances"]:
        held = sum(Decimal(row[wallet][part]) for wallet in ("funding", "spot") for part in ("available", "frozen"))
        assert held == Decimal(DEPOSIT.get(row["asset"], "0")), row


def schemathesis(stack, api_key: str, report_dir: Path, *options: str) -> Path:
    """Run the CLI; fail with its own account of what it found. Answers its ndjson report."""
    result = subprocess.run(
        [
            str(SCHEMATHESIS), "--no-color", "--config-file", str(CONFIG), "run",
            f"{stack.base_url}/api/schema/?format=json",
            *options,  # every check: the default (`--checks` would override the config file)
            "--max-examples", str(MAX_EXAMPLES),
            "--header", f"X-API-Key: {api_key}",
            "--workers", "1",
            "--generation-database", "none",
            "--report", "ndjson", "--report-dir", str(report_dir),
        ],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"schemathesis found problems:\n{result.stdout[-30000:]}\n{result.stderr[-5000:]}"
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts and int(counts[1]) > 0 and counts[1] == counts[2], result.stdout[-5000:]
    (report,) = report_dir.glob("*.ndjson")
    return report


def stateful_steps(report: Path) -> list[tuple[str, str, int, dict]]:
    """(method, path template, status, JSON body) of each request the stateful phase sent."""
    steps = []
    for line in report.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event or event["phase"] != "stateful":
            continue
        recorder = event["recorder"]
        for case_id, interaction in recorder.get("interactions", {}).items():
            case, response = recorder["cases"][case_id]["value"], interaction.get("response")
            if response:
                steps.append((case["method"], case["path"], response["status_code"], json_body(response)))
    return steps


def json_body(response: dict) -> dict:
    content = response.get("content")
    if isinstance(content, dict):  # the report keeps bodies as base64
        content = base64.b64decode(content["$base64"]).decode()
    body = json.loads(content) if content else None
    return body if isinstance(body, dict) else {}


def all_final(stack, api_key: str) -> list[dict] | None:
    """Every transfer of the user, once none is pending."""
    transfers, cursor = [], None
    while True:
        path = "/api/v1/user/internal_transfers?limit=100" + (f"&cursor={cursor}" if cursor else "")
        status, page = stack.http("GET", path, api_key)
        assert status == 200, page
        transfers += page["items"]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    if any(transfer["status"] == "pending" for transfer in transfers):
        return None
    return transfers
