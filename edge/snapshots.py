"""debug.snapshot_dir: annotated JPEGs of published frames, for tuning on the bench. Opt-in.

Bounded, because a forgotten debug setting must not fill a Pi's SD card over months: only the newest
`debug.snapshot_limit` files are kept, across restarts too (names start with the UTC time, so they sort
oldest first). A write that fails (folder removed, card full, read-only under systemd) turns snapshots off
with one error line; it never stops the daemon.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import cv2
import numpy as np

from edge.files import write_bytes_atomic

log = logging.getLogger(__name__)

PATTERN = "snapshot_*.jpg"
_GREEN = (0, 255, 0)


class SnapshotWriter:
    def __init__(self, directory: str, limit: int):
        self.directory = Path(directory)
        self.limit = limit
        self.enabled = True
        self.written = 0
        self._kept: collections.deque[Path] = collections.deque(
            sorted(self.directory.glob(PATTERN)) if self.directory.is_dir() else ()
        )

    def save(self, image: np.ndarray, event: dict) -> None:
        if not self.enabled:
            return
        annotated = image.copy()
        for face in event.get("faces", []):
            x, y, w, h = face["box"]
            cv2.rectangle(annotated, (x, y), (x + w, y + h), _GREEN, 2)
            cv2.putText(
                annotated, face["emotion"], (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _GREEN, 1
            )
        ok, encoded = cv2.imencode(".jpg", annotated)
        if not ok:
            return
        stamp = event["timestamp"].replace(":", "").replace("-", "")  # 20261122T041200.123Z
        path = self.directory / f"snapshot_{stamp}_{event['frame_index']:08d}.jpg"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, encoded.tobytes())
            self._kept.append(path)
            while len(self._kept) > self.limit:
                self._kept.popleft().unlink(missing_ok=True)
        except OSError as exc:
            self.enabled = False
            log.error("debug.snapshot_dir: cannot write %s (%s); snapshots are off until restart", path, exc)
            return
        self.written += 1
