"""Log lines to stderr without ever waiting for it.

Under systemd stderr is a socket to journald; at a terminal it may be a pipe nobody reads (`2>&1 | less`,
a paused `ssh`). A log call that blocks there would hold the processing loop (stats lines), paho's network
thread (reconnect lines) or a signal handler, and a journald that stalls would end in a watchdog kill. So a
log call only appends the formatted line to a bounded queue; one thread writes them out. While stderr takes
nothing the newest lines are dropped and counted, and the count is written once stderr moves again.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUEUE_LINES = 2000  # a few hundred KB: minutes of the daemon's logging, even in a flood


class StderrSink(logging.Handler):
    """A handler whose emit() never blocks; `dropped` counts lines lost while the stream took nothing."""

    def __init__(self, stream: TextIO, queue_lines: int = QUEUE_LINES):
        super().__init__()
        self._write = stream_writer(stream)
        self._size = queue_lines
        self._queue: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._writing = False
        self._stuck = (
            False  # a drain gave up on the write in progress: the next ones do not wait for it again
        )
        self._closing = False
        self._stall_drops = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._cond:
            if len(self._queue) >= self._size:
                self.dropped += 1
                self._stall_drops += 1
                return
            self._queue.append(text)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                lines = list(self._queue)
                self._queue.clear()
                drops, self._stall_drops = self._stall_drops, 0
                self._writing = True
            if drops:
                lines.append(self._note(f"{drops} log lines were dropped while stderr was blocked"))
            with contextlib.suppress(OSError, ValueError):  # stderr is gone: nothing else can be told
                self._write("".join(line + "\n" for line in lines))
            with self._cond:
                self._writing = self._stuck = False
                self._cond.notify_all()

    def _note(self, message: str) -> str:
        record = logging.LogRecord("edge.logs", logging.WARNING, __file__, 0, message, None, None)
        return self.format(record)

    def drain(self, timeout: float) -> bool:
        """Wait at most `timeout` s until every queued line is written; False when stderr is stuck."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._stuck and self._writing):
                    self._stuck = self._writing
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        super().close()


def stream_writer(stream: TextIO) -> Callable[[str], None]:
    """A function that writes text to `stream` from a writer thread: through the file descriptor where there
    is one, since a thread blocked inside sys.stdout's or sys.stderr's own buffer would hold its lock, and
    the interpreter's flush of it at exit would then wait for good (or abort)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fd = None
    if fd is None:

        def write_stream(text: str) -> None:
            stream.write(text)
            stream.flush()

        return write_stream
    with contextlib.suppress(OSError, ValueError):
        stream.flush()

    def write_fd(text: str) -> None:
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        while data:
            data = data[os.write(fd, data) :]

    return write_fd


_current: StderrSink | None = None


def quiet_native_libraries(level: str) -> None:
    """OpenCV and FFmpeg write to stderr themselves, past this sink: a line per failed open of a stream that
    is down ("Connection refused", "can't be used to capture by name"), thousands a day while a camera is
    away. Unless the log level is DEBUG they keep quiet but for fatal errors; the daemon says what failed, once
    per episode. Set before OpenCV first opens a stream (an environment variable given to the daemon wins)."""
    if level == "DEBUG":
        return
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == "ERROR":
        # Newer wheels have cv2.utils.logging and no cv2.setLogLevel; older ones (4.10, which Bookworm's
        # numpy<2 pin installs) the other way round. 2 is OpenCV's LOG_LEVEL_ERROR in both.
        logging_module = getattr(getattr(cv2, "utils", None), "logging", None)
        set_level = getattr(logging_module, "setLogLevel", None) or getattr(cv2, "setLogLevel", None)
        if set_level is not None:
            set_level(2)


HELD_BYTES = 1 << 20  # what a block of native start-up may write to stderr; more is passed on unread


@contextlib.contextmanager
def native_stderr_filtered(drop: Callable[[bytes], bool]):
    """Hold what is written to file descriptor 2 inside the block (C++ libraries write there directly, past
    every Python logger), then pass it on without the lines `drop` picks: their start-up chatter, which no
    setting of theirs silences. Their warnings and errors, and any line of ours written meanwhile, still
    reach stderr, just after the block. Without a usable fd 2 it filters nothing."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as held:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read(HELD_BYTES)
            kept = b"".join(line for line in text.splitlines(keepends=True) if not drop(line))
            with contextlib.suppress(OSError):
                data = memoryview(kept)
                while data:
                    data = data[os.write(2, data) :]


def install(stream: TextIO, level: str) -> StderrSink:
    """Make a new sink on `stream` the root logger's only handler (replacing the previous one)."""
    global _current
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler is _current:
            handler.drain(0.5)
        handler.close()
    sink = StderrSink(stream)
    sink.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(sink)
    root.setLevel(getattr(logging, level))
    quiet_native_libraries(level)
    if _current is None:
        atexit.register(drain)
    _current = sink
    return sink


def drain(timeout: float = 1.0) -> bool:
    """Write out what is queued (before an `error:` line, and at exit), waiting at most `timeout` s."""
    return _current.drain(timeout) if _current is not None else True


def dropped_lines() -> int:
    return _current.dropped if _current is not None else 0
