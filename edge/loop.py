"""One turn of the processing loop, capture -> process -> emit, shared by the daemon and `emotion-edge bench`.

The bench runs it without an emitter (it publishes nothing), so both measure the same stages the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# What edge/pipeline.py times; `total` adds publish (making the event and handing it over) to them.
PIPELINE_STAGES = ("detect", "classify", "track")


@dataclass
class Step:
    frame: object  # edge.capture.Frame
    result: object  # edge.pipeline.ProcessResult
    timings: dict[str, float]  # capture_wait, detect, classify, track, publish (with an emitter), total
    now: float  # the loop clock when the frame was taken
    event: dict | None = None  # the event the emitter made of it (none without an emitter)


class FrameLoop:
    """`next()` takes the newest frame, processes it and hands it to the emitter (when there is one)."""

    def __init__(self, capture, processor, emitter=None, clock=time.monotonic, timer=time.perf_counter):
        self.capture = capture
        self.processor = processor
        self.emitter = emitter
        self._clock = clock
        self._timer = timer
        self.now = clock()  # the loop clock after the last capture.get(), frame or not

    def next(self, timeout: float) -> Step | None:
        """The processed frame, or None when none came within `timeout` seconds (see capture.finished)."""
        waited = self._timer()
        frame = self.capture.get(timeout=timeout)
        wait_ms = (self._timer() - waited) * 1000
        self.now = self._clock()
        if frame is None:
            return None
        result = self.processor.process(frame)
        timings = dict(result.timings_ms, capture_wait=wait_ms)
        total = sum(result.timings_ms.get(stage, 0.0) for stage in PIPELINE_STAGES)
        event = None
        if self.emitter is not None:
            started = self._timer()
            event = self.emitter.frame(frame, result, self.now)
            timings["publish"] = (self._timer() - started) * 1000
            total += timings["publish"]
        timings["total"] = total
        return Step(frame, result, timings, self.now, event)
