"""JSON-lines logging with the transfer's request id on every line.

The request id and user id live in context variables: the API middleware,
the Kafka consumers and the Celery tasks set them while they work on one
transfer, so every line they log carries them. One transfer can be followed
across every process with `grep <request_id> var/log/*.log`.
"""

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "_json_line"}


@contextlib.contextmanager
def log_context(request_id: object = None, user_id: object = None) -> Iterator[None]:
    """Tag every log line inside the block with this transfer and user."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(str(request_id))))
    if user_id is not None:
        tokens.append((user_id_var, user_id_var.set(str(user_id))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "user_id", None) is None:
            record.user_id = user_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Every process logs to stdout and to its file: format each record once, not once per handler.
        # (Reused only if the context a filter may have added since is the same.)
        context = (getattr(record, "request_id", None), getattr(record, "user_id", None))
        cached = record.__dict__.get("_json_line")
        if cached is not None and cached[0] == context:
            return cached[1]
        text = self._format(record)
        record._json_line = (context, text)
        return text

    def _format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": os.environ.get("PROCESS_NAME", "manage"),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "user_id": getattr(record, "user_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
