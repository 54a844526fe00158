# The API tests' fixtures: a user with an API key, the in-memory bus.
from tests.api.conftest import api_key, bus, user_id  # noqa: F401
