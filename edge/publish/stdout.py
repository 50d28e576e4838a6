"""Events as JSON Lines on stdout: one event per line, flushed per line, so `| jq` or a pipe sees each at once.

Only events go to stdout (every line validates against the event schema); logs and stats go to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, TextIO

from edge.publish.base import Publisher, to_json

log = logging.getLogger(__name__)


class StdoutPublisher(Publisher):
    name = "stdout"

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream
        self._broken = False
        self.lines = 0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def publish_event(self, event: dict[str, Any]) -> None:
        if self._broken:
            return
        try:
            self.stream.write(to_json(event) + "\n")
            self.stream.flush()
            self.lines += 1
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): say so once and keep running for the other outputs.
            self._broken = True
            log.warning("stdout is closed; no more events are written there")

    def close(self, timeout: float = 1.0) -> None:
        if self._broken:
            return
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.stream.flush()
