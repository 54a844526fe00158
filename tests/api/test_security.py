"""Security of the API: who may see and move which money, signing, replay, permissions, rate limits, admin."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from tests.api.conftest import stored_transfer, stored_transfer_count
from transfers import signing
from transfers.api import authentication, throttling
from transfers.api.throttling import ApiKeyRateThrottle
from transfers.models import ApiKey, ApiKeyPermission
from transfers.services import create_api_key, hash_api_key_secret

pytestmark = pytest.mark.django_db

CREATE_URL = "/api/v1/user/internal_transfer"
LIST_URL = "/api/v1/user/internal_transfers"
BALANCES_URL = "/api/v1/user/balances"
USER_ROUTES = {
    "api/v1/user/internal_transfer",
    "api/v1/user/internal_transfer/<str:request_id>",
    "api/v1/user/internal_transfers",
    "api/v1/user/balances",
}


def transfer_body(amount: str = "12.5", **extra) -> dict:
    return {
        "from_account": {"account_type": "funding", "asset": "USDT"},
        "to_account": {"account_type": "spot", "asset": "USDT"},
        "amount": amount,
        **extra,
    }


def encode(data: dict) -> bytes:
    return json.dumps(data).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_error(response, status_code: int, code: str) -> str:
    assert response.status_code == status_code, response.content
    payload = response.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"code", "message"}
    assert payload["error"]["code"] == code, payload
    assert payload["error"]["message"]
    return payload["error"]["message"]


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def signature_headers(secret: str, method: str, path: str, body: bytes = b"", timestamp: str | None = None) -> dict:
    timestamp = str(now_ms()) if timestamp is None else timestamp
    return {
        "HTTP_X_API_TIMESTAMP": timestamp,
        "HTTP_X_API_SIGNATURE": signing.sign(secret, timestamp, method, path, body),
    }


def send(client: APIClient, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    if method == "POST":
        return client.post(path, body, content_type="application/json", **(headers or {}))
    return client.generic(method, path, **(headers or {}))


def signed(client: APIClient, secret: str, method: str, path: str, body: bytes = b"", timestamp: str | None = None):
    return send(client, method, path, body, signature_headers(secret, method, path, body, timestamp))


@pytest.fixture
def issued(db, user_id):
    return create_api_key(user_id)


@pytest.fixture
def client(issued) -> APIClient:
    return client_for(issued.key)


@pytest.fixture
def secret(issued) -> str:
    return issued.signing_secret


def user_api_endpoints() -> list[tuple[str, str, str]]:
    """(route, method, path) of every view under api/v1/, found in the URLconf itself."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    endpoints = []
    for route, callback in walk(get_resolver().url_patterns):
        if not route.startswith("api/v1/"):
            continue
        view_class = callback.view_class
        methods = [m.upper() for m in view_class.http_method_names if m != "options" and hasattr(view_class, m)]
        endpoints += [(route, method, "/" + re.sub(r"<[^>]+>", "1", route)) for method in methods]
    return endpoints


ENDPOINTS = user_api_endpoints()


def test_the_endpoint_walk_finds_every_user_endpoint():
    # Endpoints added later are found too, and so checked by the tests below.
    assert {route for route, _, _ in ENDPOINTS} >= USER_ROUTES
    assert ("api/v1/user/internal_transfer", "POST", CREATE_URL) in ENDPOINTS


# --- every endpoint needs a key; the user comes only from it -------------------


@pytest.mark.parametrize(("route", "method", "path"), ENDPOINTS)
def test_every_user_endpoint_requires_an_api_key(anonymous_client, nothing_stored_or_published, route, method, path):
    response = send(anonymous_client, method, path, encode(transfer_body()))
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"] == "X-API-Key"
    nothing_stored_or_published()


@pytest.mark.parametrize(
    "smuggled",
    [
        {"user_id": "OTHER"},
        {"userId": "OTHER"},
        {"owner": "OTHER"},
        {"from_account": {"account_type": "funding", "asset": "USDT", "user_id": "OTHER"}},
        {"to_account": {"account_type": "spot", "asset": "USDT", "user_id": "OTHER"}},
    ],
    ids=["user_id", "userId", "owner", "from_account.user_id", "to_account.user_id"],
)
def test_create_refuses_a_user_in_the_body(client, other_user_id, deposit, nothing_stored_or_published, smuggled):
    deposit("USDT", "100", to_user=other_user_id)  # money the caller must not move
    data = transfer_body()
    for field, value in smuggled.items():
        data[field] = json.loads(json.dumps(value).replace('"OTHER"', str(other_user_id)))
    message = assert_error(client.post(CREATE_URL, data, format="json"), 400, "invalid_request")
    assert "unknown field" in message
    nothing_stored_or_published()


