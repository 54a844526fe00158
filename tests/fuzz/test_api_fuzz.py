"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis).

Loads /api/schema/ from the Django WSGI app in-process, then for every
operation sends schema-valid and schema-breaking requests with a real API
key. Each answer must: not be a 5xx, match the schema (status, content type,
body), use the error format when it is a 4xx, and a 4xx must have stored and
published nothing.

    .venv/bin/pytest tests/fuzz -q                       # part of `make test`
    FUZZ_MAX_EXAMPLES=500 .venv/bin/pytest tests/fuzz -q  # a longer run
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck

from transfer_site.bus import InMemoryMessageBus
from transfer_site.wsgi import application
from transfers.models import Transfer

pytestmark = pytest.mark.django_db

# Per operation; the coverage phase (boundaries, each kind of wrong value)
# adds its own cases on top. ~30 s for the whole run on a CI machine.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "60"))


# Loaded at collection, before any database exists: the schema then names
# asset codes by their pattern only (it lists the known ones when it can read
# them). Not schemathesis.pytest.from_fixture: its lazy loader needs
# Node._nodeid, which pytest 9 no longer has.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# So here a schema-valid code may be unknown (a right 400): positive data is
# checked against the full schema of the running stack, tests/e2e/test_schema_e2e.py.
schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])


@pytest.fixture(autouse=True)
def same_connection_across_requests() -> Iterator[None]:
    # As django.test.Client does: keep the test's connection, and the
    # transaction that undoes everything, across requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def unthrottled(settings) -> None:
    # Hundreds of requests with one key would be mostly 429s, and hide the rest.
    if "DEFAULT_THROTTLE_RATES" in settings.REST_FRAMEWORK:
        rates = {scope: "1000000/second" for scope in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]}
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def error_format(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is JSON `{"error": {"code": "...", "message": "..."}}` and nothing else."""
    if not 400 <= response.status_code < 500:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"4xx with Content-Type {content_type!r}"
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"4xx body is not the error format: {body!r}"
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, f"4xx error is not code+message: {error!r}"
    assert isinstance(error["code"], str) and error["code"], f"4xx error code is not a string: {error!r}"
    assert isinstance(error["message"], str) and error["message"], f"4xx message is not a string: {error!r}"


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # no example database: failures are reported with their seed and reproduce that way
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case, api_key, bus: InMemoryMessageBus) -> None:
    transfers_before = Transfer.objects.count()
    published_before = len(bus.published)

    response = case.call_and_validate(headers={"X-API-Key": api_key}, additional_checks=[error_format])

    if 400 <= response.status_code < 500:
        assert Transfer.objects.count() == transfers_before, "a 4xx stored a transfer"
        assert len(bus.published) == published_before, "a 4xx published a message"
