"""The live preview's parts, in-process: address and token rules, the overlay, the hub's hand-over (nothing
done while nobody watches, only the newest frame kept, slow viewers counted), and the HTTP server's refusals.
The page in a real browser against the real daemon is tests/edge/test_preview_browser.py."""

from __future__ import annotations

import base64
import http.client
import socket
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edge.config import Config, ConfigError, PreviewConfig, load_config
from edge.preview import overlay
from edge.preview.address import host_header_is_loopback, is_loopback, parse_bind
from edge.preview.auth import CREDENTIAL_NAME, authorized, load_token
from edge.preview.hub import PreviewHub
from edge.preview.server import PreviewError, PreviewServer, start_preview
from edge.stats import StatsCollector
from edge.track import FaceState
from testbed.daemonproc import run_daemon, write_config
from testbed.facesdata import one_face_frame

LABELS = ["angry", "happy", "sad"]
TOKEN = "correct-horse-battery"


def basic(password: str, user: str = "me") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- addresses and the token ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", {"enabled": True, "port": 8080}),
        ("0.0.0.0:9000", {"enabled": True, "port": 9000, "host": "0.0.0.0"}),
        ("[::1]:8081", {"enabled": True, "port": 8081, "host": "::1"}),
        ("pi.lan:80", {"enabled": True, "port": 80, "host": "pi.lan"}),
    ],
)
def test_preview_flag_parses_host_and_port(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "host:", "::1:8080", "1.2.3.4:80:80", "8080x"])
def test_preview_flag_refuses_what_is_not_host_port(text):
    with pytest.raises(ConfigError, match=r"^--preview: expected \[HOST:\]PORT"):
        parse_bind(text)


def test_loopback_means_this_machine_only():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "pi.lan", "localhost.evil.com"]))
    assert host_header_is_loopback("localhost:8080") and host_header_is_loopback("[::1]:8080")
    assert host_header_is_loopback("127.0.0.1")
    assert not host_header_is_loopback("rebind.attacker.example:8080")
    assert not host_header_is_loopback(None) and not host_header_is_loopback("")


def test_loopback_needs_no_token_but_any_other_bind_does():
    assert load_token(PreviewConfig(), environ={}) is None
    with pytest.raises(
        ConfigError, match=r"^preview\.host: 0\.0\.0\.0 is not a loopback address.*token_file"
    ):
        load_token(PreviewConfig(host="0.0.0.0"), environ={})


