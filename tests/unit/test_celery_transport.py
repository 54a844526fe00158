"""The filesystem Celery transport never hands a consumer a half-written message."""

import os
import threading
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from transfer_site.celery_transport import Transport

MESSAGES = 150
PAYLOAD = "x" * 300_000  # large, so a non-atomic write leaves a long window


def race_writer_against_reader(transport, folder) -> tuple[list[str], list[BaseException]]:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    received: list[str] = []
    errors: list[BaseException] = []
    done_writing = threading.Event()

    def write():
        with Connection(transport=transport, transport_options=options) as connection:
            for number in range(MESSAGES):
                connection.default_channel._put("settlement", {"n": number, "body": PAYLOAD})
        done_writing.set()

    def read():
        with Connection(transport=transport, transport_options=options) as connection:
            channel = connection.default_channel
            while len(received) + len(errors) < MESSAGES:
                try:
                    received.append(channel._get("settlement")["n"])
                except Empty:
                    if done_writing.is_set() and not any(n.endswith(".msg") for n in os.listdir(folder)):
                        return
                except Exception as error:  # what killed the worker: a half-written file
                    errors.append(error)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return received, errors


def test_every_message_arrives_whole(tmp_path):
    received, errors = race_writer_against_reader(Transport, tmp_path)

    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


@pytest.mark.skipif(os.environ.get("SHOW_KOMBU_RACE") != "1", reason="demonstrates the stock transport's race")
def test_stock_transport_hands_out_half_written_files(tmp_path):
    _, errors = race_writer_against_reader(filesystem.Transport, tmp_path)
    assert errors
