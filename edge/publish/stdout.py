"""Events as JSON Lines on stdout: one event per line, flushed per line, so `| jq` or a pipe sees each at once.

Only events go to stdout (every line validates against the event schema); logs and stats go to stderr.
When the reader goes away (`| head -1`), a run that publishes only to stdout ends cleanly (exit 0, as after
SIGTERM); with MQTT as well it carries on for MQTT. A stdout that cannot be written (a full disk, /dev/full)
ends the run with an error instead: events would be lost silently.

The writes happen in a thread of their own, never in the processing loop: a reader that stops reading (a
`| sleep 600`, a journald that stalls) would otherwise hold the loop inside a pipe write, and with it MQTT,
the watchdog and the answer to SIGTERM. Lines wait in a bounded queue; while it is full, a live source drops
the oldest line (counted in `dropped_events`, said once per stall), while a finite source (a file, a folder)
waits for its reader, as any Unix tool does, until the daemon is asked to stop.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from edge.logs import stream_writer
from edge.publish.base import Publisher, PublishError, to_json

log = logging.getLogger(__name__)

QUEUE_EVENTS = 1000  # lines waiting for a slow reader (~1 MB at most); as many as the MQTT outage buffer
_WAIT_SLICE_S = 0.1  # a finite run waiting for room looks at the stop event this often


class StdoutPublisher(Publisher):
    name = "stdout"

    def __init__(
        self,
        stream: TextIO | None = None,
        on_closed: Callable[[], None] | None = None,
        wait_for_reader: bool = False,
        stop_event: threading.Event | None = None,
        queue_size: int = QUEUE_EVENTS,
    ):
        """`on_closed` is called once when the reader goes away (the daemon's stop, when stdout is its only
        output). `wait_for_reader` (finite sources): a full queue waits for room instead of dropping, until
        `stop_event` is set."""
        self._stream = stream
        self._on_closed = on_closed
        self._wait_for_reader = wait_for_reader
        self._stop_event = stop_event
        self._queue_size = max(1, queue_size)
        self._queue: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._writing = 0  # lines the writer took from the queue and has not written yet
        self._closing = False
        self._broken = False
        self._error: str | None = None  # why stdout cannot be written; raised once to the loop
        self._error_raised = False
        self._stalled = False  # dropping lines since the queue filled; said once per stall
        self._stall_drops = 0
        self._dropped = 0
        self._left_at_close = 0
        self.lines = 0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    @property
    def dropped_events(self) -> int:
        return self._dropped + self._left_at_close

    @property
    def buffered_events(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self.stream is None:  # started with stdout closed (`>&-`): Python has no sys.stdout at all
            raise PublishError("publish.outputs: stdout is closed; open it or publish to mqtt only")
        self._start_writer()

    def _start_writer(self) -> None:
        if self._thread is not None:
            return
        write = stream_writer(self.stream)  # through the fd: see edge/logs.py
        self._thread = threading.Thread(target=self._run, args=(write,), name="stdout", daemon=True)
        self._thread.start()

    # --- the processing loop's side: never blocks (a finite run waits in slices) -------------------------

    def publish_event(self, event: dict[str, Any]) -> None:
        line = to_json(event) + "\n"
        self._raise_error()
        if self._broken:
            return
        self._start_writer()
        first_drop = False
        with self._cond:
            while len(self._queue) >= self._queue_size and self._wait_for_reader and not self._stopping():
                self._cond.wait(_WAIT_SLICE_S)
                if self._broken or self._error:
                    break
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()  # the oldest is the least useful, as in the MQTT outage buffer
                self._dropped += 1
                self._stall_drops += 1
                first_drop, self._stalled = not self._stalled, True
            self._queue.append(line)
            self._cond.notify_all()
        if first_drop:
            log.warning(
                "stdout is not being read (%d events waiting): dropping the oldest until its reader catches "
                "up; counted in stats events_dropped",
                self._queue_size,
            )
        self._raise_error()

    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def _raise_error(self) -> None:
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise PublishError(self._error)

    # --- the writer thread --------------------------------------------------------------------------------

    def _run(self, write: Callable[[str], None]) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                lines = list(self._queue)
                self._queue.clear()
                self._writing = len(lines)
                self._cond.notify_all()  # a finite run may be waiting for room
            try:
                write("".join(lines))
            except BrokenPipeError:
                self._gone(len(lines))
                return
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
                self._failed(exc, len(lines))
                return
            with self._cond:
                self._writing = 0
                self.lines += len(lines)
                recovered = self._stalled and not self._queue
                drops = self._stall_drops
                if recovered:
                    self._stalled, self._stall_drops = False, 0
                self._cond.notify_all()
            if recovered:
                log.warning("stdout is read again; %d events were dropped while it was not", drops)

    def _gone(self, unwritten: int) -> None:
        with self._cond:
            self._broken = True
            self._writing = 0
            self._left_at_close += unwritten + len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._discard_stdout()
        if self._on_closed is None:
            log.warning("stdout is closed; no more events are written there")
        else:
            log.info("stdout was closed by its reader; stopping")
            self._on_closed()

    def _failed(self, exc: Exception, unwritten: int) -> None:
        reason = getattr(exc, "strerror", None) or exc
        with self._cond:
            self._error = f"cannot write events to stdout: {reason}"
            self._broken = True
            self._writing = 0
            self._left_at_close += unwritten + len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._discard_stdout()

    def _discard_stdout(self) -> None:
        if self._stream is None:
            discard_stdout()

    # --- shutdown -----------------------------------------------------------------------------------------

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued, waiting at most `timeout` s for the reader; what is left is counted lost.
        Raises PublishError when stdout could not be written and the loop was not told yet."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._writing) and not self._broken:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, _WAIT_SLICE_S))
            left = 0 if self._broken else len(self._queue) + self._writing
            self._left_at_close += left
        if self._thread is not None and not left:  # done (or gone): let it say so before close() returns
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if left:
            log.warning(
                "stdout: %d events were not written (its reader stopped reading)", self._left_at_close
            )
        self._raise_error()

    def delivery_failure(self) -> str | None:
        lost = self.dropped_events
        return f"{lost} events were not written to stdout" if lost and not self._broken else None


def discard_stdout() -> None:
    """Point fd 1 at /dev/null after a failed write, so Python's own flush of sys.stdout at exit cannot fail
    a second time (it would print `Exception ignored ... BrokenPipeError` and exit 120)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
