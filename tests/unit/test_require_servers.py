"""REQUIRE_SERVERS=1 (CI's production-like pass) fails a run in which a test skipped for want of a server."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SKIPPING_TESTS = '''
import pytest

def test_wants_a_server():
    pytest.skip("ScyllaDB contract tests need a server")

def test_wants_tigerbeetle():
    pytest.skip("TigerBeetle contract tests need a server")

def test_runs():
    pass
'''


def run_pytest(body: str, require_servers: bool) -> subprocess.CompletedProcess:
    # Inside tests/, so that tests/conftest.py applies to it as it does to the suite.
    module = Path(__file__).with_name(f"test_tmp_require_servers_{uuid.uuid4().hex[:8]}.py")
    module.write_text(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["REQUIRE_SERVERS"] = "1" if require_servers else "0"
    try:
        return subprocess.run([sys.executable, "-m", "pytest", str(module), "-q", "-p", "no:cacheprovider"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        module.unlink()


def test_a_skip_for_want_of_a_server_fails_the_run():
    result = run_pytest(SKIPPING_TESTS, require_servers=True)
    assert result.returncode == 1, result.stdout
    assert "test_wants_a_server: Skipped: ScyllaDB contract tests need a server" in result.stdout
    assert "test_wants_tigerbeetle:" not in result.stdout.split("skipped for want of a server")[1].split("=====")[0]


def test_tigerbeetle_skips_are_allowed():
    result = run_pytest(SKIPPING_TESTS.replace("ScyllaDB", "TigerBeetle"), require_servers=True)
    assert result.returncode == 0, result.stdout


def test_without_it_skips_are_skips():
    assert run_pytest(SKIPPING_TESTS, require_servers=False).returncode == 0
