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
from pathlib import Path

import cv2
import numpy as np

from edge.capture.base import Frame, Source, SourceError
from edge.capture.demo import DEFAULT_FPS, DEMO_URI, DemoSource
from edge.capture.imagefile import (
    ImageRefused,
    ImageUnreadable,
    check_pixels,
    header_size,
    image_format,
    load_image,
)
from edge.config import SourceConfig
from edge.files import path_problem

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm"}
)
# Files whose content is an image but which FFmpeg plays as a video: a raw MJPEG stream is JPEGs end to end.
MJPEG_EXTENSIONS = frozenset({".mjpg", ".mjpeg"})
# Text FFmpeg reads as media on purpose: an RTP session description, an HLS playlist, raw YUV4MPEG frames.
_MEDIA_TEXT = (b"v=0", b"#EXTM3U", b"YUV4MPEG2")
_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https)://", re.IGNORECASE)
_PICAMERA = re.compile(r"^picamera2(?::(\d+))?$")
# Network streams: give up on a dead connection instead of blocking the capture thread for FFmpeg's 30 s.
_STREAM_TIMEOUT_MS = 5000


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


SKIPS_LOGGED = 10  # a folder's first skips get a line each; the rest only count in the summary at its end


class ImageFolderSource(Source):
    """The images of a folder, sorted by name: files named as images, and files whose content is one
    (`.jfif`, `.gif`, no extension). Other files are left out (said once); unreadable images are skipped and
    counted. A folder removed mid-run ends the run with an error, not with a skip for every file left."""

    live = False

    def __init__(self, folder: str | os.PathLike, limits: tuple[float, float] = _DEFAULT_LIMITS):
        self.folder = Path(folder)
        self.limits = limits
        self.source_id = str(self.folder)
        try:
            entries = sorted(self.folder.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            raise SourceError(f"source {self.folder}: cannot list the folder: {exc.strerror}") from None
        self.paths: list[Path] = []
        left_out: list[str] = []
        for path in entries:
            if path.name.startswith(".") or path_problem(path) is not None:
                continue  # hidden files, sub-folders, devices
            if path.suffix.lower() in IMAGE_EXTENSIONS or image_format(_head(path, 16)) is not None:
                self.paths.append(path)
            else:
                left_out.append(path.name)
        if not self.paths:
            raise SourceError(
                f"source {self.folder}: the folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}, "
                "or any file that is a PNG, JPEG, GIF, BMP, WebP, TIFF or PNM)"
            )
        if left_out:
            log.info("source %s: %d files are not images and are left out (%s%s)", self.folder, len(left_out),
                     ", ".join(left_out[:3]), ", ..." if len(left_out) > 3 else "")  # fmt: skip
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
                if isinstance(exc, ImageUnreadable) and path_problem(self.folder, "folder") is not None:
                    raise SourceError(
                        f"source {self.folder}: the folder was removed or became unreadable after "
                        f"{self._next - 1} of {len(self.paths)} images"
                    ) from None
                self._skip(path, exc)
                continue
            frame = Frame(image, self._index, time.time(), path.name)
            self._index += 1
            return frame
        if self._next == len(self.paths) and self.skipped:  # once, at the end: the total, by reason
            self._next += 1
            reasons = ", ".join(f"{n} {kind}" for kind, n in self.skip_reasons.most_common())
            summary = f"skipped {len(self.skipped)} of {len(self.paths)} images in {self.folder}: {reasons}"
            if self._index == 0:  # not one image could be used: the run did nothing
                raise SourceError(f"source {self.folder}: no image could be used ({summary})")
            log.warning("%s", summary)
        return None

    def _skip(self, path: Path, exc: ImageRefused) -> None:
        self.skipped.append(path.name)
        self.skip_reasons[_reason_kind(str(exc))] += 1
        if len(self.skipped) <= SKIPS_LOGGED:
            more = (
                " (further skips are counted in the summary at the end)"
                if len(self.skipped) == SKIPS_LOGGED
                else ""
            )
            log.warning("skipping %s: %s%s", path, exc, more)


def _head(path: Path, size: int = 512) -> bytes:
    """The first bytes of a file; b"" when it cannot be read (the reader of the whole file says why)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _reason_kind(reason: str) -> str:
    """The kind of a refusal, for the total: the limit's key, or the reason without its numbers."""
    for key in ("max_image_mb", "max_image_mpx"):
        if key in reason:
            return f"over source.{key}"
    return re.sub(r" \(.*\)$", "", reason)


class VideoCaptureSource(Source):
    """Anything cv2.VideoCapture reads: a V4L2 device (path or index), a video file, an RTSP/HTTP stream.

    Frames over `max_mpx` megapixels (source.max_image_mpx) are refused: the size the stream announces
    before the first read, then every frame's. A video file must give its first frame at open (else it is
    no video), and one that ends well short of the frames its header announces is reported as damaged."""

    # A file's announced frame count may be estimated from its duration: a shortfall this small is no damage.
    SHORT_TOLERANCE = 2

    def __init__(
        self,
        target: str | int,
        live: bool,
        width=None,
        height=None,
        fps=None,
        api=cv2.CAP_ANY,
        max_mpx: float | None = None,
    ):
        self.source_id = str(target)
        self.live = live
        self.max_mpx = max_mpx
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
        self._first: Frame | None = None
        announced = (
            int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self._announced_frames = self.frame_count
        try:
            if all(announced):
                self._check_size(*announced, "announces frames of")
            if not live:  # a file that cannot give one frame is no video: say so now, not "0 events"
                self._first = self._read()
                if self._first is None:
                    raise SourceError(f"source {target}: no frame could be decoded (damaged, or not a video)")
        except SourceError:
            self._capture.release()
            raise

    @property
    def frame_rate(self) -> float | None:
        """The frame rate the container announces (video files), or None when it gives none usable."""
        rate = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return rate if 0.1 <= rate <= 1000 else None

    @property
    def frame_count(self) -> int:
        """Frames the container says it holds (video files); 0 when unknown."""
        return max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _check_size(self, width: int, height: int, what: str) -> None:
        if self.max_mpx is None:
            return
        try:
            check_pixels(width, height, self.max_mpx)
        except ImageRefused as exc:
            raise SourceError(f"source {self.source_id}: {what} {exc}") from None

    def _read(self) -> Frame | None:
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        self._check_size(image.shape[1], image.shape[0], "gave a frame of")
        frame = Frame(image, self._index, time.time(), None)
        self._index += 1
        return frame

    def read(self) -> Frame | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        frame = self._read()
        if frame is None:
            if self.live:
                raise SourceError(f"source {self.source_id}: stopped delivering frames")
            if self._index < self._announced_frames - self.SHORT_TOLERANCE:
                raise SourceError(
                    f"source {self.source_id}: the video ended after {self._index} of the "
                    f"{self._announced_frames} frames its header announces (truncated or damaged)"
                )
        return frame

    def close(self) -> None:
        self._capture.release()


def is_live_uri(uri: str) -> bool:
    """Whether open_source treats `uri` as live (camera, device, stream): one that may come back later,
    so failing to open it means "retry", not "wrong path". Same rules as open_source, in the same order."""
    uri = str(uri).strip()
    return bool(_PICAMERA.match(uri) or uri.isdigit() or _URL.match(uri) or uri.startswith("/dev/"))


def open_source(
    uri: str, width=None, height=None, fps=None, image_limits=_DEFAULT_LIMITS, realtime: bool = False
) -> Source:
    """Open a frame source from its URI (see the module map in README): camera, device, stream, file, folder,
    or `demo` (the bundled samples as a camera, edge/capture/demo.py). `image_limits`: (max MB, max Mpx) of
    an image file, checked before it is decoded; the Mpx limit holds for video frames too. A file is an
    image or a video by its content, not its name. `realtime`: a file is read at its own pace (realtime_pace)."""
    uri = str(uri).strip()
    if not uri:
        raise SourceError(
            "source: empty URI (use picamera2, /dev/video0, 0, a file, a folder, a URL, or demo)"
        )
    if uri == DEMO_URI:
        return DemoSource(fps, image_limits)
    source = _open(uri, width, height, fps, image_limits)
    if realtime and not source.live:
        source.frame_interval = realtime_interval(source, fps)
    return source


# A picture of a file or folder played in real time stays on screen this long: photos have no frame rate.
PICTURE_S = 1.0


def realtime_interval(source: Source, fps: float | None) -> float:
    """Seconds between a file's frames in real time: a video's own frame rate (source.fps when its header
    gives none), PICTURE_S for images."""
    if isinstance(source, VideoCaptureSource):
        rate = source.frame_rate or fps or DEFAULT_FPS
        return 1.0 / rate
    return PICTURE_S


def _open(uri: str, width, height, fps, image_limits) -> Source:
    max_mpx = image_limits[1]
    match = _PICAMERA.match(uri)
    if match:
        from edge.capture.picamera import Picamera2Source  # imports picamera2 only when chosen

        return Picamera2Source(int(match.group(1) or 0), width, height, fps)
    if uri.isdigit():
        return VideoCaptureSource(int(uri), True, width, height, fps, api=_v4l2_api(), max_mpx=max_mpx)
    if _URL.match(uri):
        return VideoCaptureSource(uri, True, width, height, fps, api=cv2.CAP_FFMPEG, max_mpx=max_mpx)
    path = Path(uri).expanduser()
    if uri.startswith("/dev/"):
        problem = path_problem(path)
        if problem is not None and problem.endswith("does not exist"):
            raise SourceError(f"camera {uri}: no such device (is the camera connected?)")
        if problem is not None and "not a regular file" not in problem:  # a device node is what it should be
            raise SourceError(f"camera {problem}")
        return VideoCaptureSource(str(path), True, width, height, fps, api=_v4l2_api(), max_mpx=max_mpx)
    problem = path_problem(path)
    if problem is not None and problem.endswith("does not exist"):
        raise SourceError(f"source {uri}: no such file or folder")
    if problem is not None and problem.endswith("is a folder, not a file"):
        return ImageFolderSource(path, image_limits)
    if problem is not None and "not a regular file" in problem:  # a FIFO would hold the open until written
        raise SourceError(f"source {problem}; for a camera give /dev/videoN, for a stream its URL")
    if problem is not None:
        raise SourceError(f"source {problem}")
    return _open_file(path, uri, image_limits)


def _open_file(path: Path, uri: str, image_limits: tuple[float, float]) -> Source:
    """An image or a video file, told apart by what the file holds: FFmpeg decodes an image under any name
    (a 12000x12000 PNG called .dat) past every image limit, and plays a .txt file as a video of its text."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
            kind = image_format(head)
            if kind is not None and path.suffix.lower() in MJPEG_EXTENSIONS:
                try:  # a raw MJPEG stream: its first frame's header says the size of all
                    check_pixels(*header_size(handle), image_limits[1])
                except ImageRefused as exc:
                    raise SourceError(f"source {path}: not used: {exc}") from None
                return VideoCaptureSource(str(path), False, max_mpx=image_limits[1])
    except PermissionError:
        raise SourceError(f"source {uri}: permission denied") from None
    except OSError as exc:
        raise SourceError(f"source {uri}: cannot be read: {exc.strerror or exc}") from None
    if kind is not None or path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFileSource(path, image_limits)
    if not head:
        raise SourceError(f"source {uri}: an empty file")
    if _is_text(head) and not head.lstrip().startswith(_MEDIA_TEXT):
        raise SourceError(f"source {uri}: cannot be opened: it is a text file, not a video or an image")
    return VideoCaptureSource(str(path), False, max_mpx=image_limits[1])


def _is_text(head: bytes) -> bool:
    """Whether a file's first bytes are text (UTF-8, no NUL, printable): no video container starts so."""
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut in two at the end of the sample
            return False
        text = head[: exc.start].decode("utf-8")
    return sum(ch.isprintable() or ch in "\t\r\n\f\v" for ch in text) >= 0.95 * max(1, len(text))


def _v4l2_api() -> int:
    # On Linux, ask for V4L2 directly: CAP_ANY may try GStreamer first and take seconds to fail.
    return cv2.CAP_V4L2 if os.name == "posix" and Path("/dev").exists() else cv2.CAP_ANY
