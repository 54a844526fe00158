"""Settings for the internal transfer service.

Everything comes from the environment and has a working default for one
machine (SQLite, SQL ledger, ORM store, local Kafka-protocol broker, a Celery
broker that needs no server). See docs/configuration.md.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from transfer_site import security
from transfer_site.routers import CACHE_DATABASE

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").lower() in ("1", "true", "yes", "on")


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", security.DEV_SECRET_KEY)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "transfers",
    "settlement",
    "ubscore",
    "operations",
    "webhooks",
]

MIDDLEWARE = [
    "transfer_site.middleware.RequestLogContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from STATIC_ROOT (`manage.py collectstatic`), before any other work.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "transfer_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "transfer_site.wsgi.application"

# --- Database -------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes share the file: WAL lets readers run beside the one
    # writer, IMMEDIATE takes the write lock up front (no upgrade deadlocks),
    # and the timeout makes writers queue instead of failing.
    # Connections are kept (per thread) like on PostgreSQL: opening one costs
    # a file open and the PRAGMAs below on every request and task. An idle
    # connection holds no read snapshot, so WAL checkpoints are not held back.
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DATABASE_CONN_MAX_AGE", "60"))
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# Filled by `manage.py collectstatic` (`make run` and the test stacks run it); WhiteNoise serves
# it: content-hashed names cached for a year, with gzip and Brotli copies.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Bodies larger than this are refused before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("MAX_REQUEST_BYTES", str(16 * 1024)))

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["transfers.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["transfers.api.permissions.ApiKeyPermits"],  # see "API security" below
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["transfers.api.parsers.BoundedJSONParser"],  # size, depth, strict JSON
    "EXCEPTION_HANDLER": "transfers.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# --- Ports: which adapter serves each external system ----------------------
LEDGER_BACKEND = os.environ.get("LEDGER_BACKEND", "sql")  # sql | tigerbeetle
TIGERBEETLE_ADDRESSES = os.environ.get("TIGERBEETLE_ADDRESSES", "")
TIGERBEETLE_CLUSTER_ID = int(os.environ.get("TIGERBEETLE_CLUSTER_ID", "0"))
TRANSFER_STORE = os.environ.get("TRANSFER_STORE", "orm")  # orm | scylla
SCYLLA_HOSTS = os.environ.get("SCYLLA_HOSTS", "")
SCYLLA_KEYSPACE = os.environ.get("SCYLLA_KEYSPACE", "internal_transfer")
SCYLLA_PORT = int(os.environ.get("SCYLLA_PORT", "9042"))
SCYLLA_USER = os.environ.get("SCYLLA_USER", "")
SCYLLA_PASSWORD = os.environ.get("SCYLLA_PASSWORD", "")
SCYLLA_LOCAL_DC = os.environ.get("SCYLLA_LOCAL_DC", "")
# "3": three replicas in every datacenter; "dc1:3,dc2:3": per datacenter.
SCYLLA_REPLICATION = os.environ.get("SCYLLA_REPLICATION", "1")
# QUORUM/SERIAL are right everywhere; LOCAL_QUORUM/LOCAL_SERIAL only if one datacenter ever writes.
SCYLLA_CONSISTENCY = os.environ.get("SCYLLA_CONSISTENCY", "QUORUM")
SCYLLA_SERIAL_CONSISTENCY = os.environ.get("SCYLLA_SERIAL_CONSISTENCY", "SERIAL")
if SCYLLA_HOSTS:
    # ScyllaDB beside the relational database (django-cassandra-engine), for
    # transfer records when TRANSFER_STORE=scylla. Lazy: nothing connects
    # until the transfer store's first query. Not in INSTALLED_APPS: the
    # engine would replace migrate/flush and connect at startup.
    DATABASES["scylla"] = {
        "ENGINE": "django_cassandra_engine",
        "NAME": SCYLLA_KEYSPACE,
        "HOST": SCYLLA_HOSTS,
        "USER": SCYLLA_USER,
        "PASSWORD": SCYLLA_PASSWORD,
        "OPTIONS": {"connection": {"lazy_connect": True, "retry_connect": True, "port": SCYLLA_PORT}},
    }
MESSAGE_BUS = os.environ.get("MESSAGE_BUS", "kafka")  # kafka | memory (unit tests only)

# --- Kafka ------------------------------------------------------------------
# Without it: the development broker `make run` starts, on DEV_BROKER_PORT (19092).
KAFKA_BOOTSTRAP_SERVERS = os.environ.get(
    "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{os.environ.get('DEV_BROKER_PORT', '19092')}")
# The topics' layout (transfer_site/kafka_topics.py, `manage.py kafka_topics`): every process refuses to
# start on a topic with another partition count. Production: replication 3, min.insync.replicas 2.
KAFKA_TOPIC_PARTITIONS = int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "4"))
KAFKA_REPLICATION_FACTOR = int(os.environ.get("KAFKA_REPLICATION_FACTOR", "1"))
KAFKA_MIN_INSYNC_REPLICAS = int(os.environ.get("KAFKA_MIN_INSYNC_REPLICAS", "0")) or None  # broker default
KAFKA_CONSUMER_MAX_RECORDS = int(os.environ.get("KAFKA_CONSUMER_MAX_RECORDS", "200"))
# Handled offsets are committed together, at most this often (transfer_site.bus.OffsetCommits): a
# crash hands over again at most this long of handled messages, which every handler absorbs.
KAFKA_CONSUMER_COMMIT_INTERVAL_MS = int(os.environ.get("KAFKA_CONSUMER_COMMIT_INTERVAL_MS", "1000"))
SETTLEMENT_CONSUMER_GROUP = os.environ.get("SETTLEMENT_CONSUMER_GROUP", "settlement-bridge")

# --- Celery -----------------------------------------------------------------
# The default broker is a folder: no server to run. Redis or RabbitMQ
# elsewhere (CELERY_BROKER_URL=redis://127.0.0.1:6379/0).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Kombu's filesystem transport with atomic writes (see the module).
    CELERY_BROKER_TRANSPORT = "transfer_site.celery_transport:Transport"
    _celery_queue_dir = VAR_DIR / "celery" / "queue"
    _celery_queue_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_queue_dir),
        "data_folder_out": str(_celery_queue_dir),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "polling_interval": float(os.environ.get("CELERY_POLLING_INTERVAL", "0.05")),
    }
    (VAR_DIR / "celery" / "control").mkdir(parents=True, exist_ok=True)
# One queue for settlement work; a separate name per deployment (or test run)
# keeps stacks that share a Redis apart.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "settlement")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# 1: a worker process holds only the task it runs, so a task waiting in the broker is one no process
# has taken -- the bridge's signal that settlement is behind (settlement/queue.py).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- The outbox relay (transfers/relay.py) ----------------------------------
# While transfers come, the relay looks for newly accepted ones this often; with a backlog it goes on
# at once. 40, not 20: each publish is a produce request and a batch at the consumers after it, and
# twice the transfers per batch cost less CPU than the 10 ms of waiting they add on average.
RELAY_POLL_MS = int(os.environ.get("RELAY_POLL_MS", "40"))
# ...doubling after each poll that finds nothing, up to this (the idle relay's cost, and the most
# the first transfer after a quiet spell waits to be published).
RELAY_IDLE_POLL_MS = int(os.environ.get("RELAY_IDLE_POLL_MS", "160"))
RELAY_BATCH_SIZE = int(os.environ.get("RELAY_BATCH_SIZE", "500"))

# --- Settlement -------------------------------------------------------------
# A transfer that has not changed status for this long is driven on again.
STUCK_TRANSFER_SECONDS = int(os.environ.get("STUCK_TRANSFER_SECONDS", "30"))
REDRIVE_INTERVAL_SECONDS = float(os.environ.get("REDRIVE_INTERVAL_SECONDS", "10"))
# Ledger vs UBSCore per asset; a difference still there after the settle time is logged as an error.
RECONCILE_INTERVAL_SECONDS = float(os.environ.get("RECONCILE_INTERVAL_SECONDS", "60"))
RECONCILE_SETTLE_SECONDS = float(os.environ.get("RECONCILE_SETTLE_SECONDS", "5"))
CELERY_BEAT_SCHEDULE = {
    "redrive-stuck-transfers": {
        "task": "settlement.redrive_stuck_transfers",
        "schedule": REDRIVE_INTERVAL_SECONDS,
        # While the worker is down beat keeps sending; runs that waited longer
        # than this are dropped rather than replayed back to back (a newer run
        # is queued behind them). Generous, so a busy worker still runs one.
        "options": {"expires": max(STUCK_TRANSFER_SECONDS, 3 * REDRIVE_INTERVAL_SECONDS)},
    },
    "reconcile-balances": {
        "task": "settlement.reconcile_balances",
        "schedule": RECONCILE_INTERVAL_SECONDS,
        "options": {"expires": RECONCILE_INTERVAL_SECONDS},
    },
}

# --- Identity -----------------------------------------------------------------
# Snowflake worker id of this process (0..1023); each running process needs
# its own. Gunicorn adds its worker slot (see transfer_site/gunicorn.conf.py).
SNOWFLAKE_WORKER_ID = int(os.environ.get("SNOWFLAKE_WORKER_ID", "0"))
# Worker id of one-off management commands (deposit references): reserved so
# they never collide with a running web process. Run them one at a time, or
# pass --reference.
COMMAND_SNOWFLAKE_WORKER_ID = int(os.environ.get("COMMAND_SNOWFLAKE_WORKER_ID", "1023"))

# --- Logging: JSON lines to stdout and var/log/<process>.log ----------------
PROCESS_NAME = os.environ.get("PROCESS_NAME", "manage")
LOG_DIR = Path(os.environ.get("LOG_DIR", VAR_DIR / "log"))
LOG_DIR.mkdir(parents=True, exist_ok=True)
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "transfer_site.logging.JsonFormatter"}},
    "filters": {"context": {"()": "transfer_site.logging.ContextFilter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["context"],
        },
        "file": {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": str(LOG_DIR / f"{PROCESS_NAME}.log"),
            "formatter": "json",
            "filters": ["context"],
        },
    },
    "root": {"handlers": ["stdout", "file"], "level": LOG_LEVEL},
    "loggers": {
        "kafka": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
    },
}

# --- API security -----------------------------------------------------------
# docs/api.md "Authentication and signing", "Rate limits"; docs/configuration.md "Production".
DJANGO_ENV = os.environ.get("DJANGO_ENV", "development")
if DJANGO_ENV not in security.ENVIRONMENTS:
    # A typo ("prod") must not quietly skip the production checks.
    raise ImproperlyConfigured(f"DJANGO_ENV must be one of {', '.join(security.ENVIRONMENTS)}, not {DJANGO_ENV!r}")
# Signing secrets are HMAC(pepper, key prefix + secret hash): re-derivable by
# the server, useless without the pepper. Changing it invalidates every
# signing secret (not the API keys).
API_SIGNING_PEPPER = os.environ.get("API_SIGNING_PEPPER", security.DEV_API_SIGNING_PEPPER)
# Off: unsigned requests pass, a signed one is still verified. On: every API request must be signed.
API_SIGNATURES_REQUIRED = env_bool("API_SIGNATURES_REQUIRED", False)
# X-API-Timestamp may differ from the server clock by at most this much, either way.
API_SIGNATURE_WINDOW_MS = int(os.environ.get("API_SIGNATURE_WINDOW_MS", "5000"))
if not 0 < API_SIGNATURE_WINDOW_MS <= 60_000:
    raise ImproperlyConfigured("API_SIGNATURE_WINDOW_MS must be between 1 and 60000")
# /metrics: with a token, only `Authorization: Bearer <METRICS_TOKEN>` is answered (Prometheus'
# scrape config: monitoring/prometheus/prometheus.yml). Required in production; open without one.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# --- Webhooks (webhooks/; docs/webhooks.md) --------------------------------------
# Callback URLs to loopback, private, link-local or reserved addresses are refused unless this is on
# (development and tests only: production settings refuse to start with it).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
WEBHOOK_REQUIRE_HTTPS = env_bool("WEBHOOK_REQUIRE_HTTPS", DJANGO_ENV == "production")
WEBHOOK_MAX_ENDPOINTS_PER_USER = int(os.environ.get("WEBHOOK_MAX_ENDPOINTS_PER_USER", "10"))
WEBHOOK_CONNECT_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_CONNECT_TIMEOUT_SECONDS", "3"))
WEBHOOK_READ_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_READ_TIMEOUT_SECONDS", "5"))
# Failed attempts are retried after base, 2 x base, 4 x base ... (at most max) seconds, +-20 %,
# for the retry window after the transfer finished; then the delivery is given up (admin: redeliver).
WEBHOOK_RETRY_BASE_SECONDS = float(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS", "10"))
WEBHOOK_RETRY_MAX_SECONDS = float(os.environ.get("WEBHOOK_RETRY_MAX_SECONDS", "3600"))
WEBHOOK_RETRY_WINDOW_SECONDS = int(os.environ.get("WEBHOOK_RETRY_WINDOW_SECONDS", str(24 * 3600)))
# Attempts in flight to one endpoint at once: what a slow receiver can hold of the webhooks worker.
WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT = int(os.environ.get("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "2"))
WEBHOOK_DISPATCH_INTERVAL_SECONDS = float(os.environ.get("WEBHOOK_DISPATCH_INTERVAL_SECONDS", "5"))
# An event whose transfer's status change was not confirmed this long after is finished from the store.
WEBHOOK_CONFIRM_AFTER_SECONDS = float(os.environ.get("WEBHOOK_CONFIRM_AFTER_SECONDS", "30"))
# The webhooks worker's own queue (Procfile `webhooks`): receivers never hold a settlement worker.
WEBHOOK_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-webhooks"
CELERY_TASK_ROUTES = {"webhooks.*": {"queue": WEBHOOK_QUEUE}}
CELERY_BEAT_SCHEDULE["dispatch-webhook-deliveries"] = {
    "task": "webhooks.dispatch_due",
    "schedule": WEBHOOK_DISPATCH_INTERVAL_SECONDS,
    "options": {"expires": max(10.0, 3 * WEBHOOK_DISPATCH_INTERVAL_SECONDS)},
}
CELERY_BEAT_SCHEDULE["sweep-webhook-events"] = {
    "task": "webhooks.sweep_unconfirmed",
    "schedule": max(5.0, WEBHOOK_CONFIRM_AFTER_SECONDS / 2),
    "options": {"expires": max(10.0, WEBHOOK_CONFIRM_AFTER_SECONDS)},
}

if DJANGO_ENV == "production":
    _problems = security.production_problems(
        debug=DEBUG, secret_key=SECRET_KEY, signing_pepper=API_SIGNING_PEPPER, metrics_token=METRICS_TOKEN,
        webhook_allow_private=WEBHOOK_ALLOW_PRIVATE, webhook_require_https=WEBHOOK_REQUIRE_HTTPS)
    if _problems:
        raise ImproperlyConfigured("refusing to start in production: " + "; ".join(_problems))

# Per API key, counted in the shared cache: creating transfers (any unsafe
# method) and reads have separate budgets.
API_RATE_LIMIT_TRANSFER = os.environ.get("API_RATE_LIMIT_TRANSFER", "10/second")
API_RATE_LIMIT_READ = os.environ.get("API_RATE_LIMIT_READ", "50/second")
_rates = {"transfer": API_RATE_LIMIT_TRANSFER, "read": API_RATE_LIMIT_READ}
for _scope, _rate in _rates.items():
    if not security.is_valid_rate(_rate):
        raise ImproperlyConfigured(f"API_RATE_LIMIT_{_scope.upper()} must look like 10/second or 600/minute")
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["transfers.api.throttling.ApiKeyRateThrottle"]
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = _rates

# Replay records and rate counters must be seen by every web process: Redis
# when configured, else a table in the database (`manage.py createcachetable`).
CACHE_URL = os.environ.get("CACHE_URL") or os.environ.get("REDIS_URL", "")
if CACHE_URL:
    if not CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured("CACHE_URL / REDIS_URL must be a redis://, rediss:// or unix:// URL")
    # Django's, with one client per connection pool and a one-round-trip incr (see the module).
    CACHES = {"default": {"BACKEND": "transfer_site.cache.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {
        "default": {
            # Django's, with expired rows removed as they expire (see the module).
            "BACKEND": "transfer_site.cache.DatabaseCache",
            "LOCATION": "django_cache",
            # Past this many rows Django culls live entries too, replay records
            # included: far above what one machine sees within a receive window.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" and DATABASES["default"]["NAME"] != ":memory:":
        # On SQLite the cache gets a file of its own beside the database, so its two writes per
        # API call never wait for the transfer writes' lock (transfer_site/routers.py).
        # `createcachetable --database cache` creates its table.
        DATABASES[CACHE_DATABASE] = {
            **DATABASES["default"],
            "NAME": str(Path(DATABASES["default"]["NAME"]).with_name("cache.sqlite3")),
        }
        DATABASE_ROUTERS = ["transfer_site.routers.CacheDatabaseRouter"]

# --- OpenAPI ------------------------------------------------------------------
# /api/schema/ (OpenAPI 3, drf-spectacular) and /api/docs/ (Swagger UI from
# drf-spectacular-sidecar: no CDN). Both are public: they describe the
# contract the README already publishes and read no user data; every call
# made from the docs page still needs its X-API-Key.
INSTALLED_APPS += ["drf_spectacular", "drf_spectacular_sidecar"]
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
SPECTACULAR_SETTINGS = {
    "TITLE": "Internal transfer API",
    "DESCRIPTION": (
        "Moves an asset between a user's funding wallet and spot account, exactly once or not at all. "
        "Amounts are decimal strings, never JSON numbers. Every 4xx answer is "
        '`{"error": {"code": "...", "message": "..."}}` and changes nothing.'
    ),
    "VERSION": "1",
    "SERVE_PUBLIC": True,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_INCLUDE_SCHEMA": False,
    "ENFORCE_NON_BLANK_FIELDS": True,  # blank strings are refused: say so (minLength 1)
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "transfers.api.schema.forbid_additional_properties",
    ],
}

# --- Operations ---------------------------------------------------------------
# docs/operations.md; docs/architecture.md "Timeline" and "Metrics".
# /ready: each dependency check (database, ledger, Kafka, Celery broker) must answer within this.
READY_CHECK_TIMEOUT_SECONDS = float(os.environ.get("READY_CHECK_TIMEOUT_SECONDS", "3"))
# /metrics reads durable state at scrape time: the duration histogram covers the
# transfers finished in this window; the stuck count stops at the scan limit;
# Kafka lag is read from the brokers within the timeout.
METRICS_DURATION_WINDOW_SECONDS = int(os.environ.get("METRICS_DURATION_WINDOW_SECONDS", "600"))
METRICS_STUCK_SCAN_LIMIT = int(os.environ.get("METRICS_STUCK_SCAN_LIMIT", "10000"))
METRICS_KAFKA_TIMEOUT_SECONDS = float(os.environ.get("METRICS_KAFKA_TIMEOUT_SECONDS", "2"))
# Filesystem broker: an event or remote-control queue whose oldest message is
# older than this has lost its reader (Flower stopped); beat removes it.
CELERY_DEAD_QUEUE_SECONDS = float(os.environ.get("CELERY_DEAD_QUEUE_SECONDS", "300"))
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BEAT_SCHEDULE["prune-dead-broker-queues"] = {
        "task": "operations.prune_dead_broker_queues",
        "schedule": 60.0,
    }

# --- Benchmark ----------------------------------------------------------------
# docs/benchmarks.md. On: /api/v1/bench/bare, a bare authenticated DRF endpoint
# the benchmark measures the transfer endpoint against. Never on in a deployment.
BENCH_ENDPOINTS = env_bool("BENCH_ENDPOINTS", False)
# Performance knobs the benchmark tuned (docs/architecture.md "Performance").
# Kafka producer linger: a publish waits at most this long for others to share its request.
# 0: messages sent while a request is in flight share the next one anyway, and a linger
# made kafka-python's sender thread wake again and again (docs/architecture.md "Performance").
KAFKA_PRODUCER_LINGER_MS = int(os.environ.get("KAFKA_PRODUCER_LINGER_MS", "0"))
# Kafka consumers: a fetch waits at most this long at the broker for new messages (kafka-python: 500)...
# (50, not 25: on the development broker a busy consumer's batches are about the messages of W/2, and
# half as many batches cost the bridge, UBSCore and the worker less CPU than they added in waiting.)
KAFKA_CONSUMER_FETCH_MAX_WAIT_MS = int(os.environ.get("KAFKA_CONSUMER_FETCH_MAX_WAIT_MS", "50"))
# ...while messages flow; once a poll found nothing, this long (no fetch 20 times a second for nothing;
# transfer_site.bus.FetchWait says why both).
KAFKA_CONSUMER_IDLE_FETCH_MAX_WAIT_MS = int(os.environ.get("KAFKA_CONSUMER_IDLE_FETCH_MAX_WAIT_MS", "500"))
# ...and the bridge's batch gathers what arrives for at most this long after its first message, and
# only while settlement tasks wait in the Celery broker (settlement/queue.py); UBSCore does not linger.
KAFKA_CONSUMER_LINGER_MS = int(os.environ.get("KAFKA_CONSUMER_LINGER_MS", "100"))
