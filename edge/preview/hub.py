"""Between the processing loop and the viewers: the loop hands over, a capped-rate encoder thread draws.

    processing loop --offer()--> newest-frame slot --encoder thread (<= preview.max_fps)--> latest JPEG
                                                                         viewers wait for the next one

Nobody watching costs the loop one attribute read per frame (and a deque append per published event, for
the page's event list): nothing is copied, drawn or encoded. While someone watches, the loop only drops a
reference to the frame and its faces into a one-place slot; drawing and JPEG encoding happen in the
encoder thread at most `max_fps` times a second. A frame replaced in the slot before the encoder took it is
counted (`frames_skipped`), as is every JPEG a slow viewer missed (`viewer_drops`): the loop never waits.
"""

from __future__ import annotations

import collections
import logging
import math
import statistics
import threading
import time

from edge.notices import read_notices
from edge.preview import overlay
from edge.stats import cpu_temp_c, rss_mb

log = logging.getLogger(__name__)

AWAY_AFTER_S = 2.0  # no frame this long: the page says the camera is away, the stream shows it
STATS_EVERY_S = 1.0  # the page's figures are refreshed this often, and only while someone looks
STATUS_WATCH_S = 3.0  # a status request counts as someone looking for this long
EVENTS_KEPT = 20


def _brief(event: dict) -> dict:
    """The part of an event the page lists."""
    faces = [
        {"track_id": f["track_id"], "emotion": f["emotion"], "confidence": round(float(f["confidence"]), 3)}
        for f in event.get("faces", [])
    ]
    return {"timestamp": event.get("timestamp"), "frame_index": event.get("frame_index"), "faces": faces,
            "changes": event.get("changes", [])}  # fmt: skip


def _mqtt_state(publisher) -> dict:
    return {
        "address": getattr(publisher, "address", None),
        "connected": bool(getattr(publisher, "connected", False)),
        "buffered": getattr(publisher, "buffered_events", 0),
        "reconnects": publisher.reconnects,
    }


