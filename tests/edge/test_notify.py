"""sd_notify as systemd sees it: datagrams on $NOTIFY_SOCKET, from edge.notify and from the running daemon.

The daemon test plays systemd's part: it binds an AF_UNIX datagram socket, starts `emotion-edge` with
NOTIFY_SOCKET and a short WATCHDOG_USEC, and feeds it an MJPEG stream over HTTP (a live source). While
frames flow it must say READY=1 and then keep pinging WATCHDOG=1; when the stream stalls (the server keeps
the connection open but stops sending) the pings must stop, which is what makes systemd restart a service
with a hung camera. SIGTERM then ends it with STOPPING=1 and exit status 0.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge import notify
from testbed.mosquitto import wait_until

REPO = Path(__file__).resolve().parents[2]
WATCHDOG_USEC = 400_000  # the daemon pings every 0.2 s


class NotifyListener:
    """systemd's side of the protocol: collects (monotonic time, message) for every datagram."""

    def __init__(self, address: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, field: str, timeout: float, since: float = 0.0) -> float:
        """Time of the first message at/after `since` that has the line `field`; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for stamp, message in list(self.messages):
                if stamp >= since and field in message.splitlines():
                    return stamp
            time.sleep(0.02)
        raise AssertionError(f"no {field} within {timeout} s; got {[m for _, m in self.messages][-10:]}")

    def count(self, field: str, start: float, end: float) -> int:
        return sum(1 for t, m in list(self.messages) if start <= t < end and field in m.splitlines())

    def close(self):
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


# --- edge.notify on its own ------------------------------------------------------------------------------


def test_messages_arrive_on_a_path_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    listener = NotifyListener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        assert notify.ready("loading done")
        assert notify.watchdog()
        assert notify.stopping()
        listener.wait_for("STOPPING=1", 5)
        assert [m for _, m in listener.messages] == [
            "READY=1\nSTATUS=loading done",
            "WATCHDOG=1",
            "STOPPING=1",
        ]
    finally:
        listener.close()


def test_messages_arrive_on_an_abstract_socket(monkeypatch):
    name = f"emotion-edge-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifyListener(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert notify.watchdog()
        listener.wait_for("WATCHDOG=1", 5)
    finally:
        listener.close()


def test_outside_systemd_nothing_is_sent_and_nothing_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert notify.watchdog() is False  # a vanished supervisor socket must not raise


def test_watchdog_interval_is_half_the_timeout_for_this_process_only():
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}) == 0.2
    assert notify.watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval({}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


# --- the daemon under a fake systemd ---------------------------------------------------------------------


class MjpegServer:
    """An HTTP multipart/x-mixed-replace JPEG stream on localhost that the test can stall."""

    def __init__(self, fps: float = 20.0):
        import cv2

        frame = np.full((120, 160, 3), 90, np.uint8)
        cv2.circle(frame, (80, 60), 30, (230, 230, 230), -1)
        jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
        part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n" % (len(jpeg), jpeg)
        self.sending = threading.Event()
        self.sending.set()
        self.closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not server.closing.is_set():
                        if server.sending.is_set():
                            self.wfile.write(part)
                            self.wfile.flush()
                        time.sleep(1 / fps)  # stalled: connection open, no bytes
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg_server():
    server = MjpegServer()
    yield server
    server.close()


@contextlib.contextmanager
def supervised_daemon(tmp_path, model, source: str, config_text: str, *extra: str):
    """The daemon as systemd runs it (NOTIFY_SOCKET, WATCHDOG_USEC): yields (proc, listener, log_path)."""
    socket_path = str(tmp_path / "notify.sock")
    listener = NotifyListener(socket_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"device_id: notify-test\nstats:\n  interval_s: 0\n{config_text}")
    env = dict(
        os.environ,
        NOTIFY_SOCKET=socket_path,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    env.pop("WATCHDOG_PID", None)
    command = [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", source]
    command += ["--model", str(model), "--publish", "stdout", "--threads", "1", *extra]
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield proc, listener, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        listener.close()
        print(log_path.read_text(errors="replace")[-3000:])


@pytest.mark.backoff
def test_daemon_is_ready_pings_while_frames_flow_and_stops_pinging_when_the_camera_stalls(
    tmp_path, tiny_model_path, mjpeg_server
):
    with supervised_daemon(
        tmp_path, tiny_model_path, mjpeg_server.url, "log:\n  level: INFO\n", "--policy", "every"
    ) as (proc, listener, _):
        ready_at = listener.wait_for("READY=1", timeout=120)
        first_ping = listener.wait_for("WATCHDOG=1", timeout=20, since=ready_at)
        listener.wait_for("WATCHDOG=1", timeout=10, since=first_ping + 1e-6)  # pings go on while frames flow

        mjpeg_server.sending.clear()  # the camera hangs: no frames, no error
        stalled_at = time.monotonic()
        time.sleep(2.0)
        # A frame already in flight may still earn one ping right after the stall; then silence.
        late = listener.count("WATCHDOG=1", stalled_at + 0.5, time.monotonic())
        assert late == 0, f"{late} WATCHDOG=1 pings while no frames arrived"
        assert proc.poll() is None, "the daemon must keep running (systemd decides to restart it)"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        listener.wait_for("STOPPING=1", timeout=5, since=stalled_at)


def test_daemon_keeps_the_watchdog_fed_while_a_vanished_camera_is_retried(
    tmp_path, tiny_model_path, mjpeg_server
):
    """A stream that is gone (refused, not hung) is the capture thread's job to reopen with backoff, for as
    long as it takes: systemd must not restart the service over it (and burn its start limit)."""
    config = "source:\n  reopen_backoff_max_s: 1\n"
    with supervised_daemon(tmp_path, tiny_model_path, mjpeg_server.url, config) as (proc, listener, log_path):
        ready_at = listener.wait_for("READY=1", timeout=120)
        listener.wait_for("WATCHDOG=1", timeout=20, since=ready_at)
        mjpeg_server.close()  # the camera's server is gone: every reopen is refused at once
        deadline = time.monotonic() + 20
        while "reopening" not in log_path.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
        away_at = time.monotonic()
        fed = wait_until(lambda: listener.count("WATCHDOG=1", away_at, time.monotonic()) >= 3, timeout=20)
        pings = listener.count("WATCHDOG=1", away_at, time.monotonic())
        assert fed, f"only {pings} WATCHDOG=1 pings while the camera was being retried"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_daemon_is_ready_while_a_camera_missing_at_boot_is_retried(tmp_path, tiny_model_path):
    """Withholding READY=1 until a frame arrives would end in systemd's start timeout and a restart loop."""
    camera = "/dev/v4l/by-id/usb-Not_Plugged_In-video-index0"
    with supervised_daemon(tmp_path, tiny_model_path, camera, "") as (proc, listener, _):
        ready_at = listener.wait_for("READY=1", timeout=120)
        ready = next(m for t, m in listener.messages if t == ready_at)
        assert f"STATUS=waiting for {camera} (retrying); classifier: tiny.tflite" in ready
        listener.wait_for("WATCHDOG=1", timeout=20, since=ready_at)
        assert wait_until(lambda: listener.count("WATCHDOG=1", ready_at, time.monotonic()) >= 3, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
