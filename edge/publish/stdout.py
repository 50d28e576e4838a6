"""Events as JSON Lines on stdout: one event per line, flushed per line, so `| jq` or a pipe sees each at once.

Only events go to stdout (every line validates against the event schema); logs and stats go to stderr.
When the reader goes away (`| head -1`), a run that publishes only to stdout ends cleanly (exit 0, as after
SIGTERM); with MQTT as well it carries on for MQTT. A stdout that cannot be written (a full disk, /dev/full)
ends the run with an error instead: events would be lost silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from edge.publish.base import Publisher, PublishError, to_json

log = logging.getLogger(__name__)


class StdoutPublisher(Publisher):
    name = "stdout"

    def __init__(self, stream: TextIO | None = None, on_closed: Callable[[], None] | None = None):
        """`on_closed` is called once when the reader goes away (the daemon's stop, when stdout is its only
        output)."""
        self._stream = stream
        self._on_closed = on_closed
        self._broken = False
        self.lines = 0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def start(self) -> None:
        if self.stream is None:  # started with stdout closed (`>&-`): Python has no sys.stdout at all
            raise PublishError("publish.outputs: stdout is closed; open it or publish to mqtt only")

    def publish_event(self, event: dict[str, Any]) -> None:
        if self._broken:
            return
        try:
            self.stream.write(to_json(event) + "\n")
            self.stream.flush()
            self.lines += 1
        except BrokenPipeError:
            self._broken = True
            self._discard_stdout()
            if self._on_closed is None:
                log.warning("stdout is closed; no more events are written there")
            else:
                log.info("stdout was closed by its reader; stopping")
                self._on_closed()
        except OSError as exc:
            self._broken = True
            self._discard_stdout()
            raise PublishError(f"cannot write events to stdout: {exc.strerror or exc}") from None

    def _discard_stdout(self) -> None:
        if self._stream is None:
            discard_stdout()

    def close(self, timeout: float = 1.0) -> None:
        if self._broken or self.stream is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()


def discard_stdout() -> None:
    """Point fd 1 at /dev/null after a failed write, so Python's own flush of sys.stdout at exit cannot fail
    a second time (it would print `Exception ignored ... BrokenPipeError` and exit 120)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
