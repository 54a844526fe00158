"""Where callback URLs may point (webhooks.addresses) and the delivery signature (webhooks.signing)."""

from __future__ import annotations

import pytest

from webhooks import addresses, signing
from webhooks.addresses import UrlRefused, check


def resolver_of(*answers: str):
    return lambda host, port: list(answers)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT: not global
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("0.0.0.0", "not a host"),
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4 loopback written as IPv6
        ("224.0.0.1", "not a host"),
    ],
)
def test_internal_addresses_are_refused(address, why):
    with pytest.raises(UrlRefused, match=why):
        check("https://hooks.example.com/x", require_https=True, allow_private=False, resolver=resolver_of(address))


def test_one_internal_address_among_public_ones_is_refused():
    with pytest.raises(UrlRefused, match=r"10\.0\.0\.1"):
        check("https://hooks.example.com/x", require_https=True, allow_private=False,
              resolver=resolver_of("93.184.216.34", "10.0.0.1"))


def test_allow_private_allows_loopback_but_never_metadata():
    target = check("http://localhost:8080/in?a=1", require_https=False, allow_private=True,
                   resolver=resolver_of("127.0.0.1"))
    assert (target.scheme, target.host, target.port, target.address, target.path) == (
        "http", "localhost", 8080, "127.0.0.1", "/in?a=1")
    with pytest.raises(UrlRefused, match="metadata"):
        check("http://metadata.internal/", require_https=False, allow_private=True,
              resolver=resolver_of("169.254.169.254"))


def test_a_public_url_is_taken_with_the_checked_address():
    target = check("https://hooks.example.com", require_https=True, allow_private=False,
                   resolver=resolver_of("93.184.216.34"))
    assert (target.port, target.address, target.path) == (443, "93.184.216.34", "/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/x", "must start with https://"),
        ("ftp://hooks.example.com/x", "must start with"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https:///x", "must name a host"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
        ("https://hooks.example.com:0/x", "port 0"),
        ("https://hooks.exa mple.com/x", "without spaces"),
        ("https://hööks.example.com/x", "ASCII"),
        ("https://hooks.example.com/" + "a" * 2100, "at most 2048"),
        ("", "non-empty"),
        (12, "non-empty string"),
    ],
)
def test_malformed_urls_are_refused(url, message):
    with pytest.raises(UrlRefused, match=message):
        check(url, require_https=True, allow_private=False, resolver=resolver_of("93.184.216.34"))


def test_a_host_that_does_not_resolve_is_refused():
    with pytest.raises(UrlRefused, match="does not resolve"):
        addresses.check("https://no-such-host.invalid/x", require_https=True, allow_private=False)


def test_a_signature_verifies_and_a_changed_body_or_an_old_timestamp_does_not():
    body = b'{"id":"evt_1"}'
    header = signing.signature("whsec_secret", 1_700_000_000, body)
    assert header.startswith("v1=") and len(header) == 3 + 64
    assert signing.verify("whsec_secret", "1700000000", header, body, now=1_700_000_010)
    assert not signing.verify("whsec_secret", "1700000000", header, body + b" ", now=1_700_000_010)
    assert not signing.verify("whsec_other", "1700000000", header, body, now=1_700_000_010)
    assert not signing.verify("whsec_secret", "1700000001", header, body, now=1_700_000_010)
    assert not signing.verify("whsec_secret", "1700000000", header, body, now=1_700_000_000 + 301)  # a replay
    assert not signing.verify("whsec_secret", "17e8", header, body, now=1_700_000_010)
