"""The filesystem Celery transport never hands a consumer a half-written message."""

import os
import threading
import time
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from transfer_site.celery_transport import Channel, Transport

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


def test_a_waiting_consumer_wakes_when_a_message_arrives_not_at_its_next_poll(tmp_path):
    # A 5-second interval: a consumer that slept between looks would get the message seconds late.
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "wake_interval": 5.0,
               "polling_interval": 5.0, "control_folder": str(tmp_path / "control")}
    with Connection(transport=Transport, transport_options=options) as consumer_connection:
        queue = consumer_connection.SimpleQueue("settlement")
        sent_at: list[float] = []

        def send_later():
            time.sleep(0.3)
            with Connection(transport=Transport, transport_options=options) as producer_connection:
                sent_at.append(time.monotonic())
                producer_connection.SimpleQueue("settlement").put({"n": 1})

        sender = threading.Thread(target=send_later)
        sender.start()
        message = queue.get(block=True, timeout=10)
        received_at = time.monotonic()
        sender.join()
        message.ack()

    assert message.payload == {"n": 1}
    assert received_at - sent_at[0] < 0.5


def test_an_idle_consumer_sleeps_instead_of_polling(tmp_path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "wake_interval": 5.0,
               "control_folder": str(tmp_path / "control")}
    with Connection(transport=Transport, transport_options=options) as connection:
        queue = connection.SimpleQueue("settlement")
        cpu_before, started = time.process_time(), time.monotonic()
        with pytest.raises(Empty):
            queue.get(block=True, timeout=1.0)
        waited, cpu = time.monotonic() - started, time.process_time() - cpu_before

    assert 0.9 <= waited < 2.0  # the caller's timeout is kept
    assert cpu < 0.05  # a folder listing every 50 ms would cost more, and one per ms far more


def test_a_waiting_consumer_is_not_woken_by_messages_for_other_queues(tmp_path, monkeypatch):
    # The webhooks worker and the settlement worker share the folder: each looks only for its own queue.
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "wake_interval": 5.0,
               "control_folder": str(tmp_path / "control")}
    looks = []
    look = Channel._get
    monkeypatch.setattr(Channel, "_get", lambda self, queue: looks.append(queue) or look(self, queue))

    def send_to_another_queue():
        with Connection(transport=Transport, transport_options=options) as producer_connection:
            other = producer_connection.SimpleQueue("settlement-webhooks")
            for n in range(50):
                other.put({"n": n})
                time.sleep(0.01)

    with Connection(transport=Transport, transport_options=options) as connection:
        queue = connection.SimpleQueue("settlement")
        sender = threading.Thread(target=send_to_another_queue)
        sender.start()
        with pytest.raises(Empty):
            queue.get(block=True, timeout=1.0)
        sender.join()

    assert looks.count("settlement") <= 3  # the first look, and none per message of the other queue
