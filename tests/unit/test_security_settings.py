"""Production refuses insecure settings; the cache and rates come from the environment.

The settings module is executed afresh (runpy) with a chosen environment,
exactly as a process would load it, without touching the loaded settings.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from transfer_site import security

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "transfer_site" / "settings.py"
GOOD_SECRET_KEY = "k3Jx9-vQ2pL7mN4rT8wZ1yB6cF0hD5gA_sE2uI9oP3qR7tY4xW"
GOOD_PEPPER = "pP4eR8pE2rQ6wS1dF5gH9jK3lZ7xC0vB"
GOOD_METRICS_TOKEN = "mT7rQ2xW9zL4kV1pB8nC5jH0gF3dS6aY"
ENV_NAMES = [
    "DJANGO_ENV",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "API_SIGNING_PEPPER",
    "METRICS_TOKEN",
    "API_SIGNATURES_REQUIRED",
    "API_SIGNATURE_WINDOW_MS",
    "API_RATE_LIMIT_TRANSFER",
    "API_RATE_LIMIT_READ",
    "CACHE_URL",
    "REDIS_URL",
    "SCYLLA_HOSTS",
    "DATABASE_URL",
    "WEBHOOK_ALLOW_PRIVATE",
    "WEBHOOK_REQUIRE_HTTPS",
]


@pytest.fixture
def load_settings(monkeypatch, tmp_path):
    def load(**env: str) -> dict:
        for name in ENV_NAMES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("VAR_DIR", str(tmp_path))
        monkeypatch.setenv("LOG_DIR", str(tmp_path / "log"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(str(SETTINGS_FILE))

    return load


# --- the pure rules -------------------------------------------------------------


def test_development_defaults_are_unfit_for_production():
    problems = security.production_problems(
        debug=True, secret_key=security.DEV_SECRET_KEY, signing_pepper=security.DEV_API_SIGNING_PEPPER,
        metrics_token="",
    )
    assert len(problems) == 4
    assert any("METRICS_TOKEN" in p for p in problems)
    assert any("DJANGO_DEBUG" in p for p in problems)
    assert any("DJANGO_SECRET_KEY" in p for p in problems)
    assert any("API_SIGNING_PEPPER" in p for p in problems)


def test_random_secrets_without_debug_are_fit():
    assert security.production_problems(debug=False, secret_key=GOOD_SECRET_KEY, signing_pepper=GOOD_PEPPER,
                                        metrics_token=GOOD_METRICS_TOKEN) == []


@pytest.mark.parametrize(
    "secret_key",
    [security.DEV_SECRET_KEY, "", GOOD_SECRET_KEY[:49], "a" * 60, "django-insecure-" + GOOD_SECRET_KEY],
    ids=["dev_default", "empty", "short", "one_character", "django_insecure"],
)
def test_weak_secret_keys(secret_key):
    problems = security.production_problems(debug=False, secret_key=secret_key, signing_pepper=GOOD_PEPPER,
                                            metrics_token=GOOD_METRICS_TOKEN)
    assert problems == ["DJANGO_SECRET_KEY must be a random value of at least 50 characters"]


@pytest.mark.parametrize(
    "pepper",
    [security.DEV_API_SIGNING_PEPPER, "", GOOD_PEPPER[:31], "ab" * 20, GOOD_SECRET_KEY],
    ids=["dev_default", "empty", "short", "two_characters", "same_as_secret_key"],
)
def test_weak_peppers(pepper):
    problems = security.production_problems(debug=False, secret_key=GOOD_SECRET_KEY, signing_pepper=pepper,
                                            metrics_token=GOOD_METRICS_TOKEN)
    assert len(problems) == 1
    assert problems[0].startswith("API_SIGNING_PEPPER")


@pytest.mark.parametrize(
    "token", ["", GOOD_METRICS_TOKEN[:31], "ab" * 20, GOOD_SECRET_KEY, GOOD_PEPPER],
    ids=["missing", "short", "two_characters", "same_as_secret_key", "same_as_pepper"],
)
def test_weak_metrics_tokens(token):
    problems = security.production_problems(debug=False, secret_key=GOOD_SECRET_KEY, signing_pepper=GOOD_PEPPER,
                                            metrics_token=token)
    assert len(problems) == 1
    assert problems[0].startswith("METRICS_TOKEN")


@pytest.mark.parametrize("rate", ["10/second", "1/s", "600/minute", "600/min", "100/hour", "1000/day"])
def test_valid_rates(rate):
    assert security.is_valid_rate(rate)


@pytest.mark.parametrize(
    "rate", ["", "10", "0/second", "-1/second", "10/fortnight", "ten/second", "10/ second", "\uff11/s"]
)
def test_invalid_rates(rate):
    assert not security.is_valid_rate(rate)


# --- the settings module as a process loads it -----------------------------------


def test_development_loads_with_the_defaults(load_settings):
    loaded = load_settings()
    assert loaded["DJANGO_ENV"] == "development"
    assert loaded["SECRET_KEY"] == security.DEV_SECRET_KEY
    assert loaded["API_SIGNING_PEPPER"] == security.DEV_API_SIGNING_PEPPER
    assert loaded["API_SIGNATURES_REQUIRED"] is False
    assert loaded["API_SIGNATURE_WINDOW_MS"] == 5000
    assert loaded["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"] == {"transfer": "10/second", "read": "50/second"}
    assert loaded["REST_FRAMEWORK"]["DEFAULT_THROTTLE_CLASSES"] == ["transfers.api.throttling.ApiKeyRateThrottle"]
    assert loaded["REST_FRAMEWORK"]["DEFAULT_PERMISSION_CLASSES"] == ["transfers.api.permissions.ApiKeyPermits"]


def test_production_refuses_the_development_defaults(load_settings):
    with pytest.raises(ImproperlyConfigured) as refused:
        load_settings(DJANGO_ENV="production")
    message = str(refused.value)
    assert message.startswith("refusing to start in production")
    assert "DJANGO_SECRET_KEY" in message
    assert "API_SIGNING_PEPPER" in message
    assert "DJANGO_DEBUG" not in message  # off by default


def test_production_refuses_debug(load_settings):
    with pytest.raises(ImproperlyConfigured, match="DJANGO_DEBUG must be off"):
        load_settings(
            DJANGO_ENV="production", DJANGO_DEBUG="1", DJANGO_SECRET_KEY=GOOD_SECRET_KEY,
            API_SIGNING_PEPPER=GOOD_PEPPER, METRICS_TOKEN=GOOD_METRICS_TOKEN,
        )


def test_production_refuses_the_default_pepper_alone(load_settings):
    with pytest.raises(ImproperlyConfigured, match="API_SIGNING_PEPPER") as refused:
        load_settings(DJANGO_ENV="production", DJANGO_SECRET_KEY=GOOD_SECRET_KEY)
    assert "DJANGO_SECRET_KEY must" not in str(refused.value)


def test_production_loads_with_secrets_from_the_environment(load_settings):
    loaded = load_settings(
        DJANGO_ENV="production", DJANGO_SECRET_KEY=GOOD_SECRET_KEY, API_SIGNING_PEPPER=GOOD_PEPPER,
        METRICS_TOKEN=GOOD_METRICS_TOKEN,
    )
    assert loaded["DEBUG"] is False
    assert loaded["METRICS_TOKEN"] == GOOD_METRICS_TOKEN
    assert loaded["SECRET_KEY"] == GOOD_SECRET_KEY
    assert loaded["API_SIGNING_PEPPER"] == GOOD_PEPPER


@pytest.mark.parametrize("env", ["prod", "Production", "staging", ""])
def test_unknown_environment_is_refused(load_settings, env):
    with pytest.raises(ImproperlyConfigured, match="DJANGO_ENV must be one of"):
        load_settings(DJANGO_ENV=env)


def test_the_default_cache_is_the_database_table(load_settings):
    cache = load_settings()["CACHES"]["default"]
    # Django's database cache, removing expired rows as they expire (transfer_site/cache.py).
    assert cache["BACKEND"] == "transfer_site.cache.DatabaseCache"
    assert cache["LOCATION"] == "django_cache"


def test_on_sqlite_the_cache_table_has_a_file_of_its_own(load_settings, tmp_path):
    loaded = load_settings()
    assert loaded["DATABASES"]["default"]["NAME"] == str(tmp_path / "db.sqlite3")
    assert loaded["DATABASES"]["cache"]["NAME"] == str(tmp_path / "cache.sqlite3")
    assert loaded["DATABASES"]["cache"]["OPTIONS"] == loaded["DATABASES"]["default"]["OPTIONS"]  # WAL, IMMEDIATE
    assert loaded["DATABASE_ROUTERS"] == ["transfer_site.routers.CacheDatabaseRouter"]


@pytest.mark.parametrize("env", [{"DATABASE_URL": "postgres://u@127.0.0.1:5432/x"}, {"REDIS_URL": "redis://h:6379/0"}])
def test_one_database_on_postgresql_or_with_redis(load_settings, env):
    loaded = load_settings(**env)
    assert set(loaded["DATABASES"]) == {"default"}
    assert loaded.get("DATABASE_ROUTERS", []) == []


@pytest.mark.parametrize("name", ["REDIS_URL", "CACHE_URL"])
def test_redis_when_configured(load_settings, name):
    cache = load_settings(**{name: "redis://10.0.0.5:6379/2"})["CACHES"]["default"]
    assert cache == {"BACKEND": "transfer_site.cache.RedisCache", "LOCATION": "redis://10.0.0.5:6379/2"}


def test_cache_url_wins_over_redis_url(load_settings):
    loaded = load_settings(CACHE_URL="redis://cache:6379/0", REDIS_URL="redis://other:6379/0")
    assert loaded["CACHES"]["default"]["LOCATION"] == "redis://cache:6379/0"


def test_an_unsupported_cache_url_is_refused(load_settings):
    with pytest.raises(ImproperlyConfigured, match="CACHE_URL"):
        load_settings(CACHE_URL="memcached://127.0.0.1:11211")


def test_signing_and_rates_from_the_environment(load_settings):
    loaded = load_settings(
        API_SIGNATURES_REQUIRED="true",
        API_SIGNATURE_WINDOW_MS="2500",
        API_RATE_LIMIT_TRANSFER="3/minute",
        API_RATE_LIMIT_READ="100/hour",
    )
    assert loaded["API_SIGNATURES_REQUIRED"] is True
    assert loaded["API_SIGNATURE_WINDOW_MS"] == 2500
    assert loaded["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"] == {"transfer": "3/minute", "read": "100/hour"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_RATE_LIMIT_TRANSFER", "lots"),
        ("API_RATE_LIMIT_READ", "10/fortnight"),
        ("API_SIGNATURE_WINDOW_MS", "0"),
        ("API_SIGNATURE_WINDOW_MS", "60001"),
    ],
)
def test_bad_values_refuse_to_start(load_settings, name, value):
    with pytest.raises(ImproperlyConfigured, match=name):
        load_settings(**{name: value})


def test_the_development_broker_port_moves_the_default_bootstrap(load_settings, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DEV_BROKER_PORT", raising=False)
    assert load_settings()["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert load_settings(DEV_BROKER_PORT="19093")["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19093"
    assert load_settings(DEV_BROKER_PORT="19093", KAFKA_BOOTSTRAP_SERVERS="kafka:9092")[
        "KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"



def test_production_refuses_webhooks_to_internal_addresses_or_without_https():
    fit = dict(debug=False, secret_key=GOOD_SECRET_KEY, signing_pepper=GOOD_PEPPER, metrics_token=GOOD_METRICS_TOKEN)
    assert security.production_problems(**fit) == []
    problems = security.production_problems(**fit, webhook_allow_private=True, webhook_require_https=False)
    assert len(problems) == 2
    assert "WEBHOOK_ALLOW_PRIVATE" in problems[0] and "WEBHOOK_REQUIRE_HTTPS" in problems[1]


def test_production_settings_want_https_callbacks_and_refuse_private_ones(load_settings):
    production = dict(DJANGO_ENV="production", DJANGO_SECRET_KEY=GOOD_SECRET_KEY, API_SIGNING_PEPPER=GOOD_PEPPER,
                      METRICS_TOKEN=GOOD_METRICS_TOKEN)
    assert load_settings(**production)["WEBHOOK_REQUIRE_HTTPS"] is True
    assert load_settings()["WEBHOOK_REQUIRE_HTTPS"] is False
    with pytest.raises(ImproperlyConfigured, match="WEBHOOK_ALLOW_PRIVATE"):
        load_settings(**production, WEBHOOK_ALLOW_PRIVATE="1")
