"""Addresses: the `--preview [HOST:]PORT` flag, and which hosts count as this machine only."""

from __future__ import annotations

import ipaddress
import re

from edge.config import ConfigError

_BIND_RE = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):)?(?P<port>\d{1,5})$")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def parse_bind(text: str) -> dict:
    """`8080`, `0.0.0.0:8080`, `[::1]:8080`, `pi.lan:8080` -> the `preview` config keys it sets."""
    match = _BIND_RE.match(text.strip())
    if not match:
        raise ConfigError(f"--preview: expected [HOST:]PORT (e.g. 8080 or 0.0.0.0:8080), got {text!r}")
    section: dict = {"enabled": True, "port": int(match["port"])}
    if match["host"]:
        section["host"] = match["host"].strip("[]")
    return section


def is_loopback(host: str) -> bool:
    """True for names and literals that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_header_is_loopback(header: str | None) -> bool:
    """A request's Host header names this machine (`localhost:8080`, `127.0.0.1:8080`, `[::1]:8080`).

    Without a token the page is open to local users only. A web page elsewhere can still make a browser on
    this machine talk to 127.0.0.1 under its own domain name (DNS rebinding); such requests carry that
    domain in Host, so they are refused.
    """
    if not header:
        return False
    host = header.strip()
    if host.startswith("["):  # [::1]:8080
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host)
