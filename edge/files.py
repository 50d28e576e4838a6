"""Files the daemon and the tools read and write, safely: bounded reads (a wrong path such as /dev/zero or a
FIFO is an error, not a hang or an exhausted memory), secrets, why a path cannot be used (in words), sha256,
and atomic writes (a reader never sees half a file).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path

# Config files, contracts and secrets are a few KB. Anything far larger is a wrong path (`/dev/zero`, a
# video): read no more than this instead of running out of memory on it.
MAX_TEXT_BYTES = 1 << 20


def read_text_limited(path: str | os.PathLike, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A small UTF-8 text file, refusing (ValueError naming `what`) one larger than `limit` bytes, so an
    endless or huge file costs `limit` bytes of memory, not all of it. A pipe or device (`<(cat x)`, a FIFO)
    is read for at most PIPE_WAIT_S: a FIFO nobody writes to would otherwise hold the open for good. OSError
    and UnicodeDecodeError pass."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read(limit + 1)
        else:
            data = _read_waiting(fd, limit + 1, f"{what} {path}")
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{what} {path} is larger than {limit // 1024} KiB: not a {what}")
    return data.decode("utf-8")


PIPE_WAIT_S = 5.0


def _read_waiting(fd: int, size: int, what: str) -> bytes:
    """Up to `size` bytes from a non-blocking pipe or device, until its end; ValueError after PIPE_WAIT_S."""
    import select

    chunks: list[bytes] = []
    got = 0
    deadline = time.monotonic() + PIPE_WAIT_S
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ValueError(f"{what} is a pipe or device that did not finish within {PIPE_WAIT_S:g} s")
        if not poller.poll(remaining * 1000):
            continue
        try:
            chunk = os.read(fd, min(65536, size - got))
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def not_utf8_hint(exc: UnicodeDecodeError) -> str:
    """What to tell someone whose editor saved a file as Latin-1 or Windows-1252 (or who named a binary)."""
    return f"{exc.object[exc.start : exc.start + 1]!r} cannot be decoded; save the file as UTF-8"


def read_secret(path: Path, key: str, what: str, error: type[Exception] = ValueError) -> str | None:
    """A secret file's text (a password, a token), or None when it does not exist. Any other failure is an
    `error` (the caller's own, e.g. edge.config.ConfigError) naming `key`; the file is read at most
    MAX_TEXT_BYTES, so /dev/zero is an error, not a hang."""
    try:
        return read_text_limited(path, what)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"{key}: cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{key}: {what} {path} is not UTF-8 text (byte {exc.start}): {not_utf8_hint(exc)}"
        ) from None
    except ValueError as exc:
        raise error(f"{key}: {exc}") from None


# The shipped unit's ProtectHome=yes makes these unreachable for the service: say so when a path there fails.
_HIDDEN_BY_THE_UNIT = ("/home/", "/root/", "/run/user/")


def path_problem(path: str | os.PathLike, want: str = "file") -> str | None:
    """Why `path` cannot be used as a `want` ("file" or "folder"), in words that name it, or None when it
    can. Never raises: a name too long, a part of it that is a file, or a folder the user may not enter are
    reasons like a missing file, not tracebacks."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except NotADirectoryError:
        return f"{path} does not exist (a part of the path is a file, not a folder)"
    except PermissionError:
        hint = ""
        if str(path).startswith(_HIDDEN_BY_THE_UNIT):
            hint = (
                " (under systemd the service cannot see /home, /root or /run/user, ProtectHome=yes: "
                "use /etc/emotion-edge or /var/lib/emotion-edge)"
            )
        return f"{path} cannot be reached: permission denied{hint}"
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, ...; ValueError: a NUL in the path
        return f"{path} cannot be used: {getattr(exc, 'strerror', None) or exc}"
    if want == "folder":
        return None if stat.S_ISDIR(info.st_mode) else f"{path} is not a folder"
    if stat.S_ISDIR(info.st_mode):
        return f"{path} is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file (a device, a pipe or a socket)"
    return None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a file so a reader never sees half of it: temp file in the same folder, then rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask applies), so a
        # daemon running as its own user can read models and contracts written by another account.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
