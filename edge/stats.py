"""Health figures of the running daemon: per-stage latency percentiles, frame rates, drops, memory, temperature.

The processing loop records each frame's stage timings; every `stats.interval_s` the daemon takes a
snapshot, logs one line and publishes it on the `stats` topic. Rates are over the last interval, latency
percentiles over a rolling window of recent frames (bounded memory, however long the daemon runs).
"""

from __future__ import annotations

import collections
import glob
import os
import time
from datetime import datetime, timezone

# Every stage a frame's timings may name: the daemon adds capture_wait and publish to the pipeline's detect,
# classify and track (edge/pipeline.py); `emotion-edge bench` reports all but publish.
STAGES = ("capture_wait", "detect", "classify", "track", "publish", "total")


def utc_timestamp(seconds: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as in the event schema: 2026-11-21T19:12:00.123Z.

    The one timestamp format of everything the daemon publishes (events, state, stats); `seconds` is UNIX
    time (a frame's capture time), default now."""
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted, non-empty list: numpy's default
    method, without numpy's array round trip for the daemon's small windows."""
    position = (len(sorted_values) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def rss_mb() -> float | None:
    """Resident memory of this process in MiB, from /proc/self/statm (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def cpu_temp_c(root: str = "/sys/class/thermal") -> float | None:
    """CPU temperature in °C from the kernel's thermal zones; None where there are none (VMs, containers).

    Prefers a zone whose type names the CPU or SoC (the Pi's `cpu-thermal`), else the first readable one.
    """
    zones = sorted(glob.glob(os.path.join(root, "thermal_zone*")))

    def zone_type(zone: str) -> str:
        try:
            with open(os.path.join(zone, "type")) as handle:
                return handle.read().strip().lower()
        except OSError:
            return ""

    preferred = [z for z in zones if any(word in zone_type(z) for word in ("cpu", "soc", "x86_pkg"))]
    for zone in preferred + [z for z in zones if z not in preferred]:
        try:
            with open(os.path.join(zone, "temp")) as handle:
                return round(int(handle.read().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


class StatsCollector:
    """Collects per-frame figures from the processing loop (one thread) and makes periodic snapshots."""

    def __init__(self, window: int = 512, clock=time.monotonic):
        self._clock = clock
        self._window = window
        self._latency = {stage: collections.deque(maxlen=window) for stage in STAGES}
        self.started = clock()
        self._last_time = self.started
        self._last_captured = 0
        self._processed = 0
        self._faces = 0
        self._last_processed = 0
        self._last_faces = 0

    def record(self, timings_ms: dict[str, float], faces: int) -> None:
        """One processed frame: its stage timings (any of STAGES) and how many faces it had.

        STAGES are always reported (null before their first value); a stage outside them is reported too,
        never dropped: a new stage must not vanish from the stats because this list was not updated."""
        for stage, value in timings_ms.items():
            if value is not None:
                if stage not in self._latency:
                    self._latency[stage] = collections.deque(maxlen=self._window)
                self._latency[stage].append(float(value))
        self._processed += 1
        self._faces += faces

    @property
    def processed(self) -> int:
        return self._processed

    def latency(self) -> dict[str, dict[str, float | None]]:
        out = {}
        for stage, values in self._latency.items():
            ordered = sorted(values)
            if ordered:
                out[stage] = {
                    "p50": round(percentile(ordered, 50), 2),
                    "p95": round(percentile(ordered, 95), 2),
                }
            else:
                out[stage] = {"p50": None, "p95": None}
        return out

    def snapshot(
        self,
        captured: int,
        dropped: int,
        reconnects: int,
        detector: str,
        interpreter: str,
        outputs: dict[str, object] | None = None,
    ) -> dict[str, object]:
        """The `stats` payload. Rates cover the time since the previous snapshot; `outputs` (delivery_figures)
        says what the outputs did with the events."""
        now = self._clock()
        elapsed = max(now - self._last_time, 1e-6)
        snapshot = {
            "timestamp": utc_timestamp(),
            "uptime_s": round(now - self.started, 1),
            "input_fps": round((captured - self._last_captured) / elapsed, 2),
            "processed_fps": round((self._processed - self._last_processed) / elapsed, 2),
            "dropped_frames": int(dropped),
            "faces_per_s": round((self._faces - self._last_faces) / elapsed, 2),
            "reconnects": int(reconnects),
            "rss_mb": rss_mb(),
            "cpu_temp_c": cpu_temp_c(),
            "latency_ms": self.latency(),
            "detector": detector,
            "interpreter": interpreter,
            **(outputs or {}),
        }
        self._last_time = now
        self._last_captured = captured
        self._last_processed = self._processed
        self._last_faces = self._faces
        return snapshot


def delivery_figures(publishers, events_published: int, **more: int) -> dict[str, object]:
    """What became of the events, for the `stats` payload: `events_published` (made by the loop since start),
    `events_dropped` (cumulative: events any output had to drop, e.g. MQTT outage-buffer overflow or a
    stdout nobody reads), per output in `events_dropped_by_output`, and `mqtt_buffered` (events waiting in
    the MQTT outage buffer now; None when MQTT is not an output). `more`: further counters, as given."""
    by_output = {getattr(p, "name", "publisher"): int(getattr(p, "dropped_events", 0)) for p in publishers}
    buffered = [getattr(p, "buffered_events", 0) for p in publishers if getattr(p, "name", "") == "mqtt"]
    return {
        "events_published": int(events_published),
        "events_dropped": sum(by_output.values()),
        "events_dropped_by_output": by_output,
        "mqtt_buffered": int(buffered[0]) if buffered else None,
        **{key: int(value) for key, value in more.items()},
    }


def format_stats(snapshot: dict) -> str:
    """One log line: the figures an operator looks at first."""
    total = snapshot["latency_ms"]["total"]
    temp = snapshot["cpu_temp_c"]
    return (
        f"stats: {snapshot['input_fps']} fps in, {snapshot['processed_fps']} fps processed, "
        f"{snapshot['dropped_frames']} dropped, {snapshot['faces_per_s']} faces/s, "
        f"total p50/p95 {total['p50']}/{total['p95']} ms, rss {snapshot['rss_mb']} MB, "
        f"cpu {'n/a' if temp is None else f'{temp} C'}, reconnects {snapshot['reconnects']}"
        + (f", events dropped {snapshot['events_dropped']}" if "events_dropped" in snapshot else "")
        + (
            f", mqtt buffered {snapshot['mqtt_buffered']}"
            if snapshot.get("mqtt_buffered") is not None
            else ""
        )
    )