def test_create_ignores_a_user_in_the_query_or_headers(client, user_id, other_user_id, relay):
    response = client.post(
        f"{CREATE_URL}?user_id={other_user_id}", transfer_body(), format="json", HTTP_X_USER_ID=str(other_user_id)
    )
    assert response.status_code == 202, response.content
    stored = stored_transfer(int(response.json()["request_id"]))
    assert stored.user_id == user_id
    assert [(out.key, out.message.user_id) for out in relay()] == [(user_id, user_id)]


def test_get_of_another_users_transfer_is_not_found(client, other_client):
    theirs = other_client.post(CREATE_URL, transfer_body(), format="json").json()["request_id"]
    for path in [f"{CREATE_URL}/{theirs}", f"{CREATE_URL}/{theirs}?user_id={theirs}"]:
        response = client.get(path)
        assert_error(response, 404, "not_found")
        # Exactly the answer for an id that does not exist: nothing tells the two apart.
        assert response.json() == client.get(f"{CREATE_URL}/1").json()
    assert other_client.get(f"{CREATE_URL}/{theirs}").status_code == 200


def test_list_shows_only_the_callers_transfers(client, other_client, other_user_id):
    mine = client.post(CREATE_URL, transfer_body("1"), format="json").json()["request_id"]
    other_client.post(CREATE_URL, transfer_body("2"), format="json")
    assert [item["request_id"] for item in client.get(LIST_URL).json()["items"]] == [mine]
    # Naming another user is an unknown query field, not a way in.
    assert_error(client.get(LIST_URL, {"user_id": other_user_id}), 400, "invalid_request")


def test_balances_show_only_the_callers(client, deposit, other_user_id):
    deposit("USDT", "7")
    deposit("USDT", "5000", to_user=other_user_id)
    for path in [BALANCES_URL, f"{BALANCES_URL}?user_id={other_user_id}"]:
        response = client.get(path)
        assert response.status_code == 200
        usdt = next(row for row in response.json()["balances"] if row["asset"] == "USDT")
        assert usdt["funding"] == {"available": "7", "frozen": "0"}


# --- API keys: hashed, revocable, permissions ------------------------------------


def test_nothing_secret_is_stored(issued, user_id):
    stored = ApiKey.objects.get(user_id=user_id)
    row = " ".join(str(value) for value in ApiKey.objects.filter(pk=stored.pk).values().get().values())
    key_secret = issued.key.split("_", 2)[2]
    assert key_secret not in row
    assert issued.signing_secret not in row
    assert stored.secret_hash == hash_api_key_secret(key_secret)


def test_keys_can_transfer_unless_read_only(user_id):
    assert create_api_key(user_id).permission == ApiKeyPermission.TRANSFER
    read_only = create_api_key(user_id, read_only=True)
    assert read_only.permission == ApiKeyPermission.READ
    assert ApiKey.objects.get(prefix=read_only.key.split("_")[1]).permission == "read"


def test_a_read_only_key_cannot_transfer(user_id, client):
    own = client.post(CREATE_URL, transfer_body(), format="json").json()["request_id"]
    read_only = create_api_key(user_id, read_only=True)
    reader = client_for(read_only.key)
    count = stored_transfer_count()

    message = assert_error(reader.post(CREATE_URL, transfer_body(), format="json"), 403, "forbidden")
    assert "read-only" in message
    # Signed or not.
    body = encode(transfer_body())
    assert_error(signed(reader, read_only.signing_secret, "POST", CREATE_URL, body), 403, "forbidden")
    assert stored_transfer_count() == count

    # It reads the same user's money.
    assert reader.get(f"{CREATE_URL}/{own}").status_code == 200
    assert [item["request_id"] for item in reader.get(LIST_URL).json()["items"]] == [own]
    assert reader.get(BALANCES_URL).status_code == 200


def test_a_read_only_key_stores_and_publishes_nothing(user_id, nothing_stored_or_published):
    reader = client_for(create_api_key(user_id, read_only=True).key)
    assert_error(reader.post(CREATE_URL, transfer_body(), format="json"), 403, "forbidden")
    nothing_stored_or_published()


