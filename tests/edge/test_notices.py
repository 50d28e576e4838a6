"""edge/notices.py: what the image's settings step could not apply reaches the daemon's user: the journal at
start, systemd's STATUS=, --check-config and the preview page. The notices file is pointed at a temporary one.
"""

from __future__ import annotations

import logging

import pytest

from edge import cli, notices
from edge.config import PreviewConfig, load_config
from edge.daemon import Daemon
from edge.preview.hub import PreviewHub
from testbed.facesdata import write_photo_folder
from tests.edge.test_notify import NotifyListener

PROBLEM = "emotion-edge.txt line 12: mqtt_port: must be an integer in 1..65535, got 'abc'; not applied"


@pytest.fixture
def notices_file(tmp_path, monkeypatch):
    path = tmp_path / "notices"
    monkeypatch.setattr(notices, "NOTICES_PATH", path)
    return path


def test_no_file_is_no_notices_and_a_bad_file_never_raises(notices_file):
    assert notices.read_notices() == []
    notices_file.write_bytes(b"\xff\xfe bad bytes\n\n  spaced  \n" + b"x" * 1000 + b"\n")
    got = notices.read_notices()
    assert got[0] == "\ufffd\ufffd bad bytes" and got[1] == "spaced"
    assert len(got[2]) == notices.MAX_LENGTH and got[2].endswith("...")
    notices_file.write_text("".join(f"problem {i}\n" for i in range(50)))
    assert len(notices.read_notices()) == notices.MAX_NOTICES


def test_status_suffix_names_the_first_and_counts_the_rest():
    assert notices.status_suffix([]) == ""
    assert notices.status_suffix([PROBLEM]) == f"; settings: {PROBLEM}"
    assert notices.status_suffix([PROBLEM, "b", "c"]) == (
        f"; settings: {PROBLEM} (+2 more: journalctl -u emotion-edge-settings)"
    )


def test_check_config_prints_them_as_warnings_and_still_passes(
    notices_file, tmp_path, tiny_model_path, capsys
):
    notices_file.write_text(PROBLEM + "\n")
    config = tmp_path / "config.yaml"
    config.write_text("device_id: notices-test\n")
    assert cli.main(["--check-config", "--config", str(config), "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: settings: {PROBLEM}\n" in err and "config OK: classifier: tiny.tflite" in err


def test_the_daemon_logs_them_and_puts_the_first_in_its_ready_status(
    notices_file, tmp_path, tiny_model_path, monkeypatch, caplog
):
    notices_file.write_text(PROBLEM + "\nsecond problem\n")
    photos = tmp_path / "photos"
    write_photo_folder(photos)
    socket_path = str(tmp_path / "notify.sock")
    listener = NotifyListener(socket_path)
    monkeypatch.setenv("NOTIFY_SOCKET", socket_path)
    (tmp_path / "config.yaml").write_text("")
    config = load_config(
        tmp_path / "config.yaml",
        environ={},
        overrides={"source": {"uri": str(photos)}, "model": {"path": str(tiny_model_path)}, "stats": {"interval_s": 0},
                   "device_id": "notices-test"},
    )  # fmt: skip
    try:
        with caplog.at_level(logging.WARNING, logger="edge.daemon"):
            assert Daemon(config).run() == 0
        listener.wait_for("READY=1", 5)
    finally:
        listener.close()
    ready = next(m for _, m in listener.messages if m.startswith("READY=1"))
    assert ready.endswith(f"; settings: {PROBLEM} (+1 more: journalctl -u emotion-edge-settings)")
    logged = [r.getMessage() for r in caplog.records if r.name == "edge.daemon"]
    assert f"settings: {PROBLEM}" in logged and "settings: second problem" in logged


def test_the_preview_page_status_carries_them(notices_file):
    notices_file.write_text(PROBLEM + "\n")
    hub = PreviewHub(PreviewConfig(), "test-source", ["happy"])
    assert hub.status()["notices"] == [PROBLEM]
    notices_file.unlink()
    assert PreviewHub(PreviewConfig(), "test-source", ["happy"]).status()["notices"] == []
