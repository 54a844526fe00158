"""Settings for the test run: the service's own, with test-only adapters.

Unit, contract and API tests publish to an in-memory bus and log to a
temporary folder; end-to-end tests start real processes with the real
settings (tests/e2e/stack.py).
"""

import tempfile
from pathlib import Path

from transfer_site.settings import *  # noqa: F403
from transfer_site.settings import LOGGING

MESSAGE_BUS = "memory"
LOG_DIR = Path(tempfile.mkdtemp(prefix="transfer-tests-log-"))
LOGGING["handlers"]["file"]["filename"] = str(LOG_DIR / "tests.log")

# One database in unit, contract and API tests: pytest-django sets up the test
# database of `default` only. The end-to-end tests run the real settings, with
# the SQLite cache in its own file (transfer_site/routers.py).
DATABASES.pop("cache", None)  # noqa: F405
DATABASE_ROUTERS = []

# In-process tests render pages without `collectstatic`: plain static URLs, no manifest.
# The end-to-end stacks (and the browser test, on them) serve the collected, hashed files.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_AUTOREFRESH = True  # finds files in the apps (no STATIC_ROOT needed), as runserver would
