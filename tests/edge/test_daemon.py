"""The daemon end to end as a subprocess: real photos and a video file in, JSON Lines events out, no TensorFlow."""

from __future__ import annotations

import json
import signal
import sys

import jsonschema
import pytest

from testbed.daemonproc import (
    SCHEMA_PATH,
    DaemonProcess,
    daemon_args,
    run_daemon,
    write_config,
    write_face_video,
    write_photo_folder,
)
from testbed.mosquitto import wait_until


def _events(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert all(line.strip() for line in lines)
    return [json.loads(line) for line in lines]


def _validate(events: list[dict]) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    for event in events:
        jsonschema.validate(event, schema)


def test_photo_folder_yields_one_appeared_event_per_face_photo(tiny_model_path, tmp_path):
    expected = write_photo_folder(tmp_path / "photos")  # {file: faces}; plus a text file and a broken jpeg
    args = daemon_args(write_config(tmp_path), tiny_model_path, str(tmp_path / "photos"), "--publish", "stdout",
                       "--policy", "change")  # fmt: skip
    result = run_daemon(args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "classifier: tiny.tflite via " in result.stderr and "2 threads; detector: yunet (" in result.stderr
    # The default, auto, says what it chose and why.
    assert "face_detection_yunet_2023mar.onnx), chosen by auto: it finds small" in result.stderr
    assert "; faces aligned and framed from the eyes" in result.stderr
    events = _events(result.stdout)
    _validate(events)
    # Photos are independent: every photo with a face is a new "appeared"; the empty one yields nothing.
    assert {e["file"]: len(e["faces"]) for e in events} == {f: n for f, n in expected.items() if n}
    assert [e["file"] for e in events] == sorted(e["file"] for e in events)  # folder order kept
    for event in events:
        assert event["device_id"] == "test-pi" and event["frame_size"] == [640, 480]
        assert [c["kind"] for c in event["changes"]] == ["appeared"] * len(event["faces"])
        for face in event["faces"]:
            assert face["emotion"] in face["scores"] and abs(sum(face["scores"].values()) - 1) < 0.02


def test_video_file_with_policy_every_publishes_each_frame_and_exits_0(tiny_model_path, tmp_path):
    video = write_face_video(tmp_path / "clip.avi", n_frames=12)
    args = daemon_args(write_config(tmp_path), tiny_model_path, str(video), "--policy", "every")
    result = run_daemon(args)
    assert result.returncode == 0, result.stderr
    events = _events(result.stdout)
    _validate(events)
    assert [e["frame_index"] for e in events] == list(range(12))  # a finite source: nothing dropped
    assert all("file" not in e for e in events)  # only image sources name a file
    # The astronaut's face is followed across every frame under one track id (haar may add a
    # short-lived false positive elsewhere in the photo; that is a different track).
    first = events[0]["faces"][0]
    for event in events:
        ours = [f for f in event["faces"] if abs(f["box"][1] - first["box"][1]) < 20]
        assert [f["track_id"] for f in ours] == [first["track_id"]], event["faces"]


def test_full_run_in_process_never_imports_tensorflow(tiny_model_path, tmp_path):
    """The edge package must run without TensorFlow: run main() in a fresh interpreter, then look."""
    write_photo_folder(tmp_path / "photos")
    folder = tmp_path / "photos"
    config = write_config(tmp_path)
    code = (
        "import sys\n"
        "from edge.cli import main\n"
        f"rc = main(['--config', {str(config)!r}, '--model', {str(tiny_model_path)!r}, '--source', {str(folder)!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print('RC', rc, 'TF', loaded, file=sys.stderr)\n"
        "sys.exit(rc or (3 if loaded else 0))\n"
    )
    result = run_daemon([sys.executable, "-c", code])
    assert "RC 0 TF []" in result.stderr, result.stderr[-3000:]
    assert result.returncode == 0
    assert len(_events(result.stdout)) == 3  # it really ran the photos


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("does/not/exist.mp4", "does/not/exist.mp4"),
        ("{tmp}/empty_folder", "empty_folder"),
    ],
)
def test_bad_finite_source_is_one_clear_error(tiny_model_path, tmp_path, source, message):
    (tmp_path / "empty_folder").mkdir()
    source = source.format(tmp=tmp_path)
    result = run_daemon(daemon_args(write_config(tmp_path), tiny_model_path, source))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_model_is_one_clear_error(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a model at all")
    write_photo_folder(tmp_path / "p")
    result = run_daemon(daemon_args(write_config(tmp_path), bogus, str(tmp_path / "p")))
    assert result.returncode == 2
    assert "error: " in result.stderr and "bogus" in result.stderr and "Traceback" not in result.stderr


def test_check_config_exit_codes(tiny_model_path, tmp_path):
    good = write_config(tmp_path)
    ok = run_daemon(daemon_args(good, tiny_model_path, "/dev/video99", "--check-config"))
    # No camera is opened by --check-config: /dev/video99 does not exist here and that is fine.
    assert ok.returncode == 0, ok.stderr
    assert "config OK" in ok.stderr and "tiny.tflite" in ok.stderr
    # It names the detector that will run and the weight file it loaded, and how faces will be cut.
    assert (
        "detector: yunet (" in ok.stderr
        and "models/face_detection_yunet_2023mar.onnx), chosen by auto" in ok.stderr
    )
    assert "faces aligned and framed from the eyes" in ok.stderr
    haar = run_daemon(
        daemon_args(good, tiny_model_path, "/dev/video99", "--check-config", "--detector", "haar")
    )
    assert (
        haar.returncode == 0
        and "detector: haar (" in haar.stderr
        and "haarcascade_frontalface" in haar.stderr
    )
    assert "faces cut by the box + 0.1 margin" in haar.stderr

    unknown = write_config(tmp_path, "detector:\n  typ: haar\n", name="typo.yaml")
    bad = run_daemon(daemon_args(unknown, tiny_model_path, "picamera2", "--check-config"))
    assert bad.returncode == 2 and "detector.typ: unknown key" in bad.stderr

    missing_model = run_daemon(daemon_args(good, tmp_path / "missing.tflite", "picamera2", "--check-config"))
    assert missing_model.returncode == 2 and "missing.tflite" in missing_model.stderr
    assert "Traceback" not in bad.stderr + missing_model.stderr


def test_missing_camera_at_start_is_retried_not_fatal(tiny_model_path, tmp_path):
    """A USB camera named by its stable /dev/v4l/by-id path may enumerate after the service starts."""
    camera = "/dev/v4l/by-id/usb-Not_Plugged_In-video-index0"
    args = daemon_args(
        write_config(tmp_path), tiny_model_path, camera, "--publish", "stdout", "--log-level", "DEBUG"
    )
    daemon = DaemonProcess(args, tmp_path)
    try:
        daemon.wait_stderr("retrying with backoff", timeout=60)
        # Each failed open logs "...; retrying in N s" (after the first only at DEBUG: a day away is not
        # thousands of journal lines): wait for a reopen attempt after the first failure.
        assert wait_until(lambda: daemon.stderr.count("; retrying in") >= 2, timeout=30), daemon.stderr
        assert daemon.stderr.count("WARNING edge.capture.thread") == 1, daemon.stderr
        assert daemon.proc.poll() is None, daemon.stderr
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 0
        assert "no such device" in daemon.stderr and "Traceback" not in daemon.stderr
    finally:
        daemon.stop()


def test_snapshots_keep_only_the_newest_and_a_bad_folder_is_a_config_error(tiny_model_path, tmp_path):
    expected = write_photo_folder(tmp_path / "photos")
    with_faces = sum(1 for n in expected.values() if n)
    assert with_faces > 2
    snaps = tmp_path / "snaps"
    config = write_config(
        tmp_path, f"stats:\n  interval_s: 0\ndebug:\n  snapshot_dir: {snaps}\n  snapshot_limit: 2\n"
    )
    result = run_daemon(daemon_args(config, tiny_model_path, str(tmp_path / "photos"), "--publish", "stdout"))
    assert result.returncode == 0, result.stderr
    events = _events(result.stdout)
    assert len(events) == with_faces
    kept = sorted(p.name for p in snaps.iterdir())
    # Only the last two events' frames are left, named oldest first; no temp files behind.
    assert kept == sorted(kept) and len(kept) == 2
    assert [int(name[-12:-4]) for name in kept] == [e["frame_index"] for e in events[-2:]]

    (tmp_path / "afile").write_text("")
    bad = write_config(tmp_path, f"debug:\n  snapshot_dir: {tmp_path / 'afile' / 'snaps'}\n", name="bad.yaml")
    for extra in (("--check-config",), ()):
        result = run_daemon(daemon_args(bad, tiny_model_path, str(tmp_path / "photos"), *extra))
        assert result.returncode == 2, result.stderr
        assert f"error: debug.snapshot_dir: {tmp_path / 'afile'} is not a folder" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_stock_host_name_as_device_id_is_warned_about(tiny_model_path, tmp_path):
    """Two Pis left at Raspberry Pi Imager's `raspberrypi` would fight over one MQTT identity."""
    args = daemon_args(write_config(tmp_path), tiny_model_path, "/dev/video99", "--check-config",
                       "--publish", "mqtt", "--device-id", "raspberrypi")  # fmt: skip
    result = run_daemon(args)
    assert result.returncode == 0, result.stderr
    assert "device_id 'raspberrypi' is a stock host name" in result.stderr and "config OK" in result.stderr
    quiet = run_daemon(daemon_args(write_config(tmp_path), tiny_model_path, "/dev/video99", "--check-config",
                                   "--publish", "mqtt"))  # fmt: skip
    assert "stock host name" not in quiet.stderr  # test-pi is this device's own name
