"""Kombu's filesystem transport, with messages written atomically and consumers woken on work.

The stock transport creates the message file under its final name and then
writes it; a worker polling the folder in between moves away and parses an
empty file, and dies with a JSONDecodeError ("Unrecoverable error"). Here the
payload is written and fsynced under a temporary name the transport never
lists, then renamed into place, which is atomic on POSIX.

The stock transport also finds new messages by listing the folder every
`polling_interval`: a task waited half the interval on average at every hop,
and an idle worker listed the folder 20 times a second. Here a consumer with
nothing to do waits on an inotify watch of the folder (Linux), so it wakes
when a message for one of its queues is renamed into place (all queues share
the folder); `polling_interval` is then only the
longest it sleeps between two looks (a safety net, 1 s by default). An ack
wakes it too: a worker takes at most its prefetch count of messages, and the
next may already be waiting. Without inotify it polls as the stock transport
does.

Used only for the embedded default `CELERY_BROKER_URL=filesystem://`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import uuid
from collections.abc import Callable
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# <sys/inotify.h>
_IN_CREATE = 0x100
_IN_MOVED_TO = 0x80
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_IN_Q_OVERFLOW = 0x4000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name


class FolderWatch:
    """Wakes a waiter when a file is created or renamed into a folder (inotify), or when poked."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poke_read, self._poke_write = os.pipe()
        os.set_blocking(self._poke_read, False)
        os.set_blocking(self._poke_write, False)

    @classmethod
    def of(cls, folder: str) -> FolderWatch | None:
        name = ctypes.util.find_library("c")
        if not name:
            return None
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            init, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            return None
        fd = init(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return None
        if add_watch(fd, os.fsencode(folder), _IN_CREATE | _IN_MOVED_TO) < 0:
            os.close(fd)
            return None
        return cls(fd)

    def wait(self, seconds: float, wanted: Callable[[str], bool]) -> None:
        """Return when a file `wanted` (by name) arrived or a poke came since the last wait (at once if
        so), or after `seconds`.

        Every queue of the broker shares the folder: without `wanted` the
        webhooks worker woke, and listed the folder, for every settlement task.
        """
        deadline = monotonic() + seconds
        while True:
            readable, _, _ = select.select([self._fd, self._poke_read], [], [], max(0.0, deadline - monotonic()))
            if not readable:
                return
            poked = self._poke_read in readable
            if poked:
                self._drain(self._poke_read)
            arrived = self._arrived() if self._fd in readable else []
            if poked or any(name is None or wanted(name) for name in arrived):
                return

    def _arrived(self) -> list[str | None]:
        """Names of the files the pending inotify events are about; None for a lost-events overflow."""
        names: list[str | None] = []
        try:
            while data := os.read(self._fd, 65536):
                offset = 0
                while offset + _EVENT.size <= len(data):
                    _, mask, _, length = _EVENT.unpack_from(data, offset)
                    name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                    names.append(None if mask & _IN_Q_OVERFLOW else os.fsdecode(name))
                    offset += _EVENT.size + length
        except BlockingIOError:
            pass
        return names

    def poke(self) -> None:
        """Wake the waiter (from another thread): e.g. an ack freed room for the next message."""
        try:
            os.write(self._poke_write, b"x")
        except BlockingIOError:  # the pipe is full of pokes already: the waiter wakes anyway
            pass

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._fd, self._poke_read, self._poke_write):
            os.close(fd)


class Channel(filesystem.Channel):
    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)
        # The worker takes at most its prefetch count of messages; an ack (from the pool's result
        # thread) makes room for the next, which may already be in the folder: look again now.
        self.connection.wake_consumer()

    def basic_reject(self, delivery_tag: int, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)
        self.connection.wake_consumer()

    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        message_id = uuid.uuid4()
        final_name = os.path.join(
            self.data_folder_out, f"{round(monotonic() * 1000)}_{message_id}.{queue}.msg"
        )
        # Starts with a dot and ends in .tmp: _get never picks it up.
        temporary_name = os.path.join(self.data_folder_out, f".{message_id}.tmp")
        try:
            with open(temporary_name, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary_name, final_name)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final_name!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
    # The longest a consumer sleeps between two looks at the folder when inotify wakes it on work.
    default_wake_interval = 1.0

    def __init__(self, client, **kwargs: object) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        self._watch: FolderWatch | None = None
        folder = options.get("data_folder_in")
        if folder and os.path.isdir(folder):
            self._watch = FolderWatch.of(folder)
        if self._watch is not None:
            self.polling_interval = options.get("wake_interval", self.default_wake_interval)

    def drain_events(self, connection, timeout: float | None = None) -> None:
        if self._watch is None:
            return super().drain_events(connection, timeout=timeout)
        started = monotonic()
        while True:
            # The watch was set up before the first look: a message renamed into place between
            # a look that found nothing and the wait below is already an event, so wait returns.
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return None
            except filesystem.Empty:
                waited = monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise TimeoutError() from None
                left = self.polling_interval if timeout is None else min(self.polling_interval, timeout - waited)
                self._watch.wait(max(0.0, left), self._consumed_here)

    def _consumed_here(self, file_name: str) -> bool:
        """Whether a message file is for a queue this connection consumes (`<time>_<id>.<queue>.msg`)."""
        queue = file_name.removesuffix(".msg").partition(".")[2]
        return file_name.endswith(".msg") and any(queue in channel._active_queues for channel in self.channels)

    def wake_consumer(self) -> None:
        if self._watch is not None:
            self._watch.poke()

    def close_connection(self, connection) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        super().close_connection(connection)
