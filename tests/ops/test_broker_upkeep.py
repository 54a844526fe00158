"""Filesystem Celery broker: queues left behind by a stopped Flower are removed."""

from __future__ import annotations

import json
import os
import time

from operations.broker_upkeep import prune_dead_queues


def write_exchange(control, name, queues):
    (control / f"{name}.exchange").write_text(json.dumps([[key, pattern, queue] for key, pattern, queue in queues]))


def message(data, queue, age_seconds, now):
    path = data / f"{int(now * 1000)}_{os.urandom(4).hex()}.{queue}.msg"
    path.write_text("{}")
    os.utime(path, (now - age_seconds, now - age_seconds))
    return path


def test_a_dead_event_queue_is_unbound_and_emptied_and_live_ones_stay(tmp_path):
    data, control = tmp_path / "queue", tmp_path / "control"
    data.mkdir()
    control.mkdir()
    now = time.time()
    write_exchange(control, "celeryev", [("#", "^.*?$", "celeryev.dead"), ("#", "^.*?$", "celeryev.live")])
    write_exchange(control, "celery.pidbox", [("", "", "gone@host.celery.pidbox")])
    write_exchange(control, "settlement", [("settlement", "", "settlement")])
    dead = [message(data, "celeryev.dead", 900, now), message(data, "celeryev.dead", 10, now)]
    live = message(data, "celeryev.live", 1, now)
    mailbox = message(data, "gone@host.celery.pidbox", 3600, now)
    task = message(data, "settlement", 7200, now)  # a task queue is never touched, however old

    removed = prune_dead_queues(data, control, max_age_seconds=300, now=now)

    assert removed == {"celeryev.dead": 2, "gone@host.celery.pidbox": 1}
    assert not any(path.exists() for path in [*dead, mailbox])
    assert live.exists() and task.exists()
    assert json.loads((control / "celeryev.exchange").read_text()) == [["#", "^.*?$", "celeryev.live"]]
    assert json.loads((control / "celery.pidbox.exchange").read_text()) == []
    assert json.loads((control / "settlement.exchange").read_text()) == [["settlement", "", "settlement"]]
    assert prune_dead_queues(data, control, max_age_seconds=300, now=now) == {}


def test_nothing_to_do_on_an_empty_broker(tmp_path):
    assert prune_dead_queues(tmp_path / "none", tmp_path / "none", 300) == {}


def test_the_task_runs_only_on_the_folder_broker(settings, tmp_path):
    from operations.tasks import prune_dead_broker_queues

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    assert prune_dead_broker_queues() == 0
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path), "control_folder": str(tmp_path)}
    assert prune_dead_broker_queues() == 0


def test_beat_runs_it_with_the_folder_broker():
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        entry = settings.CELERY_BEAT_SCHEDULE["prune-dead-broker-queues"]
        assert entry["task"] == "operations.prune_dead_broker_queues"
