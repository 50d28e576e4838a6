"""Frame sources behind one small interface: `open_source(uri)` -> Source with `.read()` and `.close()`.

A source is either live (a camera or a network stream: frames keep coming, old ones are worthless) or
finite (a video file, an image, a folder of photos: every frame matters and the source ends). The capture
thread treats the two differently, so each source says which it is.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.capture.imagefile import ImageRefused, load_image
from edge.config import SourceConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm"}
)
_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https)://", re.IGNORECASE)
_PICAMERA = re.compile(r"^picamera2(?::(\d+))?$")
# Network streams: give up on a dead connection instead of blocking the capture thread for FFmpeg's 30 s.
_STREAM_TIMEOUT_MS = 5000


class SourceError(RuntimeError):
    """A source cannot be opened or has failed; the message names the source and the reason."""


@dataclass
class Frame:
    image: np.ndarray  # as decoded: BGR, gray, or BGRA
    index: int  # 0-based, in order of the source
    timestamp: float  # time.time() at capture
    file: str | None = None  # file name (basename) for image files/folders, else None


class Source:
    """One open frame source. `read()` returns the next Frame, or None when a finite source has ended."""

    source_id: str = ""
    live: bool = False

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The config's defaults, for callers that have no config (tests, scripts).
_DEFAULT_LIMITS = (SourceConfig().max_image_mb, SourceConfig().max_image_mpx)


def read_image(path: str | os.PathLike, limits: tuple[float, float] = _DEFAULT_LIMITS) -> np.ndarray | None:
    """Decode an image file; None when it is not a readable image or over the size limits
    (source.max_image_mb, source.max_image_mpx). Works for non-ASCII paths too."""
    try:
        return load_image(path, *limits)
    except ImageRefused:
        return None


class ImageFileSource(Source):
    """One photo: a single frame, then the end."""

    live = False

    def __init__(self, path: str | os.PathLike, limits: tuple[float, float] = _DEFAULT_LIMITS):
        self.path = Path(path)
        self.source_id = str(self.path)
        try:
            self._image = load_image(self.path, *limits)
        except ImageRefused as exc:
            raise SourceError(f"source {self.path}: not used: {exc}") from None
        self._done = False

    def read(self) -> Frame | None:
        if self._done:
            return None
        self._done = True
        return Frame(self._image, 0, time.time(), self.path.name)


class ImageFolderSource(Source):
    """The images of a folder, sorted by name. Other files are ignored; unreadable images are logged and skipped."""

    live = False

    def __init__(self, folder: str | os.PathLike, limits: tuple[float, float] = _DEFAULT_LIMITS):
        self.folder = Path(folder)
        self.limits = limits
        self.source_id = str(self.folder)
        try:
            entries = sorted(self.folder.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            raise SourceError(f"source {self.folder}: cannot list the folder: {exc.strerror}") from None
        self.paths = [
            p
            for p in entries
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        ]
        if not self.paths:
            raise SourceError(
                f"source {self.folder}: the folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        self._next = 0
        self._index = 0
        self.skipped: list[str] = []
        self.skip_reasons: collections.Counter[str] = collections.Counter()

    def read(self) -> Frame | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                image = load_image(path, *self.limits)
            except ImageRefused as exc:
                log.warning("skipping %s: %s", path, exc)
                self.skipped.append(path.name)
                self.skip_reasons[_reason_kind(str(exc))] += 1
                continue
            frame = Frame(image, self._index, time.time(), path.name)
            self._index += 1
            return frame
        if self._next == len(self.paths) and self.skipped:  # once, at the end: the total, by reason
            self._next += 1
            reasons = ", ".join(f"{n} {kind}" for kind, n in self.skip_reasons.most_common())
            log.warning("skipped %d of %d images in %s: %s", len(self.skipped), len(self.paths),
                        self.folder, reasons)  # fmt: skip
        return None


def _reason_kind(reason: str) -> str:
    """The kind of a refusal, for the total: the limit's key, or the reason without its numbers."""
    for key in ("max_image_mb", "max_image_mpx"):
        if key in reason:
            return f"over source.{key}"
    return re.sub(r" \(.*\)$", "", reason)


