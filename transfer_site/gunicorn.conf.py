"""Gunicorn settings for the web process.

Each worker gets its own snowflake worker id: SNOWFLAKE_WORKER_ID (the
node's base) plus the worker's slot, so request ids never collide between
workers of one server. Slots are reused when a worker is replaced.
"""

import gc
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Several copies on one host and port, the kernel spreading connections (the tests' copies; a
# deployment puts a load balancer in front instead).
reuse_port = os.environ.get("WEB_REUSE_PORT") == "1"
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = 10
accesslog = None  # the app logs JSON lines itself
max_requests = 0


def pre_fork(server, worker):
    used = {getattr(w, "snowflake_slot", None) for w in server.WORKERS.values()}
    worker.snowflake_slot = next(slot for slot in range(1024) if slot not in used)


def post_fork(server, worker):
    base = int(os.environ.get("SNOWFLAKE_WORKER_ID", "0"))
    os.environ["SNOWFLAKE_WORKER_ID"] = str(base + worker.snowflake_slot)


# The cyclic garbage collector, once the worker has loaded the application: what
# was loaded (Django, DRF, the app: most of the heap, and never garbage) is frozen
# out of the collector's scans, and the young generation is collected every
# GC_GEN0_THRESHOLD allocations instead of 700. A request leaves few cycles; the
# benchmark measured ~10% less web CPU per transfer request (docs/architecture.md
# "Performance").
GC_GEN0_THRESHOLD = 10_000


def post_worker_init(worker):
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


# Gunicorn's own lines as JSON too, like every other process.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "transfer_site.logging.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}
