"""Months unattended (issue 30): no event lost without a word, no output that stalls the loop or SIGTERM, and
every untrusted input bounded before it is expanded or decoded. One section per defect of the adversarial
pass, each reproducing it against the real daemon (a subprocess, a real Mosquitto, a live MJPEG camera on
localhost) or the real module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.daemonproc import DaemonProcess, MjpegServer, daemon_args, daemon_env, live_frame, write_config
from tests.mosquitto import Subscriber, wait_until

REPO = Path(__file__).resolve().parent.parent
BASE = "emotion/test-pi"


def _cli(*args: str, env: dict | None = None, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], cwd=REPO, env=daemon_env(env),
                          timeout=timeout, **kwargs)  # fmt: skip


def assert_one_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0], result.stderr[-3000:]


def _mqtt_config(tmp_path, broker, extra: str = "") -> Path:
    return write_config(tmp_path, f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  keepalive: 5\n"
                                  f"  discovery:\n    enabled: false\n{extra}")  # fmt: skip


def _count(sub: Subscriber, topic: str, payload: bytes) -> int:
    return sum(1 for m in list(sub.messages) if m[0] == topic and m[1] == payload)


# --- 1: events dropped by the MQTT outage buffer are counted, said once per outage, and in `stats` --------


def test_outage_buffer_overflow_is_counted_in_stats_and_said_once_per_outage(
    mosquitto, tiny_model_path, tmp_path
):
    config = _mqtt_config(tmp_path, mosquitto, "  buffer_size: 10\nstats:\n  interval_s: 1\n")
    with MjpegServer(live_frame(), fps=15) as camera, Subscriber(mosquitto, f"{BASE}/#") as sub:
        args = daemon_args(config, tiny_model_path, camera.url, "--publish", "mqtt", "--policy", "every")
        daemon = DaemonProcess(args, tmp_path)
        try:
            sub.wait_topic(f"{BASE}/events", timeout=90)
            first = json.loads(sub.wait_topic(f"{BASE}/stats", timeout=15)[1])
            assert first["events_dropped"] == 0 and first["mqtt_buffered"] == 0
            for _ in range(2):  # two outages, each far longer than 10 events at ~15 fps
                onlines = _count(sub, f"{BASE}/status", b"online")
                mosquitto.stop()
                time.sleep(3)
                mosquitto.start()
                assert wait_until(lambda n=onlines: _count(sub, f"{BASE}/status", b"online") > n, timeout=30)
            stats = json.loads(sub.wait_for(lambda m: m[0] == f"{BASE}/stats" and
                                            json.loads(m[1])["events_dropped"] > 0, timeout=30)[1])  # fmt: skip
            assert stats["events_dropped_by_output"]["mqtt"] == stats["events_dropped"]
            assert stats["mqtt_buffered"] is not None and 0 <= stats["mqtt_buffered"] <= 10
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=10) == 0
        finally:
            daemon.stop()
    log = daemon.stderr
    assert log.count("the outage buffer is full (10 events, mqtt.buffer_size)") == 2, log[-3000:]
    assert log.count("events were dropped while 127.0.0.1") == 2, log[-3000:]
    assert "events dropped" in log  # the stats log line says it too


# --- 2: a stdout nobody reads stalls neither MQTT nor SIGTERM ----------------------------------------------


def test_a_stdout_reader_that_stops_reading_does_not_freeze_mqtt_or_sigterm(
    mosquitto, tiny_model_path, tmp_path
):
    import fcntl

    config = _mqtt_config(tmp_path, mosquitto, "stats:\n  interval_s: 1\n")
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: full after a dozen events, as `| sleep 600` after ~150
    stderr_path = tmp_path / "stderr"
    with MjpegServer(live_frame(), fps=15) as camera, Subscriber(mosquitto, f"{BASE}/#") as sub:
        args = daemon_args(
            config, tiny_model_path, camera.url, "--publish", "stdout,mqtt", "--policy", "every"
        )
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(args, stdout=write_end, stderr=err, cwd=REPO, env=daemon_env())
        os.close(write_end)
        try:
            # The pipe holds a dozen events; past them a write to it blocks until someone reads.
            assert wait_until(lambda: sub.count(f"{BASE}/events") > 40, timeout=90), (
                "MQTT stopped with stdout"
            )
            stalled_at = sub.count(f"{BASE}/events")
            time.sleep(2)
            assert sub.count(f"{BASE}/events") > stalled_at + 10, "MQTT stopped with stdout"
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - signalled < 3.0
            sub.wait_topic(f"{BASE}/status", b"offline", timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(read_end)
    log = stderr_path.read_text()
    assert "Traceback" not in log and "SIGTERM received" in log, log[-3000:]
    assert "events were not written (its reader stopped reading)" in log, log[-3000:]


def test_a_stderr_nobody_reads_does_not_freeze_the_loop_or_sigterm(mosquitto, tiny_model_path, tmp_path):
    """Logging is an output too: under systemd a journald that stalls, at a terminal a `2>&1 | less`."""
    import fcntl

    config = _mqtt_config(tmp_path, mosquitto, "stats:\n  interval_s: 0.05\n")  # a stats line every frame
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: full within a second of stats lines
    with MjpegServer(live_frame(), fps=15) as camera, Subscriber(mosquitto, f"{BASE}/#") as sub:
        args = daemon_args(config, tiny_model_path, camera.url, "--publish", "mqtt", "--policy", "every")
        with open(tmp_path / "stdout", "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=write_end, cwd=REPO, env=daemon_env())
        os.close(write_end)
        try:
            assert wait_until(lambda: sub.count(f"{BASE}/events") > 60, timeout=90), (
                "the loop stopped with stderr"
            )
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - signalled < 4.0
            sub.wait_topic(f"{BASE}/status", b"offline", timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(read_end)