def test_create_api_key_command_prints_the_key_last_and_the_signing_secret_on_stderr(user_id):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "--user-id", str(user_id), "--label", "bot", stdout=out, stderr=err)
    key = out.getvalue().splitlines()[-1]
    secret = err.getvalue().splitlines()[-1]
    assert out.getvalue().strip() == key  # stdout is the key alone
    assert secret not in out.getvalue()
    stored = ApiKey.objects.get(prefix=key.split("_")[1])
    assert (stored.user_id, stored.label, stored.permission) == (user_id, "bot", "transfer")

    client = client_for(key)
    body = encode(transfer_body())
    assert signed(client, secret, "POST", CREATE_URL, body).status_code == 202


def test_create_api_key_command_read_only(user_id):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "--user-id", str(user_id), "--read-only", stdout=out, stderr=err)
    key = out.getvalue().splitlines()[-1]
    assert ApiKey.objects.get(prefix=key.split("_")[1]).permission == "read"
    assert "read" in err.getvalue()
    client = client_for(key)
    assert_error(client.post(CREATE_URL, transfer_body(), format="json"), 403, "forbidden")
    assert client.get(BALANCES_URL).status_code == 200


def test_admin_shows_key_permissions_read_only(admin_client, user_id):
    read_only = create_api_key(user_id, read_only=True)
    create_api_key(user_id)
    listing = admin_client.get("/admin/transfers/apikey/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "read only" in html
    assert "read and transfer" in html
    assert "?permission__exact=read" in html  # the filter
    stored = ApiKey.objects.get(prefix=read_only.key.split("_")[1])
    change = admin_client.get(f"/admin/transfers/apikey/{stored.pk}/change/")
    assert change.status_code == 200
    assert 'name="permission"' not in change.content.decode()  # shown, not editable


# --- request signing ---------------------------------------------------------------


def test_signed_requests_are_accepted(client, secret, user_id, relay):
    body = encode(transfer_body(client_transfer_id="signed-1"))
    created = signed(client, secret, "POST", CREATE_URL, body)
    assert created.status_code == 202, created.content
    assert stored_transfer(int(created.json()["request_id"])).user_id == user_id
    assert len(relay()) == 1
    for path in [f"{LIST_URL}?asset=USDT&limit=20", BALANCES_URL, f"{CREATE_URL}/{created.json()['request_id']}"]:
        assert signed(client, secret, "GET", path).status_code == 200, path


def test_uppercase_hex_is_accepted(client, secret):
    headers = signature_headers(secret, "GET", BALANCES_URL)
    headers["HTTP_X_API_SIGNATURE"] = headers["HTTP_X_API_SIGNATURE"].upper()
    assert send(client, "GET", BALANCES_URL, headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("send_path", "send_body"),
    [
        (CREATE_URL, encode(transfer_body("1000"))),  # the amount changed on the way
        (CREATE_URL, encode(transfer_body()) + b" "),
        (CREATE_URL + "?x=1", encode(transfer_body())),
    ],
    ids=["body", "body_whitespace", "query"],
)
def test_a_tampered_request_is_refused(client, secret, nothing_stored_or_published, send_path, send_body):
    headers = signature_headers(secret, "POST", CREATE_URL, encode(transfer_body()))
    assert_error(send(client, "POST", send_path, send_body, headers), 401, "invalid_signature")
    nothing_stored_or_published()


def test_a_signature_for_another_path_or_method_is_refused(client, secret):
    headers = signature_headers(secret, "GET", f"{LIST_URL}?asset=USDT")
    assert_error(send(client, "GET", f"{LIST_URL}?asset=BTC", headers=headers), 401, "invalid_signature")
    headers = signature_headers(secret, "GET", LIST_URL)
    assert_error(send(client, "GET", BALANCES_URL, headers=headers), 401, "invalid_signature")
    headers = signature_headers(secret, "POST", BALANCES_URL)
    assert_error(send(client, "GET", BALANCES_URL, headers=headers), 401, "invalid_signature")


def test_the_timestamp_is_part_of_the_signature(client, secret):
    headers = signature_headers(secret, "GET", BALANCES_URL)
    headers["HTTP_X_API_TIMESTAMP"] = str(int(headers["HTTP_X_API_TIMESTAMP"]) - 1)
    assert_error(send(client, "GET", BALANCES_URL, headers=headers), 401, "invalid_signature")


def test_another_keys_signing_secret_is_refused(client, user_id, nothing_stored_or_published):
    other_secret = create_api_key(user_id).signing_secret  # even the same user's other key
    body = encode(transfer_body())
    assert_error(signed(client, other_secret, "POST", CREATE_URL, body), 401, "invalid_signature")
    nothing_stored_or_published()


def test_the_api_key_itself_is_not_the_signing_secret(client, issued):
    assert_error(signed(client, issued.key, "GET", BALANCES_URL), 401, "invalid_signature")


def test_the_signing_secret_depends_on_the_servers_pepper(client, secret, settings):
    assert signed(client, secret, "GET", BALANCES_URL).status_code == 200
    settings.API_SIGNING_PEPPER = "another-pepper-" + "x7Q" * 10
    assert_error(signed(client, secret, "GET", BALANCES_URL), 401, "invalid_signature")


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        ("abc", None),
        ("", None),
        ("-1", None),
        ("1.5e12", None),
        ("\uff11\uff17\uff10\uff10", None),
        ("9" * 16, None),
        (None, "zz"),
        (None, "0" * 63),
        (None, "g" * 64),
    ],
)
def test_malformed_signature_headers(client, secret, nothing_stored_or_published, timestamp, signature):
    body = encode(transfer_body())
    headers = signature_headers(secret, "POST", CREATE_URL, body)
    if timestamp is not None:
        headers["HTTP_X_API_TIMESTAMP"] = timestamp
    if signature is not None:
        headers["HTTP_X_API_SIGNATURE"] = signature
    assert_error(send(client, "POST", CREATE_URL, body, headers), 401, "invalid_signature")
    nothing_stored_or_published()


