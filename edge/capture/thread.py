"""The capture thread: reads a source in the background and hands frames to the pipeline.

Live sources (camera, stream): only the newest frames are kept; older ones are dropped and counted, so
the pipeline always works on the present. Finite sources (video file, photos): nothing is dropped; the
capture side waits for the consumer, so every frame is processed. A failing live source is reopened with
exponential backoff. Every wait checks the stop event at least every 0.1 s, so shutdown is prompt.

`busy_for()` tells a hung source (a driver call that never returns) from one that is merely away (failing
fast and being retried): the daemon keeps systemd's watchdog fed through the second, not the first.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from edge.capture.sources import Frame, Source, SourceError

log = logging.getLogger(__name__)

_POLL_S = 0.1  # longest wait without looking at the stop event


class CaptureThread:
    def __init__(
        self,
        source_factory: Callable[[], Source],
        stop_event: threading.Event,
        queue_size: int = 1,
        reopen_backoff: tuple[float, float] = (0.5, 30.0),
    ):
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._factory = source_factory
        self._stop = stop_event
        self._queue: collections.deque[Frame] = collections.deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._backoff_min, self._backoff_max = reopen_backoff
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._ended = False  # the finite source returned None, or the thread gave up
        self.dropped = 0
        self.captured = 0
        self.reopens = 0
        self.failures = 0
        self.source_id: str | None = None
        self.live: bool | None = None
        self.error: str | None = None  # why a finite source could not be read, for the daemon to report
        self._call_started: float | None = None  # monotonic start of the source call in progress

    # --- consumer side ---------------------------------------------------------------------------------
    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None after `timeout` seconds / when the source is finished / on stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            # Wait in short slices: the stop event is set by a signal handler that cannot notify us.
            while not self._queue and not self._ended and not self._stop.is_set():
                remaining = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self._queue:
                return None
            frame = self._queue.popleft()
            self._cond.notify_all()  # a finite source may be waiting for room
            return frame

    @property
    def finished(self) -> bool:
        """A finite source has ended (or could not be read) and every frame it gave was taken."""
        with self._cond:
            return self._ended and not self._queue

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def busy_for(self) -> float:
        """Seconds the thread has spent inside one call into the source (open or read); 0 between calls."""
        started = self._call_started
        return 0.0 if started is None else time.monotonic() - started

    def join(self, timeout: float | None = None) -> None:
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)

    # --- capture side ----------------------------------------------------------------------------------
    def _call(self, fn):
        self._call_started = time.monotonic()
        try:
            return fn()
        finally:
            self._call_started = None

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when stop was requested meanwhile."""
        return self._stop.wait(seconds)

    def _open(self) -> Source | None:
        """Open the source, retrying live sources with backoff. None means stop (or a finite source failed)."""
        delay = self._backoff_min
        while not self._stop.is_set():
            try:
                source = self._call(self._factory)
            except SourceError as exc:
                self.failures += 1
                if self.live is False:  # a file or folder that vanished will not come back
                    self.error = str(exc)
                    return None
                log.warning("%s; retrying in %.1f s", exc, delay)
                if self._wait(delay):
                    return None
                delay = min(delay * 2, self._backoff_max)
                continue
            self.source_id, self.live = source.source_id, source.live
            return source
        return None

    def _put(self, frame: Frame) -> bool:
        """Queue a frame; False when stop was requested while waiting for room."""
        with self._cond:
            if self.live:
                while len(self._queue) >= self._queue_size:
                    self._queue.popleft()  # the oldest frame is stale: drop it, never the new one
                    self.dropped += 1
            else:
                while len(self._queue) >= self._queue_size:
                    if self._stop.is_set():
                        return False
                    self._cond.wait(_POLL_S)
            self._queue.append(frame)
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        source = None
        try:
            source = self._open()
            delay = self._backoff_min
            while source is not None and not self._stop.is_set():
                try:
                    frame = self._call(source.read)
                    if frame is None and source.live:
                        raise SourceError(f"source {source.source_id}: ended unexpectedly")
                except SourceError as exc:
                    if not source.live:
                        self.error = str(exc)
                        break
                    self.failures += 1
                    log.warning("%s; reopening in %.1f s", exc, delay)
                    _close_quietly(source)
                    source = None
                    if self._wait(delay):
                        break
                    delay = min(delay * 2, self._backoff_max)
                    source = self._open()
                    if source is not None:
                        self.reopens += 1
                        log.info("source %s reopened", source.source_id)
                    continue
                if frame is None:
                    break  # a finite source has ended
                delay = self._backoff_min  # a good frame: the next failure starts the backoff again
                self.captured += 1
                if not self._put(frame):
                    break
        except Exception as exc:  # never die silently: the daemon sees `error` and `finished`
            log.exception("capture thread failed")
            self.error = f"capture failed: {type(exc).__name__}: {exc}"
        finally:
            if source is not None:
                _close_quietly(source)
            with self._cond:
                self._ended = True
                self._cond.notify_all()


def _close_quietly(source: Source) -> None:
    try:
        source.close()
    except Exception:  # closing a broken camera may fail again; nothing more to do about it
        log.debug("closing %s failed", source.source_id, exc_info=True)


def open_until_stopped(factory: Callable[[], Source], stop_event: threading.Event) -> Source | None:
    """factory() in a helper thread, so that a stop request is answered while a source takes its time to
    open (a silent stream holds FFmpeg for its 5 s timeout, a signal handler cannot run meanwhile). Returns
    the source, None when stop was requested first (the open is abandoned in its daemon thread), or raises
    what factory() raised."""
    outcome: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["source"] = factory()
        except BaseException as exc:  # handed to the caller, which decides what is fatal
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="first-open", daemon=True).start()
    while not done.wait(_POLL_S):
        if stop_event.is_set():
            return None
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["source"]  # type: ignore[return-value]


def reusing_factory(first: Source, uri: str, **open_kwargs) -> Callable[[], Source]:
    """A source factory that hands out an already-open source first, then reopens `uri` when needed.

    Lets the daemon open the source in the main thread (bad URIs fail fast with a clear message) and
    still give the capture thread a way to reopen it.
    """
    from edge.capture.sources import open_source

    pending = [first]

    def factory() -> Source:
        if pending:
            return pending.pop()
        return open_source(uri, **open_kwargs)

    return factory
