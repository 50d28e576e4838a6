"""Helpers for running the real daemon in tests: a subprocess, real photos, a video file, a live MJPEG stream.

The live source is an HTTP MJPEG stream (multipart/x-mixed-replace, what IP cameras serve) from a thread
on 127.0.0.1: a real source type that never ends, so SIGTERM, SIGKILL and broker restarts can be tested
mid-run. Photos and videos come from testbed/facesdata.py (scikit-image's astronaut, NASA, public domain).
"""

from __future__ import annotations

import http.server
import itertools
import os
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from testbed.facesdata import one_face_frame, write_face_video, write_photo_folder  # noqa: F401 - re-exported

REPO = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO / "edge" / "schema" / "event.schema.json"


def live_frame() -> np.ndarray:
    """What the test camera shows: one real face in a 320x240 frame."""
    frame, _ = one_face_frame(320, 240)
    return frame


class MjpegServer:
    """An endless MJPEG stream at `fps` on http://127.0.0.1:<port>/stream.mjpg."""

    def __init__(
        self,
        image: np.ndarray | list[np.ndarray],
        fps: float = 10.0,
        port: int = 0,
        frames_per_connection: int | None = None,
    ):
        """`port` 0 picks a free one; a given port lets a new server stand in for a closed one (a camera back).
        A list of images is shown in turn, over and over (a scene that changes). `frames_per_connection`: end
        each stream after that many frames (a camera that fails right after every open)."""
        parts = []
        for picture in image if isinstance(image, list) else [image]:
            jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
            parts.append(
                b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                + jpeg
                + b"\r\n"
            )
        period = 1.0 / fps
        stopping = threading.Event()
        self._stopping = stopping

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for shown in itertools.count():
                        if stopping.is_set() or shown == frames_per_connection:
                            break
                        self.wfile.write(parts[shown % len(parts)])
                        time.sleep(period)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """The camera is unplugged: streams end, new connections are refused (safe to call twice)."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # OPENCV_*: an in-process CLI run in an earlier test set them in this process (edge.logs quiets
        # OpenCV and FFmpeg below DEBUG); inherited, they silence a daemon started with --log-level DEBUG.
        if not k.startswith(
            ("EMOTION_EDGE_", "NOTIFY_SOCKET", "WATCHDOG", "OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_")
        )
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def write_config(tmp_path: Path, text: str = "", name: str = "emotion-edge.yaml") -> Path:
    """An explicit config file, so a machine's /etc/emotion-edge/config.yaml never leaks into a test."""
    path = tmp_path / name
    path.write_text(text or "stats:\n  interval_s: 0\n")
    return path


def daemon_args(config: Path, model: Path, source: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "--config", str(config), "--model", str(model), "--source", source,
            "--device-id", "test-pi", *extra]  # fmt: skip


def run_daemon(args: list[str], timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, cwd=REPO, env=daemon_env(env), timeout=timeout
    )


class DaemonProcess:
    """A daemon subprocess whose stdout/stderr go to files (no pipe can fill up and stall it)."""

    def __init__(self, args: list[str], workdir: Path, env=None):
        self.stdout_path = workdir / "daemon.stdout"
        self.stderr_path = workdir / "daemon.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=REPO, env=daemon_env(env))

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_stderr(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{text!r} not in the daemon's stderr (rc={self.proc.poll()}):\n{self.stderr[-3000:]}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
