"""The crash-point test hook: nothing unless CRASH_AT names the point."""

import subprocess
import sys
from pathlib import Path

import pytest

from transfer_site import faults

ROOT = Path(__file__).resolve().parents[2]


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch):
    codes = []

    def fake_exit(code):
        codes.append(code)
        raise Exited

    monkeypatch.setattr(faults.os, "_exit", fake_exit)
    return codes


def test_without_crash_at_a_crash_point_does_nothing(monkeypatch, exits):
    monkeypatch.setattr(faults, "CRASH_AT", None)

    for name in faults.ALL:
        faults.crash_point(name)

    assert exits == []


def test_only_the_named_point_crashes(monkeypatch, exits):
    monkeypatch.setattr(faults, "CRASH_AT", faults.SETTLE_AFTER_LEDGER)

    faults.crash_point(faults.SETTLE_BEFORE_LEDGER)
    with pytest.raises(Exited):
        faults.crash_point(faults.SETTLE_AFTER_LEDGER)

    assert exits == [faults.CRASH_EXIT_CODE]


def test_the_crash_is_logged_before_the_process_ends(monkeypatch, exits, caplog):
    monkeypatch.setattr(faults, "CRASH_AT", faults.WEB_AFTER_STORE)

    with pytest.raises(Exited):
        faults.crash_point(faults.WEB_AFTER_STORE)

    (record,) = [r for r in caplog.records if r.name == faults.__name__]
    assert record.levelname == "CRITICAL"
    assert record.crash_point == faults.WEB_AFTER_STORE


def test_a_process_started_with_crash_at_ends_there_with_the_exit_code():
    program = (
        "from transfer_site import faults\n"
        "faults.crash_point('elsewhere')\n"
        "print('before', flush=True)\n"
        "try:\n"
        "    faults.crash_point('here')\n"
        "finally:\n"
        "    print('finally ran', flush=True)\n"  # os._exit: no cleanup runs
    )
    result = subprocess.run(
        [sys.executable, "-c", program], env={"CRASH_AT": "here", "PATH": ""}, capture_output=True, text=True,
        timeout=60, cwd=ROOT,
    )

    assert result.returncode == faults.CRASH_EXIT_CODE
    assert result.stdout == "before\n"