@pytest.mark.parametrize("present", ["HTTP_X_API_TIMESTAMP", "HTTP_X_API_SIGNATURE"])
def test_one_signature_header_without_the_other_is_refused(client, secret, present):
    headers = signature_headers(secret, "GET", BALANCES_URL)
    response = send(client, "GET", BALANCES_URL, headers={present: headers[present]})
    assert "go together" in assert_error(response, 401, "invalid_signature")


@pytest.mark.parametrize("offset_ms", [-6000, 6000, -3_600_000, 3_600_000])
def test_timestamps_outside_the_window_are_refused(client, secret, nothing_stored_or_published, offset_ms):
    body = encode(transfer_body())
    response = signed(client, secret, "POST", CREATE_URL, body, timestamp=str(now_ms() + offset_ms))
    message = assert_error(response, 401, "timestamp_outside_window")
    assert "5000 ms" in message
    nothing_stored_or_published()


@pytest.mark.parametrize("offset_ms", [-4000, 4000])
def test_timestamps_inside_the_window_are_accepted(client, secret, offset_ms):
    response = signed(client, secret, "GET", BALANCES_URL, timestamp=str(now_ms() + offset_ms))
    assert response.status_code == 200, response.content


def test_the_window_is_a_setting(client, secret, settings):
    old = str(now_ms() - 30_000)
    assert_error(signed(client, secret, "GET", BALANCES_URL, timestamp=old), 401, "timestamp_outside_window")
    settings.API_SIGNATURE_WINDOW_MS = 60_000
    assert signed(client, secret, "GET", BALANCES_URL, timestamp=str(now_ms() - 30_000)).status_code == 200
    settings.API_SIGNATURE_WINDOW_MS = 1_000
    assert_error(
        signed(client, secret, "GET", BALANCES_URL, timestamp=str(now_ms() - 3_000)), 401, "timestamp_outside_window"
    )


def test_a_replayed_signed_transfer_is_refused(client, secret, relay):
    body = encode(transfer_body())
    headers = signature_headers(secret, "POST", CREATE_URL, body)
    assert send(client, "POST", CREATE_URL, body, headers).status_code == 202
    assert_error(send(client, "POST", CREATE_URL, body, headers), 401, "signature_replayed")
    headers["HTTP_X_API_SIGNATURE"] = headers["HTTP_X_API_SIGNATURE"].upper()  # the same signature, spelled otherwise
    assert_error(send(client, "POST", CREATE_URL, body, headers), 401, "signature_replayed")
    assert stored_transfer_count() == 1
    assert len(relay()) == 1
    # Signed anew, the same transfer is a new request.
    assert signed(client, secret, "POST", CREATE_URL, body, timestamp=str(now_ms() + 1)).status_code == 202


