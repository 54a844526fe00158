"""Kombu's filesystem transport, with messages written atomically.

The stock transport creates the message file under its final name and then
writes it; a worker polling the folder in between moves away and parses an
empty file, and dies with a JSONDecodeError ("Unrecoverable error"). Here the
payload is written and fsynced under a temporary name the transport never
lists, then renamed into place, which is atomic on POSIX.

Used only for the embedded default `CELERY_BROKER_URL=filesystem://`.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
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