def test_token_comes_from_the_file_or_the_systemd_credential(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert load_token(PreviewConfig(host="0.0.0.0", token_file=str(token_file)), environ={}) == TOKEN
    (tmp_path / CREDENTIAL_NAME).write_text(TOKEN)
    assert load_token(PreviewConfig(host="0.0.0.0"), {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == TOKEN
    # install.sh leaves the credential file empty: no token, which a LAN bind refuses.
    (tmp_path / CREDENTIAL_NAME).write_text("")
    with pytest.raises(ConfigError, match="preview.host"):
        load_token(PreviewConfig(host="0.0.0.0"), {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_bad_tokens_are_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^preview\.token_file: file .*missing does not exist"):
        load_token(PreviewConfig(token_file=str(tmp_path / "missing")), environ={})
    short = tmp_path / "short"
    short.write_text("hunter2")
    with pytest.raises(ConfigError, match=r"^preview\.token_file: the token in .* has 7 characters"):
        load_token(PreviewConfig(token_file=str(short)), environ={})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + b"x" * 20)
    with pytest.raises(ConfigError, match=r"^preview\.token_file: .* is not UTF-8"):
        load_token(PreviewConfig(token_file=str(binary)), environ={})


def test_authorization_accepts_exactly_the_token():
    assert authorized(None, None)  # no token configured (loopback)
    assert authorized(basic(TOKEN), TOKEN) and authorized(basic(TOKEN, user=""), TOKEN)
    assert authorized(f"Bearer {TOKEN}", TOKEN)
    for header in [None, "", basic("wrong"), basic(TOKEN + "x"), basic(TOKEN[:-1]), f"Bearer {TOKEN[:-1]}",
                   "Basic !!notbase64", basic("", user=TOKEN), f"Digest {TOKEN}"]:  # fmt: skip
        assert not authorized(header, TOKEN), header


def test_preview_config_section_loads_and_rejects_unknown_keys(tmp_path):
    config = load_config(write_config(tmp_path, "preview:\n  enabled: true\n  port: 9001\n"), environ={})
    assert (config.preview.enabled, config.preview.host, config.preview.port) == (True, "127.0.0.1", 9001)
    with pytest.raises(ConfigError, match=r"^preview\.prot: unknown key"):
        load_config(write_config(tmp_path, "preview:\n  prot: 9001\n"), environ={})
    with pytest.raises(ConfigError, match=r"^preview\.max_fps: must be a number in 0\.1\.\.30"):
        load_config(environ={"EMOTION_EDGE_PREVIEW__MAX_FPS": "0"}, path=write_config(tmp_path))


def test_check_config_refuses_a_lan_bind_without_a_token(tmp_path):
    config = write_config(tmp_path, "stats:\n  interval_s: 0\n")
    args = [sys.executable, "-m", "edge.cli", "--config", str(config), "--check-config"]
    result = run_daemon([*args, "--preview", "0.0.0.0:8080"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr  # one line
    assert result.stderr.startswith("error: preview.host: 0.0.0.0 is not a loopback address")
    assert "Traceback" not in result.stderr
    result = run_daemon([*args, "--preview", "nonsense"])
    assert result.returncode == 2 and result.stderr.startswith("error: --preview: expected [HOST:]PORT")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    ok = run_daemon(
        [*args, "--preview", "0.0.0.0:8080"], env={"EMOTION_EDGE_PREVIEW__TOKEN_FILE": str(token_file)}
    )
    assert ok.returncode == 0, ok.stderr


# --- the overlay ---------------------------------------------------------------------------------------------------


def green_mask(image: np.ndarray) -> np.ndarray:
    b, g, r = (image[:, :, i].astype(int) for i in range(3))
    return (g > 200) & (r < 80) & (b < 80)


def test_overlay_draws_box_and_label_on_a_copy():
    frame, (box,) = one_face_frame(320, 240)
    before = frame.copy()
    drawn = overlay.draw(frame, [{"track_id": 3, "box": box, "emotion": "happy", "confidence": 0.91}])
    assert np.array_equal(frame, before), "the pipeline's frame must not be drawn on"
    x, y, w, h = box
    mask = green_mask(drawn)
    assert not green_mask(frame).any()
    assert mask[y + h // 2, x] and mask[y + h // 2, x + w] and mask[y, x + w // 2]  # the box's edges
    assert mask[:y, x : x + w].sum() > 100  # the label's background above the box
    assert overlay.label_of({"track_id": 3, "emotion": "happy", "confidence": 0.91}) == "#3 happy 91%"


def test_overlay_scales_wide_frames_and_accepts_odd_ones():
    wide = np.zeros((720, 1280, 3), np.uint8)
    drawn = overlay.draw(
        wide, [{"track_id": 1, "box": [640, 360, 100, 100], "emotion": "sad", "confidence": 0.5}]
    )
    assert drawn.shape == (360, 640, 3)
    assert green_mask(drawn)[380 // 2 - 5 : 460 // 2, 320].any()  # the box, halved with the frame
    assert overlay.draw(np.zeros((48, 64), np.uint16), []).shape == (48, 64, 3)
    assert overlay.draw(np.zeros((48, 64, 4), np.uint8), []).shape == (48, 64, 3)
    assert overlay.draw(np.zeros((0, 0), np.uint8), []) is None
    jpeg = overlay.encode_jpeg(overlay.placeholder("waiting for camera"))
    assert jpeg[:2] == b"\xff\xd8"


# --- the hub -------------------------------------------------------------------------------------------------------


def face(track_id=1, box=(40, 30, 60, 60), missing=0) -> FaceState:
    return FaceState(track_id, box, np.array([0.1, 0.8, 0.1]), 1, missing=missing)


def result(faces):
    return SimpleNamespace(faces=faces)


CAPTURE = SimpleNamespace(captured=10, dropped=1)


def frame(index=0):
    return SimpleNamespace(image=np.full((120, 160, 3), index, np.uint8), index=index)


def test_hub_does_nothing_for_frames_while_nobody_watches():
    hub = PreviewHub(PreviewConfig(), "cam", LABELS)
    stats = StatsCollector()
    event = {"timestamp": "2026-11-29T10:00:00.000Z", "frame_index": 0,
             "faces": [{"track_id": 1, "emotion": "happy", "confidence": 0.8}], "changes": []}  # fmt: skip
    hub.offer(frame(), result([face()]), stats, CAPTURE, event)
    assert hub._slot is None and hub._stats is None and hub.frames_drawn == 0  # no copy, no figures
    status = hub.status()  # the page's list is kept though: one reference per published event
    assert status["events"][0]["faces"] == [{"track_id": 1, "emotion": "happy", "confidence": 0.8}]
    assert status["camera"]["state"] == "live" and status["preview"]["viewers"] == 0


def test_hub_keeps_only_the_newest_frame_and_counts_the_rest():
    hub = PreviewHub(PreviewConfig(max_clients=1), "cam", LABELS)
    assert hub.add_viewer() == 0
    assert hub.add_viewer() is None, "max_clients is a hard limit"
    stats = StatsCollector()
    for index in range(5):
        hub.offer(frame(index), result([face(), face(2, missing=1)]), stats, CAPTURE)
    image, faces = hub._slot
    assert image[0, 0, 0] == 4 and hub.frames_skipped == 4
    assert faces == [
        {"track_id": 1, "box": (40, 30, 60, 60), "emotion": "happy", "confidence": pytest.approx(0.8)}
    ]
    assert hub._stats["dropped_frames"] == 1  # figures are made while someone watches
    hub.remove_viewer()
    assert not hub._watched.is_set() and hub._slot is None  # the last viewer gone: no frame kept


def test_hub_encoder_is_capped_and_slow_viewers_are_counted():
    hub = PreviewHub(PreviewConfig(max_fps=10), "cam", LABELS).start()
    try:
        seq = hub.add_viewer()
        stats = StatsCollector()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # a 100 fps camera
            hub.offer(frame(), result([face()]), stats, CAPTURE)
            time.sleep(0.01)
        assert 3 <= hub.frames_drawn <= 12, hub.frames_drawn  # ~10 in the second, never the camera's 100
        latest, jpeg = hub.next_jpeg(seq, timeout=1)
        assert jpeg[:2] == b"\xff\xd8"
        assert hub.viewer_drops == latest - 1  # a viewer that took only the latest missed all before it
        assert seq == 0
    finally:
        hub.remove_viewer()
        hub.close()
    assert hub.next_jpeg(latest, timeout=1) is None  # a stopped hub releases waiting viewers at once


def test_hub_streams_a_placeholder_while_the_camera_is_away():
    now = [100.0]
    hub = PreviewHub(PreviewConfig(), "cam0", LABELS, clock=lambda: now[0])
    assert hub.camera() == {"state": "waiting", "text": "waiting for camera (cam0)"}
    hub.offer(frame(), result([]), StatsCollector(), CAPTURE)
    assert hub.camera()["state"] == "live"
    now[0] += 7
    assert hub.camera() == {"state": "away", "text": "no frames for 7 s: camera away? (cam0)"}
    assert hub._away_frame()[:2] == b"\xff\xd8"


# --- the HTTP server -------------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """A running preview server with a token, fed by a fake 'camera' thread."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = Config()
    config.device_id = "unit-pi"
    config.preview = PreviewConfig(enabled=True, port=free_port(), token_file=str(token_file), max_clients=2)
    server = start_preview(config, "cam", LABELS, publishers=[])
    stop = threading.Event()
    picture, (box,) = one_face_frame(320, 240)

    def camera():
        stats = StatsCollector()
        while not stop.is_set():
            server.offer(
                SimpleNamespace(image=picture, index=0), result([face(box=tuple(box))]), stats, CAPTURE
            )
            time.sleep(0.02)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    yield server, config.preview.port
    stop.set()
    thread.join()
    server.close()


def get(port, path, headers=None, host=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}", **(headers or {})})
    return conn, conn.getresponse()


def test_server_refuses_without_the_token_and_sends_no_frame(served):
    _, port = served
    for headers in [{}, {"Authorization": basic("wrong-token-123")}, {"Authorization": f"Bearer {TOKEN}x"}]:
        for path in ["/", "/stream.mjpg", "/api/status"]:
            conn, response = get(port, path, headers)
            body = response.read()
            assert response.status == 401, (path, headers)
            assert response.getheader("WWW-Authenticate", "").startswith("Basic ")
            assert b"\xff\xd8" not in body and b"happy" not in body
            conn.close()


def test_server_serves_page_status_and_stream_with_the_token(served):
    server, port = served
    auth = {"Authorization": basic(TOKEN)}
    conn, page = get(port, "/", auth)
    html = page.read().decode()
    assert page.status == 200 and 'src="stream.mjpg"' in html and "http" not in html.split("<body>")[1]
    csp = page.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp
    conn, stream = get(port, "/stream.mjpg", auth)
    assert stream.status == 200 and stream.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    data = b""
    while data.count(b"\xff\xd9") < 2:
        data += stream.read1(65536)
    assert data.startswith(b"--frame\r\nContent-Type: image/jpeg\r\n")
    conn2, status = get(port, "/api/status", {"Authorization": f"Bearer {TOKEN}"})
    body = status.read()
    assert status.status == 200 and b'"device_id":"unit-pi"' in body and b'"viewers":1' in body
    conn.close()
    conn2.close()


def test_server_bounds_viewers(served):
    _, port = served
    auth = {"Authorization": basic(TOKEN)}
    open_streams = [get(port, "/stream.mjpg", auth) for _ in range(2)]
    assert all(response.status == 200 for _, response in open_streams)
    conn, third = get(port, "/stream.mjpg", auth)
    assert third.status == 503 and b"preview.max_clients: 2" in third.read()
    for c, _ in open_streams:
        c.close()
    conn.close()


def test_without_a_token_only_local_host_names_are_served():
    config = Config()
    config.preview = PreviewConfig(enabled=True, port=free_port())
    server = start_preview(config, "cam", LABELS, publishers=[])
    try:
        port = config.preview.port
        for host in [f"localhost:{port}", f"127.0.0.1:{port}"]:
            conn, response = get(port, "/api/status", host=host)
            assert response.status == 200, host
            conn.close()
        conn, response = get(port, "/api/status", host=f"rebind.example.com:{port}")
        assert response.status == 403 and b'"events"' not in response.read()
        conn.close()
    finally:
        server.close()


def test_a_taken_port_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = Config()
        config.preview = PreviewConfig(enabled=True, port=port)
        with pytest.raises(
            PreviewError, match=rf"^preview: cannot listen on 127\.0\.0\.1:{port}: Address already in use"
        ):
            PreviewServer(config.preview, PreviewHub(config.preview, "cam", LABELS), None)


def test_daemon_with_its_preview_port_taken_exits_2_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path)
        args = [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", "edge/samples"]
        result = run_daemon([*args, "--preview", str(port), "--log-level", "ERROR"])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("INFO: ")]  # TFLite's own
    assert lines == [f"error: preview: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert result.stdout == ""  # it stopped before the first frame
