"""Months unattended (issue 30): no event lost without a word, no output that stalls the loop or SIGTERM, and
every untrusted input bounded before it is expanded or decoded. One section per defect of the adversarial
pass, each reproducing it against the real daemon (a subprocess, a real Mosquitto, a live MJPEG camera on
localhost) or the real module."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.daemonproc import DaemonProcess, MjpegServer, daemon_args, daemon_env, live_frame, write_config
from testbed.mosquitto import Subscriber, wait_until

REPO = Path(__file__).resolve().parents[2]
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


@pytest.mark.backoff  # two broker outages and paho's reconnects: ~15 s
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


@contextlib.contextmanager
def _daemon_writing_to_an_unread_pipe(args: list[str], stream: str, tmp_path: Path):
    """The daemon with its `stream` ("stdout" or "stderr") a pipe nobody reads, shrunk to 4 KB (F_SETPIPE_SZ):
    a write to it blocks once it holds 4 KB, as `| sleep 600` after 64 KB. The other stream goes to a file."""
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)
    other = tmp_path / ("stderr" if stream == "stdout" else "stdout")
    with open(other, "wb") as file:
        streams = (
            {"stdout": write_end, "stderr": file}
            if stream == "stdout"
            else {"stdout": file, "stderr": write_end}
        )
        proc = subprocess.Popen(args, cwd=REPO, env=daemon_env(), **streams)
    os.close(write_end)
    try:
        yield proc, other
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)


def _sigterm_is_answered(proc, sub: Subscriber, within_s: float) -> None:
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - signalled < within_s
    sub.wait_topic(f"{BASE}/status", b"offline", timeout=5)


def test_a_stdout_reader_that_stops_reading_does_not_freeze_mqtt_or_sigterm(
    mosquitto, tiny_model_path, tmp_path
):
    config = _mqtt_config(tmp_path, mosquitto, "stats:\n  interval_s: 1\n")
    with MjpegServer(live_frame(), fps=15) as camera, Subscriber(mosquitto, f"{BASE}/#") as sub:
        args = daemon_args(
            config, tiny_model_path, camera.url, "--publish", "stdout,mqtt", "--policy", "every"
        )
        with _daemon_writing_to_an_unread_pipe(args, "stdout", tmp_path) as (proc, stderr_path):
            # The pipe holds a dozen events; past them a write to it blocks until someone reads.
            assert wait_until(lambda: sub.count(f"{BASE}/events") > 40, timeout=90), (
                "MQTT stopped with stdout"
            )
            stalled_at = sub.count(f"{BASE}/events")
            time.sleep(2)
            assert sub.count(f"{BASE}/events") > stalled_at + 10, "MQTT stopped with stdout"
            _sigterm_is_answered(proc, sub, within_s=3.0)
    log = stderr_path.read_text()
    assert "Traceback" not in log and "SIGTERM received" in log, log[-3000:]
    assert "events were not written (its reader stopped reading)" in log, log[-3000:]


def test_a_stderr_nobody_reads_does_not_freeze_the_loop_or_sigterm(mosquitto, tiny_model_path, tmp_path):
    """Logging is an output too: under systemd a journald that stalls, at a terminal a `2>&1 | less`."""
    config = _mqtt_config(tmp_path, mosquitto, "stats:\n  interval_s: 0.05\n")  # a stats line every frame
    with MjpegServer(live_frame(), fps=15) as camera, Subscriber(mosquitto, f"{BASE}/#") as sub:
        args = daemon_args(config, tiny_model_path, camera.url, "--publish", "mqtt", "--policy", "every")
        with _daemon_writing_to_an_unread_pipe(args, "stderr", tmp_path) as (proc, _):
            assert wait_until(lambda: sub.count(f"{BASE}/events") > 60, timeout=90), (
                "the loop stopped with stderr"
            )
            _sigterm_is_answered(proc, sub, within_s=4.0)


# --- 4 and 12: paths that cannot be opened are one `error:` line naming the key and the reason -----------


LONG_NAME = "/tmp/" + "n" * 300 + ".tflite"  # one part over NAME_MAX (255): stat() fails with ENAMETOOLONG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", LONG_NAME], "model.path: model file /tmp/nnn"),
        (["--model", "/etc/passwd/m.tflite"], "a part of the path is a file, not a folder"),
        (["--model", "/tmp"], "model.path: model file /tmp is a folder, not a file"),
        (["--source", "/tmp/" + "s" * 300], "source /tmp/sss"),
        (["--source", "/etc/passwd/x.avi"], "a part of the path is a file, not a folder"),
    ],
)
def test_paths_that_cannot_be_opened_are_one_error_line(tmp_path, args, message):
    result = _cli("--config", str(write_config(tmp_path)), "--check-config" if "--model" in args else "--publish",
                  *(["stdout"] if "--source" in args else []), *args)  # fmt: skip
    assert_one_error(result, message)


@pytest.mark.parametrize("key", ["preview.token_file", "debug.snapshot_dir", "mqtt.tls.ca_certs"])
def test_setting_paths_that_cannot_be_opened_are_one_error_line(tmp_path, key):
    long_path = "/tmp/" + "t" * 300
    text = {
        "preview.token_file": f"preview:\n  enabled: true\n  token_file: {long_path}\n",
        "debug.snapshot_dir": f"debug:\n  snapshot_dir: {long_path}/snaps\n",
        "mqtt.tls.ca_certs": f"mqtt:\n  tls:\n    enabled: true\n    ca_certs: {long_path}\n",
    }[key]
    result = _cli("--config", str(write_config(tmp_path, text)), "--check-config")
    assert_one_error(result, f"{key}: ")
    assert "File name too long" in result.stderr
    # The wrong kind of thing: a folder for a file, a file for a folder.
    wrong = str(write_config(tmp_path, name="a-file")) if key == "debug.snapshot_dir" else str(tmp_path)
    result = _cli("--config", str(write_config(tmp_path, text.replace(long_path + "/snaps", wrong)
                                               .replace(long_path, wrong))), "--check-config")  # fmt: skip
    assert_one_error(result, f"{key}: ")
    assert "does not exist" not in result.stderr  # the old message for a folder
    assert "is a folder, not a file" in result.stderr or "exists and is not a folder" in result.stderr


def test_a_path_the_service_user_may_not_enter_says_so(tmp_path):
    """As ProtectHome=yes does for /home under systemd: a folder nobody may enter. The tests run as root, for
    whom permissions never fail, so the daemon runs without the capabilities that let root through."""
    import shutil

    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    private = tmp_path / "private"
    private.mkdir(mode=0o000)
    command = [
        "setpriv",
        "--bounding-set",
        "-dac_override,-dac_read_search",
        sys.executable,
        "-m",
        "edge.cli",
        "--config",
        str(write_config(tmp_path)),
        "--check-config",
        "--model",
        str(private / "m.tflite"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=daemon_env(), timeout=60)
    private.chmod(0o700)
    assert_one_error(
        result, f"model.path: model file {private}/m.tflite cannot be reached: permission denied"
    )
    home = Path("/home") / ("no-such-user-" + "x" * 8) / "m.tflite"
    from edge.files import path_problem

    assert path_problem(home).endswith("does not exist")  # the hint is only for permission denied


def test_a_fifo_as_config_or_source_is_refused_in_seconds_not_waited_for(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert_one_error(_cli("--config", str(fifo), "--print-config"), "is a pipe or device that did not finish")
    assert time.monotonic() - started < 20
    result = _cli("--config", str(write_config(tmp_path)), "--source", str(fifo), "--publish", "stdout")
    assert_one_error(result, "not a regular file")
    # A pipe with a writer (`--config <(cat file)`) still works.
    result = subprocess.run(["bash", "-c", f"{sys.executable} -m edge.cli --config <(printf 'device_id: piped\\n')"
                             " --print-config"], capture_output=True, text=True, cwd=REPO, env=daemon_env(),
                            timeout=60)  # fmt: skip
    assert result.returncode == 0 and "device_id: piped" in result.stdout, result.stderr


# --- 5: a YAML alias bomb is refused before it is expanded ------------------------------------------------

# 9 levels of 9 aliases: ~370 bytes that stand for 9**9 (387 million) values.
ALIAS_BOMB = "".join(f"{x}: &{x} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
                     for p, x in zip(["", *"abcdefgh"], "abcdefghi", strict=True))  # fmt: skip


def _bounded(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI under a 1.5 GB address-space cap: today's expansion of the bomb dies there instead of eating
    the machine's memory."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))

    return _cli(*args, env=env, preexec_fn=cap, timeout=120)


def test_a_yaml_alias_bomb_in_the_config_file_is_refused_before_it_is_expanded(tmp_path):
    assert 300 < len(ALIAS_BOMB) < 400
    path = write_config(tmp_path, ALIAS_BOMB + "mqtt:\n  port: *i\n")
    result = _bounded("--config", str(path), "--check-config")
    assert_one_error(
        result, "is not a config: it stands for more than 10000 values once its aliases are expanded"
    )
    (tmp_path / "loop.yaml").write_text("mqtt: &m\n  tls: *m\n")
    assert_one_error(
        _bounded("--config", str(tmp_path / "loop.yaml"), "--check-config"), "refers to the value"
    )


def test_a_yaml_alias_bomb_in_a_variable_is_refused_before_it_is_expanded(tmp_path):
    flow = "[" + ", ".join(line.split(": ", 1)[1] for line in ALIAS_BOMB.splitlines()) + "]"
    result = _bounded("--config", str(write_config(tmp_path)), "--check-config",
                      env={"EMOTION_EDGE_MQTT__PORT": flow})  # fmt: skip
    assert_one_error(result, "mqtt.port: must be an integer in 1..65535, got '[&a [lol")
    assert "(from EMOTION_EDGE_MQTT__PORT)" in result.stderr


def test_a_large_list_in_an_error_is_shown_in_part_without_building_its_whole_repr():
    import tracemalloc

    from edge.config import ConfigError, load_config

    shared = [list(range(1000))] * 3000  # what aliases make: one list, referred to 3000 times
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            load_config(environ={}, overrides={"mqtt": {"port": shared}})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(str(info.value)) < 300 and "[[0, 1, 2, 3, 4, 5, ...]" in str(info.value)
    assert peak < 2 << 20, f"{peak / 2**20:.0f} MB to word one error"  # its full repr is 14 MB


# --- 6 and 12: MQTT names that pass the check but fail at the broker ----------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mqtt-host", "mqtt://broker"], "mqtt.host: is a URL; give the host name alone"),
        (
            ["--mqtt-host", "broker.lan:1884"],
            "mqtt.host: names a port; give the host name alone (broker.lan)",
        ),
        (["--mqtt-host", "fd00::1::x"], "mqtt.host: is neither a host name nor an IP address"),
    ],
)
def test_mqtt_host_as_a_url_or_with_a_port_is_refused(tmp_path, flags, message):
    assert_one_error(_cli("--config", str(write_config(tmp_path)), "--check-config", "--publish", "mqtt", *flags),
                     message)  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value"),
    [("topic_prefix", "e" * 65530), ("discovery.prefix", "h" * 65530), ("topic_prefix", "a/" * 200 + "x")],
)
def test_topic_prefixes_the_broker_would_refuse_fail_check_config(tmp_path, key, value):
    variable = "EMOTION_EDGE_MQTT__" + key.upper().replace(".", "__")
    result = _cli("--config", str(write_config(tmp_path)), "--check-config", "--publish", "mqtt",
                  env={variable: value})  # fmt: skip
    assert_one_error(result, f"mqtt.{key}: must be a topic prefix of at most 1024 bytes and 64 levels")


def test_ordinary_hosts_and_prefixes_still_pass():
    from edge.config import load_config

    for host in ("broker.lan", "192.168.1.5", "fd00::1", "localhost"):
        assert load_config(environ={}, overrides={"mqtt": {"host": host}}).mqtt.host == host
    config = load_config(environ={}, overrides={"mqtt": {"topic_prefix": "home/" * 20 + "emotion"}})
    assert config.mqtt.topic_prefix.endswith("/emotion")


# --- 7: a source folder removed mid-run ends with exit 1 and one reason, not 0 and a skip per file ----------


def test_a_folder_removed_mid_run_is_an_error_not_a_skip_per_file(tmp_path, tiny_model_path):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    face = REPO / "edge" / "samples" / "astronaut_640x480.jpg"
    for i in range(3000):  # hard links: 3000 photos, one file's worth of disk
        os.link(face, folder / f"{i:05d}.jpg")
    args = daemon_args(write_config(tmp_path), tiny_model_path, str(folder), "--policy", "every")
    daemon = DaemonProcess(args, tmp_path)
    try:
        assert wait_until(lambda: daemon.stdout.count("\n") >= 3, timeout=90), daemon.stderr[-3000:]
        shutil.rmtree(folder)
        assert daemon.proc.wait(timeout=60) == 1, daemon.stderr[-3000:]
    finally:
        daemon.stop()
    events = daemon.stdout.count("\n")
    assert 3 <= events < 3000
    assert "the folder was removed or became unreadable after" in daemon.stderr, daemon.stderr[-3000:]
    assert daemon.stderr.count("skipping ") <= 10 and "Traceback" not in daemon.stderr


# --- 8: image limits hold whatever a file is called; every image in a folder is used or counted ----------


def test_an_image_under_a_video_name_is_checked_as_an_image(tmp_path):
    from tests.edge.test_imagefile import png_claiming

    disguised = tmp_path / "capture.dat"
    disguised.write_bytes(png_claiming(12000, 12000))  # FFmpeg would decode it as a one-frame video
    result = _cli("--config", str(write_config(tmp_path)), "--source", str(disguised), "--publish", "stdout")
    assert_one_error(
        result,
        f"source {disguised}: not used: 12000x12000 pixels (144.0 Mpx), more than source.max_image_mpx",
    )


def test_jfif_gif_and_unnamed_images_in_a_folder_are_used(tmp_path, tiny_model_path):
    import cv2

    from testbed.facesdata import one_face_frame

    folder = tmp_path / "photos"
    folder.mkdir()
    face, _ = one_face_frame()
    (folder / "a.jpg").write_bytes(cv2.imencode(".jpg", face)[1].tobytes())
    (folder / "b.jfif").write_bytes(cv2.imencode(".jpg", face)[1].tobytes())
    (folder / "c.gif").write_bytes(cv2.imencode(".gif", face)[1].tobytes())
    (folder / "d_no_extension").write_bytes(cv2.imencode(".png", face)[1].tobytes())
    (folder / "notes.txt").write_text("not an image\n")
    args = daemon_args(write_config(tmp_path), tiny_model_path, str(folder), "--policy", "every")
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=daemon_env(), timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    files = [json.loads(line)["file"] for line in result.stdout.splitlines()]
    assert files == ["a.jpg", "b.jfif", "c.gif", "d_no_extension"]
    assert "1 files are not images and are left out (notes.txt)" in result.stderr


def test_a_folder_where_nothing_decodes_is_an_error_not_zero_events(tmp_path, tiny_model_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"\xff\xd8 this is not really a jpeg")
    args = daemon_args(write_config(tmp_path), tiny_model_path, str(folder), "--policy", "every")
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=daemon_env(), timeout=90)
    assert result.returncode == 1 and result.stdout == "", result.stderr[-3000:]
    assert (
        "no image could be used (skipped 2 of 2 images" in result.stderr and "Traceback" not in result.stderr
    )


def test_video_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    from testbed.facesdata import write_face_video

    video = write_face_video(tmp_path / "clip.avi", n_frames=3)  # 640x480: 0.31 Mpx
    config = write_config(tmp_path, "stats:\n  interval_s: 0\nsource:\n  max_image_mpx: 0.1\n")
    result = _cli("--config", str(config), "--source", str(video), "--publish", "stdout")
    assert_one_error(
        result, "announces frames of 640x480 pixels (0.3 Mpx), more than source.max_image_mpx (0.1)"
    )


def test_a_live_stream_sending_frames_over_the_limit_is_refused_and_retried(tmp_path, tiny_model_path):
    config = write_config(tmp_path, "stats:\n  interval_s: 0\nsource:\n  max_image_mpx: 0.05\n"
                                    "  reopen_backoff_max_s: 1\n")  # fmt: skip
    with MjpegServer(live_frame(), fps=10) as camera:  # 320x240: 0.077 Mpx
        daemon = DaemonProcess(daemon_args(config, tiny_model_path, camera.url), tmp_path)
        try:
            daemon.wait_stderr("more than source.max_image_mpx (0.05)", timeout=60)
            time.sleep(3)
            assert daemon.proc.poll() is None  # a live source is retried, never given up
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=10) == 0
        finally:
            daemon.stop()
    assert daemon.stdout == "" and "Traceback" not in daemon.stderr


# --- 10: damaged videos end with a reason, text is not a video --------------------------------------------


def test_a_truncated_video_is_reported_with_what_was_read(tmp_path, tiny_model_path):
    from testbed.facesdata import write_face_video

    video = write_face_video(tmp_path / "clip.avi", n_frames=20)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 55 // 100])
    args = daemon_args(write_config(tmp_path), tiny_model_path, str(video), "--policy", "every")
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=daemon_env(), timeout=90)
    assert result.returncode == 1, result.stderr[-3000:]
    events = result.stdout.splitlines()
    assert f"the video ended after {len(events)} of the 20 frames its header announces" in result.stderr
    assert 5 <= len(events) < 20 and "Traceback" not in result.stderr


def test_a_text_file_is_not_played_as_a_video_of_its_text(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a video\n" * 200)  # FFmpeg's tty demuxer renders it: 28 frames
    result = _cli("--config", str(write_config(tmp_path)), "--source", str(text), "--publish", "stdout")
    assert_one_error(result, "it is a text file, not a video or an image")


# --- 9: a camera that fails right after every open is neither reopened nor logged twice a second ----------


class _OneFrameCamera:
    """Opens, gives one frame, then fails: a camera with a bad cable or a stream that drops every client."""

    live = True
    source_id = "flaky-camera"

    def __init__(self):
        self.reads = 0

    def read(self):
        import numpy as np

        from edge.capture import Frame, SourceError

        self.reads += 1
        if self.reads > 1:
            raise SourceError("flaky-camera: stopped delivering frames")
        return Frame(np.zeros((4, 4), np.uint8), 0, time.time())

    def close(self):
        pass


def test_a_camera_failing_after_every_open_backs_off_and_logs_once_per_episode(caplog):
    import logging
    import threading

    from edge.capture import CaptureThread

    opens = []

    def factory():
        opens.append(time.monotonic())
        return _OneFrameCamera()

    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="edge.capture.thread"):
        capture = CaptureThread(factory, stop, reopen_backoff=(0.05, 0.4)).start()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            capture.get(timeout=0.1)
        stop.set()
        capture.join(2)
    # The backoff grows to its 0.4 s cap and stays there (one good frame is not "back"): ~12 opens in 4 s,
    # where resetting it on every frame reopened every 0.05 s (~70 opens).
    assert 5 <= len(opens) <= 16, len(opens)
    gaps = [b - a for a, b in zip(opens, opens[1:], strict=False)]
    assert min(gaps[3:]) >= 0.35, gaps
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) <= 3, [r.getMessage() for r in lines]
    assert "further failures are summed up every 10 min" in lines[0].getMessage()
    assert capture.failures == len(opens) or capture.failures == len(opens) - 1


def test_a_camera_that_stays_back_resets_the_backoff_and_says_so(caplog, monkeypatch):
    import logging
    import threading

    from edge.capture import CaptureThread, thread
    from tests.edge.test_capture import FakeCamera

    monkeypatch.setattr(thread, "STABLE_S", 0.3)
    cameras = iter([FakeCamera(fail_after=2), FakeCamera(fail_after=2), FakeCamera(delay=0.01)])
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="edge.capture.thread"):
        capture = CaptureThread(lambda: next(cameras), stop, reopen_backoff=(0.05, 0.4)).start()
        assert wait_until(lambda: "is back: delivering for" in caplog.text, timeout=10), caplog.text
        stop.set()
        capture.join(2)
    assert "after 2 failures" in caplog.text and capture._delay == 0.05


# --- 3: the preview cannot be exhausted before authentication -------------------------------------------

PREVIEW_TOKEN = "correct-horse-battery"


@pytest.fixture
def preview(tmp_path):
    """The preview server with a token (max_clients 2), in this process."""
    import socket as socketlib

    from edge.config import Config, PreviewConfig
    from edge.preview.server import start_preview

    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "token").write_text(PREVIEW_TOKEN)
    config = Config()
    config.preview = PreviewConfig(enabled=True, port=port, token_file=str(tmp_path / "token"), max_clients=2)
    server = start_preview(config, "cam", ["a", "b"], publishers=[])
    try:
        yield server, port
    finally:
        server.close()


def _raw(port: int, data: bytes, wait: float = 5.0, source: str = "127.0.0.1") -> bytes:
    import socket as socketlib

    with socketlib.create_connection(("127.0.0.1", port), timeout=wait, source_address=(source, 0)) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before all of it is sent
            sock.sendall(data)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def _get(port: int, token: str | None = None, source: str = "127.0.0.1") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return _raw(port, f"GET /api/status HTTP/1.1\r\nHost: pi\r\n{auth}\r\n".encode(), source=source)


def test_preview_request_heads_are_bounded_in_size_before_the_token_is_checked(preview):
    _, port = preview
    # 40 lines of 2 KB: well inside http.server's own limits (100 lines of 64 KB: 6.5 MB a connection).
    big = b"GET / HTTP/1.1\r\nHost: pi\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"a" * 2000) for i in range(40)
    )
    assert _raw(port, big + b"\r\n").startswith(b"HTTP/1.0 431 ")
    assert _get(port, PREVIEW_TOKEN).startswith(b"HTTP/1.0 200 ")  # an ordinary request still works


def test_preview_request_heads_must_arrive_in_time_slowloris(preview, monkeypatch):
    import socket as socketlib

    from edge.preview import server as preview_server

    monkeypatch.setattr(preview_server, "HEAD_TIMEOUT_S", 1.0)
    _, port = preview
    with socketlib.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        answer = b""
        for byte in b"GET / HTTP/1.1\r\nHost: pi\r\nX-Slow: " + b"a" * 100:  # one byte every 0.2 s
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - started > 5:
                break
        with contextlib.suppress(OSError):
            answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.0 408 "), answer[:100]
    assert time.monotonic() - started < 4


def test_preview_connections_are_capped_before_anything_is_read(preview):
    import socket as socketlib
    import threading

    server, port = preview
    before = threading.active_count()
    idle = []
    try:
        for _ in range(60):  # connect and say nothing, as 189 stalled clients did
            idle.append(socketlib.create_connection(("127.0.0.1", port), timeout=5))
        assert wait_until(lambda: server._httpd.open_connections >= 18, timeout=10)
        time.sleep(0.5)
        assert threading.active_count() - before <= 2 + 16 + 1, threading.active_count() - before
        assert server._httpd.open_connections == 18  # max_clients 2 + SPARE_CONNECTIONS 16
        turned_away = idle[-1].recv(100)
        assert turned_away.startswith(b"HTTP/1.0 503 "), turned_away
    finally:
        for sock in idle:
            sock.close()
    assert wait_until(lambda: server._httpd.open_connections == 0, timeout=15)
    assert _get(port, PREVIEW_TOKEN).startswith(b"HTTP/1.0 200 ")


def test_preview_memory_stays_bounded_under_header_floods(preview):
    import socket as socketlib
    import threading

    from edge.stats import rss_mb

    _, port = preview
    before = rss_mb()
    flood = b"GET / HTTP/1.1\r\nHost: pi\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"a" * 60000) for i in range(99)
    )
    peaks = []

    def client():
        with (
            contextlib.suppress(OSError),
            socketlib.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ):
            sock.sendall(flood)  # ~6 MB each; http.server alone kept all of it per connection
            time.sleep(1.0)
            peaks.append(rss_mb())

    threads = [threading.Thread(target=client) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert max(peaks, default=before) - before < 60, (before, max(peaks))


def test_wrong_tokens_are_throttled_per_address(preview):
    _, port = preview
    for _ in range(30):
        assert _get(port, "wrong-token-0000").startswith(b"HTTP/1.0 401 ")
    blocked = _get(port, PREVIEW_TOKEN)  # not even the right one is compared now
    assert blocked.startswith(b"HTTP/1.0 429 ") and b"Retry-After: " in blocked
    assert _get(port, PREVIEW_TOKEN, source="127.0.0.2").startswith(b"HTTP/1.0 200 ")  # another address
    for _ in range(40):  # no header at all is the browser's first request (the challenge), not a guess
        assert _get(port, source="127.0.0.3").startswith(b"HTTP/1.0 401 ")


# --- 11: a model's integrity is checked against its contract ----------------------------------------------


def _model_copy(tmp_path: Path, keep_sha256: bool = True) -> Path:
    source = REPO / "edge" / "models" / "default.tflite"
    (tmp_path / "m.tflite").write_bytes(source.read_bytes())
    contract = json.loads(source.with_suffix(".json").read_text())
    if not keep_sha256:
        contract.pop("sha256")
    (tmp_path / "m.json").write_text(json.dumps(contract))
    return tmp_path / "m.tflite"


def test_the_shipped_models_carry_the_checksum_of_their_file():
    from edge.files import file_sha256
    from edge.model_contract import load_contract

    for model in (REPO / "edge" / "models" / "default.tflite", REPO / "tests" / "data" / "tiny.tflite"):
        assert load_contract(model).sha256 == file_sha256(model)


def test_a_corrupted_model_is_refused_not_loaded(tmp_path):
    import random

    model = _model_copy(tmp_path)
    data = bytearray(model.read_bytes())
    rng = random.Random(30)
    for at in rng.sample(range(4096, len(data)), 400):  # weights, past the header: it still loads
        data[at] ^= 0xFF
    model.write_bytes(bytes(data))
    result = _cli("--config", str(write_config(tmp_path)), "--check-config", "--model", str(model))
    assert_one_error(result, f"error: {model} does not match its contract {tmp_path / 'm.json'}")
    assert "damaged or not the one the contract was written for" in result.stderr


def test_a_contract_without_a_checksum_still_loads_and_says_nothing_is_checked(tmp_path):
    model = _model_copy(tmp_path, keep_sha256=False)
    result = _cli("--config", str(write_config(tmp_path)), "--check-config", "--model", str(model))
    assert result.returncode == 0, result.stderr
    assert "its contract carries no sha256" in result.stderr
    assert "model file not checked (no sha256 in its contract)" in result.stderr
    shipped = _cli("--config", str(write_config(tmp_path)), "--check-config")
    assert shipped.returncode == 0 and "model file matches its sha256" in shipped.stderr, shipped.stderr


def test_save_contract_writes_the_model_files_checksum(tmp_path):
    from edge.files import file_sha256
    from edge.model_contract import ContractError, ModelContract, load_contract, save_contract

    model = tmp_path / "x.tflite"
    save_contract(model, ModelContract(labels=["a", "b"]))  # before the model exists: none to write
    assert load_contract(model).sha256 is None and "sha256" not in (tmp_path / "x.json").read_text()
    model.write_bytes(b"model bytes")
    save_contract(model, ModelContract(labels=["a", "b"], sha256="0" * 64))  # a stale one is replaced
    assert load_contract(model).sha256 == file_sha256(model)
    (tmp_path / "x.json").write_text(json.dumps({"format": "emotion-edge-model/1", "labels": ["a", "b"],
                                                 "sha256": "not-hex"}))  # fmt: skip
    with pytest.raises(ContractError, match="'sha256' must be 64 lower-case hex digits"):
        load_contract(model)


# --- 6, defence in depth: an MQTT network thread that died ends the run instead of leaving MQTT silent ------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread we kill
def test_a_dead_mqtt_network_thread_is_detected(mosquitto):
    from edge.config import MqttConfig
    from edge.publish.mqtt import MqttPublisher

    publisher = MqttPublisher(MqttConfig(host=mosquitto.host, port=mosquitto.port, keepalive=5), "t")
    publisher.start()
    try:
        assert wait_until(lambda: publisher.connected, timeout=15)
        assert publisher.broken() is None

        def boom(*args):
            raise RuntimeError("a bug inside paho's thread")

        publisher._client.on_disconnect = boom  # paho lets a callback's exception end its thread
        mosquitto.stop()
        assert wait_until(lambda: publisher.broken() is not None, timeout=15)
        assert "the network thread for 127.0.0.1" in publisher.broken()
    finally:
        publisher.close(timeout=0.5)
        mosquitto.start()


def test_the_daemon_stops_with_exit_1_when_an_output_is_broken():
    from edge.config import Config
    from edge.daemon import Daemon
    from edge.pipeline import FrameProcessor
    from tests.edge.test_daemon_loop import (
        Clock,
        RecordingPublisher,
        SceneClassifier,
        SceneDetector,
        ScriptedCamera,
    )

    class BreakingPublisher(RecordingPublisher):
        def broken(self):
            return "test output: gone for good" if len(self.of("event")) >= 20 else None

    clock = Clock()
    camera = ScriptedCamera(clock, [[((40, 30, 50, 50), [0.1, 0.8, 0.1])]] * 200)
    config = Config()
    config.publish.policy = "every"
    config.stats.interval_s = 0
    publisher = BreakingPublisher(clock)
    daemon = Daemon(config, publishers=[publisher], clock=clock)
    processor = FrameProcessor(config, SceneClassifier(camera), SceneDetector(camera), "scripted")
    daemon.serve(camera, processor, "scene", "scene")
    assert daemon.exit_code == 1 and daemon.stop_event.is_set()
    assert 20 <= len(publisher.of("event")) < 40  # stopped within a second of loop time, not after 200 frames


def test_opencv_is_quieted_through_the_api_each_release_has(monkeypatch):
    """OpenCV 4.11+ has cv2.utils.logging; the <4.11 that install.sh pins beside Debian 12's NumPy 1.x (the
    Raspberry Pi OS path, make pi-check RELEASE=bookworm) only a top-level cv2.setLogLevel: --check-config
    crashed there with an AttributeError."""
    import types

    import cv2

    from edge import logs

    for name in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL"):  # set, then unset: both undone afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    before = cv2.utils.logging.getLogLevel()
    try:
        logs.quiet_native_libraries("INFO")  # this venv's OpenCV: the submodule
        assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_ERROR
    finally:
        cv2.utils.logging.setLogLevel(before)
    calls = []
    old_layout = types.SimpleNamespace(utils=types.SimpleNamespace(), setLogLevel=calls.append)  # 4.10's
    monkeypatch.setitem(sys.modules, "cv2", old_layout)
    logs.quiet_native_libraries("INFO")
    assert calls == [cv2.utils.logging.LOG_LEVEL_ERROR]
    logs.quiet_native_libraries("DEBUG")  # DEBUG leaves OpenCV as it is
    assert calls == [cv2.utils.logging.LOG_LEVEL_ERROR]


def test_opencv_and_ffmpeg_do_not_write_a_line_per_retry(tmp_path, tiny_model_path):
    """A stream that is down: FFmpeg and OpenCV wrote two lines of their own per failed open, past the log's
    once-per-episode rule (a camera away for a day: thousands). At DEBUG they still speak."""
    import socket as socketlib

    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/stream.mjpg"  # nothing listens there
    config = write_config(tmp_path, "stats:\n  interval_s: 0\nsource:\n  reopen_backoff_max_s: 0.5\n")
    for level, quiet in (("INFO", True), ("DEBUG", False)):
        daemon = DaemonProcess(daemon_args(config, tiny_model_path, url, "--log-level", level), tmp_path)
        try:
            daemon.wait_stderr("retrying with backoff", timeout=60)  # up, and the stream is away
            time.sleep(3)  # six more retries at 0.5 s
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=10) == 0
        finally:
            daemon.stop()
        native = [
            line for line in daemon.stderr.splitlines() if line.startswith(("[tcp @", "[ WARN", "[http @"))
        ]
        if quiet:
            assert native == [], native[:5]
            assert daemon.stderr.count("WARNING edge.capture.thread") == 1, daemon.stderr[-2000:]
        else:
            assert native, daemon.stderr[-2000:]