class PreviewHub:
    def __init__(self, cfg, source_id: str, labels: list[str], publishers=(), clock=time.monotonic):
        self.max_fps = float(cfg.max_fps)
        self.max_clients = int(cfg.max_clients)
        self.source_id = source_id
        self.device_id = ""
        self._labels = list(labels)
        self._publishers = list(publishers)
        self._clock = clock
        self._lock = threading.Lock()
        self._slot_ready = threading.Condition(self._lock)  # the encoder waits here for a frame
        self._jpeg_ready = threading.Condition()  # viewers wait here for the next JPEG
        self._watched = threading.Event()  # set while at least one viewer streams
        self._stop = threading.Event()
        self._slot: tuple | None = None
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._events: collections.deque[dict] = collections.deque(maxlen=EVENTS_KEPT)
        self._viewers = 0
        self._status_seen = -math.inf
        self._last_frame_at: float | None = None
        self._frame_width: int | None = None
        self._stats: dict | None = None
        self._stats_at = -math.inf
        self._stats_base: tuple[float, int, int] | None = None
        self._draw_ms: collections.deque[float] = collections.deque(maxlen=100)
        self.frames_drawn = 0
        self.frames_skipped = 0
        self.viewer_drops = 0
        self.notices = read_notices()  # the image's settings step, read once: it runs before the daemon
        self._thread = threading.Thread(target=self._encode_loop, name="preview-encoder", daemon=True)

    def start(self) -> PreviewHub:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._watched.set()
        with self._slot_ready:
            self._slot_ready.notify_all()
        with self._jpeg_ready:
            self._jpeg_ready.notify_all()
        self._thread.join(timeout=0.5)

    # --- the processing loop's side: cheap, never blocks on a viewer -------------------------------------------

    def offer(self, frame, result, stats, capture, event: dict | None = None) -> None:
        """One processed frame (its ProcessResult), the loop's StatsCollector, the capture thread and the
        event edge/emit.py made of the frame (None when it made none)."""
        now = self._clock()
        self._last_frame_at = now
        if event is not None:
            with self._lock:
                self._events.append(event)
        if self._viewers:
            faces = [
                {
                    "track_id": f.track_id,
                    "box": f.box,
                    "emotion": self._labels[f.label_index],
                    "confidence": f.confidence,
                }
                for f in result.faces
                if f.missing == 0  # a face not found in this frame has no box in it
            ]
            with self._slot_ready:
                if self._slot is not None:
                    self.frames_skipped += 1
                self._slot = (frame.image, faces)
                self._slot_ready.notify()
        if (
            self._viewers or now - self._status_seen < STATUS_WATCH_S
        ) and now - self._stats_at >= STATS_EVERY_S:
            self._stats, self._stats_at = self._snapshot(now, stats, capture), now

    def _snapshot(self, now: float, stats, capture) -> dict:
        processed, captured = stats.processed, capture.captured
        # Rates since the previous snapshot; the first covers the run so far.
        base = self._stats_base or (stats.started, 0, 0)
        self._stats_base = (now, processed, captured)
        fps_in = fps_out = None
        if now > base[0]:
            fps_out = round((processed - base[1]) / (now - base[0]), 1)
            fps_in = round((captured - base[2]) / (now - base[0]), 1)
        return {
            "uptime_s": round(now - stats.started),
            "input_fps": fps_in,
            "processed_fps": fps_out,
            "dropped_frames": int(capture.dropped),
            "latency_ms": stats.latency(),
            "cpu_temp_c": cpu_temp_c(),
            "rss_mb": rss_mb(),
        }

    # --- the encoder thread ------------------------------------------------------------------------------------

    def _encode_loop(self) -> None:
        period = 1.0 / self.max_fps
        while not self._stop.is_set():
            if not self._watched.wait(timeout=1.0):
                continue
            started = self._clock()
            with self._slot_ready:
                if self._slot is None:
                    self._slot_ready.wait(timeout=1.0)
                item, self._slot = self._slot, None
            if self._stop.is_set():
                break
            try:
                jpeg = self._render(item) if item is not None else self._away_frame()
            except Exception:  # a drawing bug must not end the preview, let alone the daemon
                log.exception("preview: drawing a frame failed")
                jpeg = None
            if jpeg is not None:
                self._publish(jpeg, (self._clock() - started) * 1000)
            self._stop.wait(max(0.0, started + period - self._clock()))

    def _render(self, item: tuple) -> bytes | None:
        image, faces = item
        drawn = overlay.draw(image, faces)
        if drawn is None:
            return None
        self._frame_width = drawn.shape[1]
        return overlay.encode_jpeg(drawn)

    def _away_frame(self) -> bytes | None:
        """While the camera is away, the stream says so (at most once a second: the wait above)."""
        camera = self.camera()
        if camera["state"] == "live":
            return None
        width = self._frame_width or 640
        return overlay.encode_jpeg(overlay.placeholder(camera["text"], width, width * 9 // 16))

    def _publish(self, jpeg: bytes, took_ms: float) -> None:
        with self._jpeg_ready:
            self._jpeg, self._jpeg_seq = jpeg, self._jpeg_seq + 1
            self.frames_drawn += 1
            self._draw_ms.append(took_ms)
            self._jpeg_ready.notify_all()

    # --- the viewers' side (HTTP handler threads) -----------------------------------------------------------------

    def add_viewer(self) -> int | None:
        """Take a viewer place; returns the JPEG sequence number to wait beyond, or None when all are taken."""
        with self._lock:
            if self._viewers >= self.max_clients:
                return None
            self._viewers += 1
            self._watched.set()
        with self._jpeg_ready:
            return self._jpeg_seq  # a new viewer waits for a fresh frame, never an old one

    def remove_viewer(self) -> None:
        with self._lock:
            self._viewers -= 1
            if self._viewers == 0:  # no frame is kept for nobody
                self._watched.clear()
                self._slot = None

    def next_jpeg(self, after: int, timeout: float) -> tuple[int, bytes | None] | None:
        """The first JPEG newer than `after` (seq, bytes); (after, None) on timeout; None once stopped."""
        with self._jpeg_ready:
            self._jpeg_ready.wait_for(lambda: self._jpeg_seq > after or self._stop.is_set(), timeout)
            if self._stop.is_set():
                return None
            if self._jpeg_seq <= after:
                return after, None
            if self._jpeg_seq > after + 1:
                self.viewer_drops += self._jpeg_seq - after - 1
            return self._jpeg_seq, self._jpeg

    def camera(self) -> dict:
        last = self._last_frame_at
        if last is None:
            return {"state": "waiting", "text": f"waiting for camera ({self.source_id})"}
        age = self._clock() - last
        if age > AWAY_AFTER_S:
            return {"state": "away", "text": f"no frames for {age:.0f} s: camera away? ({self.source_id})"}
        return {"state": "live", "text": f"live: {self.source_id}"}

    def status(self) -> dict:
        """What the page's status request returns (and what makes the loop refresh the figures)."""
        self._status_seen = self._clock()
        with self._lock:
            events = [_brief(e) for e in reversed(self._events)]
        draw_ms = list(self._draw_ms)
        return {
            "device_id": self.device_id,
            "camera": self.camera(),
            "stats": self._stats,
            "outputs": [p.name for p in self._publishers],
            "mqtt": [_mqtt_state(p) for p in self._publishers if p.name == "mqtt"],
            "preview": {
                "viewers": self._viewers,
                "max_clients": self.max_clients,
                "max_fps": self.max_fps,
                "frames_drawn": self.frames_drawn,
                "frames_skipped": self.frames_skipped,
                "viewer_drops": self.viewer_drops,
                "draw_ms_p50": round(statistics.median(draw_ms), 2) if draw_ms else None,
            },
            "events": events,
            "notices": self.notices,
        }
