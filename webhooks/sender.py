"""One POST to a checked address (addresses.Target): no redirects, short timeouts, a short excerpt kept."""

from __future__ import annotations

import dataclasses
import time

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

from webhooks.addresses import Target

EXCERPT_BYTES = 256
USER_AGENT = "internal-transfer-webhooks/1"


@dataclasses.dataclass(frozen=True)
class Response:
    status_code: int | None  # None: no HTTP answer (timeout, refused connection, TLS failure)
    latency_ms: int
    error: str = ""
    timed_out: bool = False
    excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(target: Target, body: bytes, headers: dict[str, str], *, connect_timeout: float,
         read_timeout: float) -> Response:
    """POST `body` to the target's checked address, naming its host in Host and TLS (SNI, certificate)."""
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address, target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False, maxsize=1)
    started = time.monotonic()
    try:
        response = pool.urlopen(
            "POST", target.path, body=body,
            headers={**headers, "Host": host_header, "User-Agent": USER_AGENT, "Content-Type": "application/json"},
            redirect=False, retries=False, preload_content=False, assert_same_host=False,
        )
        try:
            excerpt = response.read(EXCERPT_BYTES, decode_content=False)
        finally:
            response.release_conn()
        return Response(
            status_code=response.status,
            latency_ms=_elapsed_ms(started),
            excerpt=excerpt.decode("utf-8", "replace")[:EXCERPT_BYTES],
        )
    except NewConnectionError as error:  # (a subclass of the connect timeout in urllib3 2)
        return Response(None, _elapsed_ms(started), error=_describe(error))
    except TimeoutError as error:
        return Response(None, _elapsed_ms(started), error=_describe(error), timed_out=True)
    except (HTTPError, OSError) as error:
        return Response(None, _elapsed_ms(started), error=_describe(error))
    finally:
        pool.close()


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:255]
