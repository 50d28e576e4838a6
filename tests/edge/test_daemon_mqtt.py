"""The daemon over MQTT on a real Mosquitto, with an endless live source (HTTP MJPEG on localhost).

Lifecycle as systemd and Home Assistant see it: SIGTERM -> exit 0 and retained `offline`; SIGKILL -> the
broker's last will `offline`; the broker restarting mid-run -> events resume; the broker down at start ->
the daemon keeps running and says so once.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from edge.daemon import CAMERA_AWAY_S
from testbed import facesdata
from testbed.daemonproc import DaemonProcess, MjpegServer, daemon_args, live_frame, write_config
from testbed.mosquitto import Subscriber

BASE = "emotion/test-pi"


def _mqtt_config(tmp_path, broker, extra: str = "") -> object:
    return write_config(
        tmp_path,
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  keepalive: 5\n"
        f"  discovery:\n    enabled: false\nstats:\n  interval_s: 1\n{extra}",
    )


@pytest.fixture
def camera():
    with MjpegServer(live_frame(), fps=8) as server:
        yield server


def _start(tmp_path, broker, camera, model, *extra) -> DaemonProcess:
    args = daemon_args(_mqtt_config(tmp_path, broker), model, camera.url, "--publish", "mqtt",
                       "--policy", "every", *extra)  # fmt: skip
    return DaemonProcess(args, tmp_path)


def _is_event(message) -> bool:
    return message[0] == f"{BASE}/events"


def test_sigterm_publishes_offline_and_exits_0(mosquitto, camera, tiny_model_path, tmp_path):
    with Subscriber(mosquitto, f"{BASE}/#") as sub:
        daemon = _start(tmp_path, mosquitto, camera, tiny_model_path)
        try:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=90)
            _, payload, _ = sub.wait_for(_is_event, timeout=30)
            event = json.loads(payload)
            assert event["source_id"] and event["frame_size"] == [320, 240] and "file" not in event
            _, state, retained = sub.wait_topic(f"{BASE}/state", timeout=10)
            state = json.loads(state)
            assert retained is False  # live delivery; retained flag is set only for late subscribers
            assert state["face_count"] == 1 and state["dominant_emotion"] in state["scores"]
            stats = json.loads(sub.wait_topic(f"{BASE}/stats", timeout=15)[1])
            assert stats["processed_fps"] >= 0 and stats["latency_ms"]["total"]["p50"] is not None
            assert stats["interpreter"] and stats["detector"] == "yunet"  # auto's choice

            signalled = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            rc = daemon.proc.wait(timeout=10)
            took = time.monotonic() - signalled
            assert rc == 0, daemon.stderr[-3000:]
            print(f"SIGTERM to exit: {took:.2f} s")
            sub.wait_topic(f"{BASE}/status", b"offline", timeout=5)
            assert "SIGTERM received" in daemon.stderr and "Traceback" not in daemon.stderr
        finally:
            daemon.stop()
    with Subscriber(mosquitto, f"{BASE}/#") as late:  # what Home Assistant would see after a restart
        late.wait_topic(f"{BASE}/status", b"offline", retain=True, timeout=5)
        assert (
            json.loads(late.wait_topic(f"{BASE}/state", retain=True, timeout=5)[1])["device_id"] == "test-pi"
        )


def test_the_demo_runs_like_a_camera_until_sigterm(mosquitto, tiny_model_path, tmp_path):
    """`--source demo` needs no camera: the bundled faces appear, leave and come back, the state and stats
    follow them on a real broker, and SIGTERM ends it as it ends a camera run (exit 0, retained offline)."""
    config = _mqtt_config(tmp_path, mosquitto, "source:\n  fps: 30\n")  # the 11 s scene in 5.5 s
    args = daemon_args(config, tiny_model_path, "demo", "--publish", "stdout", "--publish", "mqtt")
    with Subscriber(mosquitto, f"{BASE}/#") as sub:
        daemon = DaemonProcess(args, tmp_path)
        try:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=90)

            def changes(message):
                return [c["kind"] for c in json.loads(message[1])["changes"]] if _is_event(message) else []

            sub.wait_for(lambda m: "left" in changes(m), timeout=60)  # the one face gives way to the pair
            sub.wait_for(lambda m: changes(m).count("left") == 2, timeout=60)  # the pair leaves: nobody
            sub.wait_for(lambda m: "appeared" in changes(m) and json.loads(m[1])["frame_index"] > 100,
                         timeout=60)  # the scene starts over  # fmt: skip
            states = [json.loads(p) for t, p, _ in sub.messages if t == f"{BASE}/state"]
            assert {s["face_count"] for s in states} >= {0, 1, 2} and {s["camera"] for s in states} == {"ok"}
            stats = json.loads(sub.wait_topic(f"{BASE}/stats", timeout=15)[1])
            assert stats["input_fps"] > 0 and stats["detector"] == "yunet"
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=10) == 0, daemon.stderr[-3000:]
            sub.wait_topic(f"{BASE}/status", b"offline", timeout=5)
        finally:
            daemon.stop()
    events = [json.loads(line) for line in daemon.stdout.splitlines()]
    assert events and all(e["source_id"] == "demo" and "file" not in e for e in events)
    assert events == [json.loads(p) for t, p, _ in sub.messages if t == f"{BASE}/events"]  # both outputs
    assert "Traceback" not in daemon.stderr


def test_sigkill_leaves_the_last_will_offline(mosquitto, camera, tiny_model_path, tmp_path):
    with Subscriber(mosquitto, f"{BASE}/status") as sub:
        daemon = _start(tmp_path, mosquitto, camera, tiny_model_path)
        try:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=90)
            daemon.proc.send_signal(signal.SIGKILL)  # no chance to say goodbye: the broker must
            daemon.proc.wait(timeout=10)
            sub.wait_topic(f"{BASE}/status", b"offline", timeout=15)
        finally:
            daemon.stop()
    with Subscriber(mosquitto, f"{BASE}/status") as late:
        late.wait_topic(f"{BASE}/status", b"offline", retain=True, timeout=5)


@pytest.mark.backoff
def test_broker_restart_mid_run_events_resume(mosquitto, camera, tiny_model_path, tmp_path):
    daemon = _start(tmp_path, mosquitto, camera, tiny_model_path)
    try:
        with Subscriber(mosquitto, f"{BASE}/#") as sub:
            sub.wait_for(_is_event, timeout=90)
        mosquitto.stop()
        daemon.wait_stderr("lost", timeout=15)
        time.sleep(1.0)  # events made now are buffered by the daemon
        mosquitto.start()
        with Subscriber(mosquitto, f"{BASE}/#") as sub:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=30)  # re-announced after the reconnect
            first = json.loads(sub.wait_for(_is_event, timeout=30)[1])["frame_index"]
            later = sub.wait_for(
                lambda m: _is_event(m) and json.loads(m[1])["frame_index"] > first + 3, timeout=30
            )
            assert later
            stats = sub.wait_topic(f"{BASE}/stats", timeout=15)
            assert json.loads(stats[1])["reconnects"] == 1
        assert daemon.proc.poll() is None  # never crashed
        assert "Traceback" not in daemon.stderr
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 0
        daemon.stop()


@pytest.mark.backoff
def test_broker_down_at_start_keeps_running_and_says_so_once(mosquitto, camera, tiny_model_path, tmp_path):
    mosquitto.stop()
    daemon = _start(tmp_path, mosquitto, camera, tiny_model_path)
    try:
        daemon.wait_stderr("unreachable, retrying", timeout=90)
        time.sleep(4)  # several paho retries (1, 2 s backoff) while frames are processed
        assert daemon.proc.poll() is None
        log = daemon.stderr
        assert log.count("unreachable, retrying") == 1
        assert f"MQTT broker {mosquitto.host}:{mosquitto.port} unreachable" in log
        assert "Traceback" not in log
        mosquitto.start()
        with Subscriber(mosquitto, f"{BASE}/#") as sub:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=30)
            sub.wait_for(_is_event, timeout=30)
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 0
        daemon.stop()


def test_photo_folder_over_mqtt_delivers_every_event_before_exit(mosquitto, tiny_model_path, tmp_path):
    """A short finite run can end before MQTT connects: its events must still be delivered, then `offline`."""
    from testbed.daemonproc import run_daemon, write_photo_folder

    expected = write_photo_folder(tmp_path / "photos")
    args = daemon_args(_mqtt_config(tmp_path, mosquitto), tiny_model_path, str(tmp_path / "photos"),
                       "--publish", "mqtt", "--policy", "change")  # fmt: skip
    with Subscriber(mosquitto, f"{BASE}/#") as sub:
        result = run_daemon(args)
        assert result.returncode == 0, result.stderr
        sub.wait_topic(f"{BASE}/status", b"offline", timeout=10)
        files = [e["file"] for e in sub.json_payloads(f"{BASE}/events")]
        assert files == sorted(f for f, n in expected.items() if n)
        assert "not delivered" not in result.stderr


def test_a_clip_of_one_face_then_two_never_counts_the_face_that_left(mosquitto, tiny_model_path, tmp_path):
    """edge/samples' one-face photo for 20 frames, then the pair, as a video (the daemon's defaults): the face
    of the first part is not found again, and no event or state shows it (once, frames 21-24 carried it with
    its old box and the retained state said face_count 3)."""
    from edge.track import iou
    from testbed.daemonproc import run_daemon

    images, truths = facesdata.one_then_two_faces()
    video = facesdata.write_video(tmp_path / "clip.avi", images)
    args = daemon_args(_mqtt_config(tmp_path, mosquitto), tiny_model_path, str(video),
                       "--publish", "mqtt", "--policy", "every")  # fmt: skip
    with Subscriber(mosquitto, f"{BASE}/#") as sub:
        result = run_daemon(args)
        assert result.returncode == 0, result.stderr
        sub.wait_topic(f"{BASE}/status", b"offline", timeout=10)
        events, states = sub.json_payloads(f"{BASE}/events"), sub.json_payloads(f"{BASE}/state")
    assert [e["frame_index"] for e in events] == list(range(len(images)))
    for event in events:
        truth = truths[event["frame_index"]]
        assert all(max(iou(f["box"], t) for t in truth) > 0.3 for f in event["faces"]), event
        assert len(event["faces"]) == len(truth) or event["frame_index"] == 20  # 20: a crop frame, 21 a scan
    assert [s["face_count"] for s in states] and max(s["face_count"] for s in states) == 2
    assert states[-1]["face_count"] == 2
    with Subscriber(mosquitto, f"{BASE}/state") as late:  # what Home Assistant reads after a restart
        retained = json.loads(late.wait_topic(f"{BASE}/state", retain=True)[1])
    assert retained["face_count"] == 2
    assert all(max(iou(f["box"], t) for t in truths[-1]) > 0.3 for f in retained["faces"])


@pytest.mark.backoff
def test_a_camera_gone_silent_clears_the_faces_from_the_retained_state(mosquitto, tiny_model_path, tmp_path):
    """Home Assistant must not keep showing the last face (and keep automations on it firing) while the
    camera is unplugged: after CAMERA_AWAY_S without frames the state says nobody is in view, and that the
    camera is away (Home Assistant's camera problem entity)."""
    with MjpegServer(live_frame(), fps=8) as camera, Subscriber(mosquitto, f"{BASE}/state") as sub:
        daemon = _start(tmp_path, mosquitto, camera, tiny_model_path)
        try:
            sub.wait_for(lambda m: json.loads(m[1])["face_count"] == 1, timeout=90)
            camera.close()  # unplugged: the stream ends and every reopen is refused
            gone_at = time.monotonic()
            _, payload, _ = sub.wait_for(lambda m: json.loads(m[1])["face_count"] == 0, timeout=30)
            assert time.monotonic() - gone_at >= CAMERA_AWAY_S - 1
            state = json.loads(payload)
            assert state["dominant_emotion"] == "none" and state["faces"] == [] and state["camera"] == "away"
            daemon.wait_stderr("the state now shows the camera away and no faces", timeout=5)
            assert daemon.proc.poll() is None and "Traceback" not in daemon.stderr
        finally:
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=10) == 0
            daemon.stop()
    with Subscriber(mosquitto, f"{BASE}/state") as late:  # what HA reads after its own restart
        assert json.loads(late.wait_topic(f"{BASE}/state", retain=True)[1])["face_count"] == 0
