"""systemd's sd_notify protocol without a dependency: one datagram per message to `$NOTIFY_SOCKET`.

Under `Type=notify` systemd waits for READY=1 before it calls the service started, and with
`WatchdogSec=` it restarts the service when WATCHDOG=1 pings stop. Outside systemd (no `$NOTIFY_SOCKET`)
every call is a no-op, so the daemon calls these unconditionally.

The socket is a path (`/run/systemd/notify`) or an abstract name written `@name` (a leading NUL byte).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _socket_address(environ=None) -> str | bytes | None:
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


def notify(message: str) -> bool:
    """Send one notification (e.g. "READY=1\\nSTATUS=running"). True when it was sent, False otherwise.

    Never raises: a daemon must not die because its supervisor's socket is briefly unavailable.
    """
    address = _socket_address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify(%r) to %r failed: %s", message, address, exc)
        return False


def ready(status: str | None = None) -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping(status: str | None = None) -> bool:
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog_interval(environ=None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of `$WATCHDOG_USEC` (as sd_watchdog_enabled advises).

    None when no watchdog is configured for this process (unset, invalid, or `$WATCHDOG_PID` names
    another process).
    """
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2_000_000