def test_a_replayed_read_is_refused(client, secret):
    headers = signature_headers(secret, "GET", BALANCES_URL)
    assert send(client, "GET", BALANCES_URL, headers=headers).status_code == 200
    assert_error(send(client, "GET", BALANCES_URL, headers=headers), 401, "signature_replayed")


needs_the_database_cache = pytest.mark.skipif(
    settings.CACHES["default"]["BACKEND"] != "transfer_site.cache.DatabaseCache",
    reason="reads the database cache's table; the cache is Redis (CACHE_URL is set)",
)


@needs_the_database_cache
def test_the_replay_record_is_in_the_shared_database_cache(client, secret):
    headers = signature_headers(secret, "GET", BALANCES_URL)
    assert send(client, "GET", BALANCES_URL, headers=headers).status_code == 200
    signature = headers["HTTP_X_API_SIGNATURE"]
    with connection.cursor() as cursor:  # the table every web process reads
        cursor.execute("SELECT COUNT(*) FROM django_cache WHERE cache_key LIKE %s", [f"%{signature}%"])
        assert cursor.fetchone()[0] == 1


def test_a_wrong_signature_does_not_use_up_the_right_one(client, secret):
    headers = signature_headers(secret, "GET", BALANCES_URL)
    wrong = dict(headers, HTTP_X_API_SIGNATURE="0" * 64)
    assert_error(send(client, "GET", BALANCES_URL, headers=wrong), 401, "invalid_signature")
    assert send(client, "GET", BALANCES_URL, headers=headers).status_code == 200


def test_the_key_is_checked_before_the_signature(db, api_key, secret):
    wrong_key = client_for(api_key[:-1] + ("A" if api_key[-1] != "A" else "B"))
    assert_error(signed(wrong_key, secret, "GET", BALANCES_URL), 401, "unauthorized")


def test_a_revoked_key_with_a_valid_signature_is_refused(client, secret, issued):
    ApiKey.objects.filter(prefix=issued.key.split("_")[1]).update(revoked_at=timezone.now())
    assert_error(signed(client, secret, "GET", BALANCES_URL), 401, "unauthorized")


def test_an_oversized_signed_body_is_a_413_not_a_500(client, secret, settings, nothing_stored_or_published):
    # The signature check reads the body before the parser does.
    body = encode(transfer_body(client_transfer_id="x" * 64)) + b" " * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert_error(signed(client, secret, "POST", CREATE_URL, body), 413, "payload_too_large")
    nothing_stored_or_published()


@pytest.mark.parametrize(("route", "method", "path"), ENDPOINTS)
def test_when_signatures_are_required_unsigned_requests_are_refused(
    client, secret, settings, nothing_stored_or_published, route, method, path
):
    settings.API_SIGNATURES_REQUIRED = True
    body = encode(transfer_body()) if method == "POST" else b""
    message = assert_error(send(client, method, path, body), 401, "signature_required")
    assert "X-API-Signature" in message
    nothing_stored_or_published()
    response = signed(client, secret, method, path, body)
    assert response.status_code != 401, response.content


def test_when_signatures_are_required_a_signed_transfer_goes_through(client, secret, settings, relay):
    settings.API_SIGNATURES_REQUIRED = True
    response = signed(client, secret, "POST", CREATE_URL, encode(transfer_body()))
    assert response.status_code == 202
    assert len(relay()) == 1


def test_without_the_replay_cache_signed_requests_are_refused_not_let_through(
    client, secret, monkeypatch, nothing_stored_or_published
):
    monkeypatch.setattr(authentication, "cache", BrokenCache())
    assert_error(signed(client, secret, "POST", CREATE_URL, encode(transfer_body())), 503, "unavailable")
    nothing_stored_or_published()


class BrokenCache:
    def add(self, *args, **kwargs):
        raise DatabaseError("no such table: django_cache")

    incr = add


# --- rate limits ----------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch) -> dict:
    """The throttle's clock, 0.25 s into a second."""
    now = {"t": 1_800_000_000.25}
    monkeypatch.setattr(ApiKeyRateThrottle, "timer", staticmethod(lambda: now["t"]))
    return now


@pytest.fixture
def rates(settings, clock):
    def set_rates(transfer: str = "2/second", read: str = "3/second") -> None:
        throttle_rates = {"transfer": transfer, "read": read}
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": throttle_rates}

    set_rates()
    return set_rates


def assert_rate_limited(response, retry_after: str) -> None:
    assert_error(response, 429, "rate_limited")
    assert response["Retry-After"] == retry_after


