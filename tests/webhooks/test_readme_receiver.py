"""The receiver the README shows verifies real deliveries' signatures, and nothing else."""

from __future__ import annotations

import re
import time
from pathlib import Path

from webhooks import signing

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [code] = [block for block in blocks if "def verified" in block]
    namespace: dict = {}
    exec(code, namespace)  # the README's own example, run as a reader would
    return namespace["verified"]


def test_the_readmes_receiver_verifies_a_delivery():
    verified = readme_receiver()
    body = b'{"id":"evt_1","type":"transfer.succeeded"}'
    now = int(time.time())
    headers = {"Webhook-Timestamp": str(now), "Webhook-Signature": signing.signature("whsec_k", now, body)}
    assert verified("whsec_k", headers, body)
    assert not verified("whsec_other", headers, body)
    assert not verified("whsec_k", headers, body.replace(b"succeeded", b"failed"))
    old = now - 600
    replayed = {"Webhook-Timestamp": str(old), "Webhook-Signature": signing.signature("whsec_k", old, body)}
    assert not verified("whsec_k", replayed, body)