class VideoCaptureSource(Source):
    """Anything cv2.VideoCapture reads: a V4L2 device (path or index), a video file, an RTSP/HTTP stream."""

    def __init__(self, target: str | int, live: bool, width=None, height=None, fps=None, api=cv2.CAP_ANY):
        self.source_id = str(target)
        self.live = live
        params: list[int] = []
        if live and isinstance(target, str) and _URL.match(target):
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                _STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                _STREAM_TIMEOUT_MS,
            ]
        self._capture = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
        if not self._capture.isOpened():
            self._capture.release()
            kind = "camera" if live and not (isinstance(target, str) and _URL.match(target)) else "source"
            raise SourceError(f"{kind} {target}: cannot be opened by OpenCV")
        if live:
            # Small capture buffer: we want the newest frame, not a backlog (ignored by drivers that lack it).
            self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if width:
                self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
            if height:
                self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
            if fps:
                self._capture.set(cv2.CAP_PROP_FPS, float(fps))
        self._index = 0

    @property
    def frame_count(self) -> int:
        """Frames the container says it holds (video files); 0 when unknown."""
        return max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def read(self) -> Frame | None:
        ok, image = self._capture.read()
        if not ok or image is None:
            if self.live:
                raise SourceError(f"source {self.source_id}: stopped delivering frames")
            return None
        frame = Frame(image, self._index, time.time(), None)
        self._index += 1
        return frame

    def close(self) -> None:
        self._capture.release()


def is_live_uri(uri: str) -> bool:
    """Whether open_source treats `uri` as live (camera, device, stream): one that may come back later,
    so failing to open it means "retry", not "wrong path". Same rules as open_source, in the same order."""
    uri = str(uri).strip()
    return bool(_PICAMERA.match(uri) or uri.isdigit() or _URL.match(uri) or uri.startswith("/dev/"))


def open_source(uri: str, width=None, height=None, fps=None, image_limits=_DEFAULT_LIMITS) -> Source:
    """Open a frame source from its URI (see the module map in README): camera, device, stream, file, folder.
    `image_limits`: (max MB, max Mpx) of an image file, checked before it is decoded."""
    uri = str(uri).strip()
    if not uri:
        raise SourceError("source: empty URI (use picamera2, /dev/video0, 0, a file, a folder, or a URL)")
    match = _PICAMERA.match(uri)
    if match:
        from edge.capture.picamera import Picamera2Source  # imports picamera2 only when chosen

        return Picamera2Source(int(match.group(1) or 0), width, height, fps)
    if uri.isdigit():
        return VideoCaptureSource(int(uri), True, width, height, fps, api=_v4l2_api())
    if _URL.match(uri):
        return VideoCaptureSource(uri, True, width, height, fps, api=cv2.CAP_FFMPEG)
    path = Path(uri).expanduser()
    if uri.startswith("/dev/"):
        if not path.exists():
            raise SourceError(f"camera {uri}: no such device (is the camera connected?)")
        return VideoCaptureSource(str(path), True, width, height, fps, api=_v4l2_api())
    if not path.exists():
        raise SourceError(f"source {uri}: no such file or folder")
    if path.is_dir():
        return ImageFolderSource(path, image_limits)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFileSource(path, image_limits)
    if not os.access(path, os.R_OK):
        raise SourceError(f"source {uri}: permission denied")
    return VideoCaptureSource(str(path), False)


def _v4l2_api() -> int:
    # On Linux, ask for V4L2 directly: CAP_ANY may try GStreamer first and take seconds to fail.
    return cv2.CAP_V4L2 if os.name == "posix" and Path("/dev").exists() else cv2.CAP_ANY