def test_creating_transfers_is_rate_limited_per_key(rates, client, relay):
    assert [client.post(CREATE_URL, transfer_body(), format="json").status_code for _ in range(2)] == [202, 202]
    assert_rate_limited(client.post(CREATE_URL, transfer_body(), format="json"), "1")
    assert stored_transfer_count() == 2  # the refused one stored nothing
    assert len(relay()) == 2


def test_reads_are_rate_limited_per_key(rates, client):
    paths = [BALANCES_URL, LIST_URL, f"{CREATE_URL}/1"]
    assert [client.get(path).status_code for path in paths] == [200, 200, 404]
    for path in paths:
        assert_rate_limited(client.get(path), "1")


def test_reads_and_transfers_have_separate_budgets(rates, client):
    for _ in range(3):
        assert client.get(BALANCES_URL).status_code == 200
    assert_rate_limited(client.get(BALANCES_URL), "1")
    assert client.post(CREATE_URL, transfer_body(), format="json").status_code == 202
    assert client.post(CREATE_URL, transfer_body(), format="json").status_code == 202
    assert_rate_limited(client.post(CREATE_URL, transfer_body(), format="json"), "1")


def test_each_key_has_its_own_budget(rates, client, user_id, other_client):
    for _ in range(3):
        client.get(BALANCES_URL)
    assert_rate_limited(client.get(BALANCES_URL), "1")
    assert other_client.get(BALANCES_URL).status_code == 200
    assert client_for(create_api_key(user_id).key).get(BALANCES_URL).status_code == 200  # same user, other key


def test_the_budget_returns_in_the_next_window(rates, clock, client):
    for _ in range(3):
        client.get(BALANCES_URL)
    assert_rate_limited(client.get(BALANCES_URL), "1")
    clock["t"] += 0.75  # the next second
    assert client.get(BALANCES_URL).status_code == 200


def test_retry_after_counts_to_the_end_of_the_window(rates, clock, client):
    rates(transfer="1/minute")
    clock["t"] = 1_800_000_000 // 60 * 60 + 15.5  # 15.5 s into a minute
    assert client.post(CREATE_URL, transfer_body(), format="json").status_code == 202
    assert_rate_limited(client.post(CREATE_URL, transfer_body(), format="json"), "45")


@needs_the_database_cache
def test_the_counters_are_in_the_shared_database_cache(rates, client, issued):
    client.get(BALANCES_URL)
    prefix = issued.key.split("_")[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM django_cache WHERE cache_key LIKE %s", [f"%throttle:read:{prefix}:%"])
        assert cursor.fetchone()[0] == 1


def test_a_counted_call_writes_the_cache_once_after_the_first_of_its_window(rates, client, monkeypatch):
    rates(read="100/second")
    writes = []
    real_cache = throttling.cache

    class CountingCache:
        def add(self, *args, **kwargs):
            writes.append("add")
            return real_cache.add(*args, **kwargs)

        def incr(self, *args, **kwargs):
            writes.append("incr")
            return real_cache.incr(*args, **kwargs)

    monkeypatch.setattr(throttling, "cache", CountingCache())
    assert [client.get(BALANCES_URL).status_code for _ in range(3)] == [200, 200, 200]
    # The first call finds no counter and creates it; the next ones only increment it.
    assert writes == ["incr", "add", "incr", "incr"]


def test_without_the_rate_limit_cache_requests_are_refused_not_let_through(
    client, monkeypatch, nothing_stored_or_published
):
    monkeypatch.setattr(throttling, "cache", BrokenCache())
    assert_error(client.post(CREATE_URL, transfer_body(), format="json"), 503, "unavailable")
    assert_error(client.get(BALANCES_URL), 503, "unavailable")
    nothing_stored_or_published()


# --- admin ------------------------------------------------------------------------------


def test_admin_needs_a_staff_login(client):
    for anonymous in [APIClient(), client]:  # an API key is no way into the admin
        response = anonymous.get("/admin/")
        assert response.status_code == 302
        assert response["Location"] == "/admin/login/?next=/admin/"
        assert anonymous.get("/admin/transfers/apikey/").status_code == 302


def test_admin_refuses_a_logged_in_user_who_is_not_staff(django_user_model):
    user = django_user_model.objects.create_user(username="someone", password="not-staff-pw-123")
    browser = APIClient()
    browser.force_login(user)
    response = browser.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_admin_opens_for_staff(admin_client):
    assert admin_client.get("/admin/").status_code == 200
