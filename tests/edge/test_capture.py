"""Frame sources and the capture thread, with real photos and a real video file (no camera needed)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.capture import (
    CaptureThread,
    Frame,
    ImageFolderSource,
    Source,
    SourceError,
    VideoCaptureSource,
    is_live_uri,
    open_source,
    reusing_factory,
)
from testbed import facesdata
from testbed.mosquitto import wait_until


def test_folder_source_sorted_names_skipping_non_images(tmp_path, caplog):
    expected = facesdata.write_photo_folder(tmp_path)
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFolderSource) and not source.live
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert [f.file for f in frames] == sorted(expected)  # broken.jpg skipped, notes.txt ignored
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert source.skipped == ["broken.jpg"]
    assert "broken.jpg" in caplog.text
    assert frames[0].image.shape == (480, 640, 3)


def test_single_image_source_one_frame_then_end(tmp_path):
    facesdata.write_photo_folder(tmp_path)
    source = open_source(str(tmp_path / "b_two.png"))
    frame = source.read()
    assert frame.file == "b_two.png" and frame.index == 0 and frame.image.shape == (480, 640, 3)
    assert source.read() is None


def test_grayscale_and_16bit_images_are_kept_as_decoded(tmp_path):
    import cv2

    gray = np.full((30, 40), 7, np.uint8)
    deep = np.full((30, 40), 4000, np.uint16)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    frames = {f.file: f for f in iter(open_source(str(tmp_path)).read, None)}
    assert frames["gray.png"].image.shape == (30, 40)
    assert frames["deep.png"].image.dtype == np.uint16


def test_video_file_source_gives_every_frame_then_ends(tmp_path):
    path = facesdata.write_face_video(tmp_path / "clip.avi", n_frames=12)
    source = open_source(str(path))
    assert isinstance(source, VideoCaptureSource) and not source.live
    frames = list(iter(source.read, None))
    source.close()
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert all(f.file is None and f.image.shape == (480, 640, 3) for f in frames)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty URI"),
        ("no/such/place", "no such file or folder"),
        ("/dev/video987", "no such device"),
    ],
)
def test_bad_uris_raise_clear_errors(uri, message):
    with pytest.raises(SourceError, match=message):
        open_source(uri)


@pytest.mark.parametrize(
    ("uri", "live"),
    [
        ("picamera2", True),
        ("picamera2:1", True),
        ("0", True),
        ("/dev/video0", True),
        ("/dev/v4l/by-id/usb-Logitech_C920-video-index0", True),  # the stable name for a USB webcam
        ("/dev/v4l/by-path/platform-xhci-hcd.0-usb-0:1:1.0-video-index0", True),
        ("rtsp://cam.local/stream", True),
        ("RTSP://cam.local/stream", True),
        ("rtmp://cam.local/live", True),
        ("https://cam.local/mjpeg", True),
        ("clip.avi", False),
        ("photos/", False),
        ("/home/pi/photos", False),
    ],
)
def test_live_uris_are_the_ones_open_source_treats_as_live(uri, live):
    """A live source that is missing at start is retried, a file is an error: both must agree."""
    assert is_live_uri(uri) is live


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(SourceError, match="not a readable image"):
        open_source(str(tmp_path / "bad.jpg"))
    (tmp_path / "movie.avi").write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot be opened"):
        open_source(str(tmp_path / "movie.avi"))


def test_picamera2_missing_is_a_clear_error():
    # picamera2 only exists on a Pi; elsewhere choosing it must fail with advice, not a traceback
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="picamera2 module is not installed"):
            open_source("picamera2")
    else:
        pytest.skip("picamera2 is installed here")


# --- capture thread --------------------------------------------------------------------------------------
class FakeCamera(Source):
    """A camera double: produces frames as fast as asked, can be told to fail after some frames."""

    live = True

    def __init__(self, fail_after: int | None = None, delay: float = 0.0):
        self.source_id = "fake-camera"
        self.fail_after = fail_after
        self.delay = delay
        self.index = 0
        self.closed = False

    def read(self):
        if self.fail_after is not None and self.index >= self.fail_after:
            raise SourceError("fake-camera: unplugged")
        if self.delay:
            time.sleep(self.delay)
        frame = Frame(np.full((4, 4), self.index % 256, np.uint8), self.index, time.time())
        self.index += 1
        return frame

    def close(self):
        self.closed = True


def test_live_source_keeps_newest_frame_and_counts_drops():
    stop = threading.Event()
    camera = FakeCamera(delay=0.001)
    capture = CaptureThread(lambda: camera, stop).start()
    try:
        first = capture.get(timeout=2)
        time.sleep(0.2)  # a slow consumer: the camera keeps producing meanwhile
        second = capture.get(timeout=2)
    finally:
        stop.set()
        capture.join(2)
    assert first is not None and second is not None
    assert second.index > first.index + 1  # stale frames were skipped, the consumer got a recent one
    assert capture.dropped > 0
    # every captured frame was either delivered, dropped, or is the one still queued
    assert capture.captured - capture.dropped - 2 in (0, 1)
    assert not capture.is_alive() and camera.closed


def test_finite_source_never_drops(tmp_path):
    path = facesdata.write_face_video(tmp_path / "clip.avi", n_frames=10)
    stop = threading.Event()
    capture = CaptureThread(lambda: open_source(str(path)), stop).start()
    indexes = []
    while not capture.finished:
        frame = capture.get(timeout=2)
        if frame is not None:
            time.sleep(0.02)  # slower than the reader: a live policy would drop here
            indexes.append(frame.index)
    capture.join(2)
    assert indexes == list(range(10))
    assert capture.dropped == 0 and capture.captured == 10


def test_failing_live_source_is_reopened_with_backoff():
    stop = threading.Event()
    opened = []

    def factory():
        if len(opened) == 1:  # the first reopen attempt fails too: backoff must grow, not give up
            opened.append(None)
            raise SourceError("fake-camera: not there yet")
        camera = FakeCamera(fail_after=3)
        opened.append(camera)
        return camera

    capture = CaptureThread(factory, stop, reopen_backoff=(0.05, 0.2)).start()
    seen = 0
    deadline = time.monotonic() + 5
    while capture.reopens < 2 and time.monotonic() < deadline:
        if capture.get(timeout=0.1) is not None:
            seen += 1
    stop.set()
    capture.join(2)
    assert capture.reopens >= 2
    assert seen >= 2
    assert capture.failures >= 3  # two read failures and one failed open
    assert all(camera.closed for camera in opened if camera is not None)


def test_stop_is_prompt_while_waiting_for_a_dead_camera():
    stop = threading.Event()

    def never_there():
        raise SourceError("fake-camera: missing")

    capture = CaptureThread(never_there, stop, reopen_backoff=(10.0, 30.0)).start()
    assert wait_until(lambda: capture.failures >= 1)  # the first open failed: now in its 10 s backoff
    started = time.monotonic()
    stop.set()
    assert capture.get() is None  # no timeout given: returns once stop is set
    capture.join(2)
    assert not capture.is_alive()
    assert time.monotonic() - started < 1.0


def test_reusing_factory_hands_out_the_open_source_first(tmp_path):
    path = facesdata.write_face_video(tmp_path / "clip.avi", n_frames=3)
    first = open_source(str(path))
    factory = reusing_factory(first, str(path))
    assert factory() is first
    second = factory()
    assert second is not first and second.read().index == 0
    first.close()
    second.close()


def test_demo_is_a_camera_of_the_bundled_samples_showing_one_face_two_then_nobody():
    from importlib import resources

    import cv2

    from edge.capture.demo import SCENE, DemoSource

    source = open_source("demo", fps=10)
    assert isinstance(source, DemoSource) and source.live and source.source_id == "demo"
    assert source.frame_interval == pytest.approx(0.1)
    samples = {name: cv2.imread(str(resources.files("edge") / "samples" / name)) for name, _ in SCENE if name}
    shown = []
    for _ in range(2 * sum(round(seconds * 10) for _, seconds in SCENE)):  # the scene twice over
        frame = source.read()
        assert frame.file is None  # a camera's frames, tracked across frames (not photos)
        match = [
            name for name, image in samples.items() if np.abs(frame.image.astype(int) - image).mean() < 2
        ]
        shown.append(match[0] if match else "empty" if frame.image.std() == 0 else "?")
    runs = [shown[0]] + [b for a, b in zip(shown, shown[1:], strict=False) if a != b]
    assert runs == ["astronaut_640x480.jpg", "astronaut_pair_640x480.jpg", "empty"] * 2
    assert shown.count("astronaut_640x480.jpg") == 2 * 40 and shown.count("empty") == 2 * 30
    frame = source.read()
    frame.image[:] = 0  # a caller drawing on a frame does not change the next ones
    assert source.read().image.any()


def test_a_paced_source_is_read_at_its_frame_interval_and_files_in_realtime_at_their_own_rate(tmp_path):
    path = facesdata.write_face_video(tmp_path / "clip.avi", n_frames=6, fps=20.0)
    assert open_source(str(path)).frame_interval is None  # as fast as possible unless asked
    paced = open_source(str(path), realtime=True)
    assert paced.frame_interval == pytest.approx(1 / 20)
    facesdata.write_photo_folder(tmp_path / "photos")
    assert open_source(str(tmp_path / "photos"), realtime=True).frame_interval == 1.0  # a picture a second
    stop = threading.Event()
    capture = CaptureThread(lambda: paced, stop).start()
    arrived = []
    while not capture.finished:
        frame = capture.get(timeout=2)
        if frame is not None:
            arrived.append(time.monotonic())
    capture.join(2)
    assert len(arrived) == 6 and capture.dropped == 0
    # Never faster than the file's own rate (a loaded machine can only make it slower).
    assert arrived[-1] - arrived[0] >= 5 * (1 / 20) * 0.95


def test_stop_is_prompt_while_a_paced_source_waits_for_its_next_frame():
    class Slow(Source):
        live, source_id, frame_interval = True, "slow", 30.0

        def read(self):
            return Frame(np.zeros((4, 4, 3), np.uint8), 0, time.time())

    stop = threading.Event()
    capture = CaptureThread(Slow, stop).start()
    assert capture.get(timeout=5) is not None  # the first frame comes at once, the next in 30 s
    started = time.monotonic()
    stop.set()
    capture.join(2)
    assert not capture.is_alive() and time.monotonic() - started < 2
