"""The capture thread: reads a source in the background and hands frames to the pipeline.

Live sources (camera, stream): only the newest frames are kept; older ones are dropped and counted, so
the pipeline always works on the present. Finite sources (video file, photos): nothing is dropped; the
capture side waits for the consumer, so every frame is processed. A source with a `frame_interval` (the
demo, a file in real time) is read at that pace. A failing live source is reopened with
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

from edge.capture.base import Frame, Source, SourceError

log = logging.getLogger(__name__)

_POLL_S = 0.1  # longest wait without looking at the stop event
# A live source counts as back once it has delivered frames this long: one good frame after each reopen (a
# camera that fails right after every open) must not reset the backoff, or it is reopened, and logged, twice
# a second for good.
STABLE_S = 10.0
# While a live source keeps failing, one line says so at first and then one line sums up every this often:
# a camera away for a day is ~150 journal lines, not one per retry.
SUMMARY_EVERY_S = 600.0


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
        self._delay = self._backoff_min  # the next wait before a reopen; grows until the source is stable
        self._trouble_since: float | None = None  # the first failure of this episode (None: all is well)
        self._trouble_failures = 0
        self._summed_up_at = 0.0
        self._opened_at = 0.0  # when the source in use was opened

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

    def _wait_until(self, due: float) -> bool:
        """Sleep until the monotonic time `due`; True when stop was requested meanwhile."""
        remaining = due - time.monotonic()
        return remaining > 0 and self._wait(remaining)

    def _open(self) -> Source | None:
        """Open the source, retrying live sources with backoff. None means stop (or a finite source failed)."""
        while not self._stop.is_set():
            try:
                source = self._call(self._factory)
            except SourceError as exc:
                if self.live is False:  # a file or folder that vanished will not come back
                    self.failures += 1
                    self.error = str(exc)
                    return None
                if self._failed_and_waited(exc, "retrying"):
                    return None
                continue
            self.source_id, self.live = source.source_id, source.live
            self._opened_at = time.monotonic()
            return source
        return None

    def _failed_and_waited(self, exc: SourceError, action: str) -> bool:
        """Count a live source's failure, say it (once per episode, then a sum every SUMMARY_EVERY_S), wait
        out the backoff and grow it. True when stop was requested meanwhile."""
        self.failures += 1
        now = time.monotonic()
        delay = self._delay
        if self._trouble_since is None:
            self._trouble_since, self._trouble_failures, self._summed_up_at = now, 1, now
            log.warning("%s; %s in %.1f s (until it is back for %.0f s, further failures are summed up every "
                        "%.0f min)", exc, action, delay, STABLE_S, SUMMARY_EVERY_S / 60)  # fmt: skip
        else:
            self._trouble_failures += 1
            if now - self._summed_up_at >= SUMMARY_EVERY_S:
                self._summed_up_at = now
                log.warning("source still failing: %d failures in %.0f min (latest: %s); retrying every %.0f s",
                            self._trouble_failures, (now - self._trouble_since) / 60, exc, delay)  # fmt: skip
            else:
                log.debug("%s; %s in %.1f s", exc, action, delay)
        self._delay = min(delay * 2, self._backoff_max)
        return self._wait(delay)

    def _delivered(self, source: Source) -> None:
        """A good frame: once the source has been delivering for STABLE_S, its trouble is over."""
        if self._trouble_since is None or time.monotonic() - self._opened_at < STABLE_S:
            return
        log.info("source %s is back: delivering for %.0f s, after %d failures in %.0f s", source.source_id,
                 STABLE_S, self._trouble_failures, self._opened_at - self._trouble_since)  # fmt: skip
        self._trouble_since, self._delay = None, self._backoff_min

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
            due = None  # when a paced source's next frame is due (Source.frame_interval)
            while source is not None and not self._stop.is_set():
                if due is not None and self._wait_until(due):
                    break
                try:
                    frame = self._call(source.read)
                    if frame is None and source.live:
                        raise SourceError(f"source {source.source_id}: ended unexpectedly")
                except SourceError as exc:
                    if not source.live:
                        self.error = str(exc)
                        break
                    _close_quietly(source)
                    source, due = None, None
                    if self._failed_and_waited(exc, "reopening"):
                        break
                    source = self._open()
                    if source is not None:
                        self.reopens += 1
                        first = self._trouble_failures <= 1
                        log.log(
                            logging.INFO if first else logging.DEBUG, "source %s reopened", source.source_id
                        )
                    continue
                if frame is None:
                    break  # a finite source has ended
                due = _next_due(due, getattr(source, "frame_interval", None))
                self._delivered(source)
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


def _next_due(due: float | None, interval: float | None) -> float | None:
    """When the frame after the one just read is due: one interval after this one's slot, or, when reading
    fell behind by more than an interval (a slow consumer of a file), one interval from now: no burst to
    catch up. None for a source read as fast as it gives frames."""
    if not interval:
        return None
    now = time.monotonic()
    if due is None or due + interval < now:
        return now + interval
    return due + interval


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
