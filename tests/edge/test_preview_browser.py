"""The live preview page in a real browser: Debian's chromium, driven through its chromedriver by Selenium,
against the real daemon (a subprocess) watching a live MJPEG camera on localhost that shows a real face.

Selenium rather than raw DevTools: chromedriver is the automation interface Debian ships with chromium
(`chromium-driver`), Selenium is its ordinary client (waits, element screenshots, DevTools commands for
the auth header), and it runs fully offline when given the driver's path (no Selenium Manager download).
Skipped, saying why, where chromium, chromedriver or selenium is missing; `.ci/run` installs them.

Set EMOTION_TEST_PREVIEW_SCREENSHOT=docs/preview.png to keep the page's screenshot (README shows it).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from testbed.daemonproc import DaemonProcess, MjpegServer, daemon_args, write_config
from testbed.facesdata import one_face_frame

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "preview-test-token-0123"
CAMERA_FPS = 10
# What chromium needs to run headless as root in a container, and to make no network traffic of its own.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1100,720"]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(
        not (
            os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER) and importlib.util.find_spec("selenium")
        ),
        reason="needs chromium, chromium-driver (apt) and selenium (the dev extra); .ci/run installs them",
    ),
    pytest.mark.long,  # a real browser: ~25 s in all, left to `make test`
]


def basic_auth(token: str) -> str:
    return "Basic " + base64.b64encode(f"viewer:{token}".encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def camera_frames() -> tuple[list[np.ndarray], tuple[int, int, int, int]]:
    """The astronaut's face, with a white square sliding down the left margin: a scene that changes."""
    base, (box,) = one_face_frame(480, 360)
    frames = []
    for step in range(12):
        image = base.copy()
        y = 20 + step * 25
        cv2.rectangle(image, (8, y), (36, y + 20), (255, 255, 255), cv2.FILLED)
        frames.append(image)
    return frames, tuple(box)


def green_mask(image: np.ndarray) -> np.ndarray:
    """The overlay's pure green (edge/preview/overlay.py BOX_COLOR), with JPEG's tolerance."""
    b, g, r = (image[:, :, i].astype(int) for i in range(3))
    return (g > 180) & (r < 100) & (b < 100)


def events_so_far(daemon: DaemonProcess) -> int:
    return sum(1 for line in daemon.stdout.splitlines() if line.startswith("{"))


def request(url: str, auth: str | None = None, read: int = 200_000):
    """(status, body up to `read` bytes) of a GET, 401s included."""
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read(read)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def read_mjpeg_frame(url: str, auth: str) -> np.ndarray:
    req = urllib.request.Request(url, headers={"Authorization": auth})
    with urllib.request.urlopen(req, timeout=20) as response:
        data = b""
        while True:
            data += response.read1(65536)
            start = data.find(b"\xff\xd8")
            end = data.find(b"\xff\xd9", start)
            if start >= 0 and end > 0:
                return cv2.imdecode(np.frombuffer(data[start : end + 2], np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The daemon with the preview on (token required), watching a live 10 fps MJPEG camera."""
    workdir = tmp_path_factory.mktemp("preview")
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    config = write_config(workdir, f"stats:\n  interval_s: 0\npreview:\n  token_file: {token_file}\n")
    frames, box = camera_frames()
    model = os.path.join(os.path.dirname(__file__), "..", "..", "edge", "models", "default.tflite")
    with MjpegServer(frames, fps=CAMERA_FPS) as camera:
        args = daemon_args(config, model, camera.url, "--preview", str(port), "--policy", "every")
        daemon = DaemonProcess(args, workdir)
        try:
            daemon.wait_stderr("preview: http://127.0.0.1", timeout=90)
            yield {"url": f"http://127.0.0.1:{port}/", "daemon": daemon, "box": box, "frame": frames[0],
                   "camera": camera}  # fmt: skip
        finally:
            daemon.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="preview-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def authorize(driver, token: str) -> None:
    """Every request the page makes (page, stream, status) carries the token, as after the login prompt."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": basic_auth(token)}})


def image_shot(driver) -> np.ndarray:
    png = driver.find_element("id", "live").screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_page_shows_the_live_view_with_boxes_and_the_events(live, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    authorize(browser, TOKEN)
    browser.get(live["url"])
    wait = WebDriverWait(browser, 45, poll_frequency=0.25)
    wait.until(lambda d: len(d.find_elements("css selector", "#events li")) >= 3)
    wait.until(lambda d: d.execute_script("return document.getElementById('live').naturalWidth") > 0)
    assert browser.find_element("id", "camera").text.startswith("live: http://127.0.0.1")
    assert browser.find_element("id", "device").text == "test-pi"
    first_event = browser.find_element("css selector", "#events li").text
    assert "#1 " in first_event and "%" in first_event, first_event  # track id, emotion, confidence
    wait.until(lambda d: "detect p50 / p95" in d.find_element("id", "stats").text)
    stats = browser.find_element("id", "stats").text
    assert "detect p50 / p95" in stats and "dropped frames" in stats and "outputs\nstdout" in stats

    first = image_shot(browser)
    time.sleep(1.5)
    second = image_shot(browser)
    changed = np.abs(first.astype(int) - second.astype(int)).max(axis=2) > 40
    assert changed.sum() > 100, "the live image did not change"
    # The box and label are drawn where the face is: green pixels around the known face, none in the camera's.
    assert not green_mask(live["frame"]).any()
    shot = second
    mask = green_mask(shot)
    assert mask.sum() > 200, "no box drawn in the browser's image"
    scale = shot.shape[1] / live["frame"].shape[1]
    x, y, w, h = (v * scale for v in live["box"])
    ys, xs = np.nonzero(mask)
    # The label's filled strip above the box is as wide as its text (which varies with the emotion), so the
    # box is found by its sides: in the face's middle rows the green pixels are the two vertical edges.
    middle = mask[int(y + 0.3 * h) : int(y + 0.9 * h)]
    _, side_xs = np.nonzero(middle)
    assert side_xs.size > 20, "no box sides across the face's middle rows"
    left, right = side_xs.min(), side_xs.max()
    assert abs((left + right) / 2 - (x + w / 2)) < 0.3 * w, "the box is not around the face"
    assert 0.6 * w < right - left < 1.5 * w, "the box is not the face's size"
    assert y - 0.6 * h < np.median(ys) < y + h, "the box is not around the face"

    page = tmp_path / "preview.png"
    browser.save_screenshot(str(page))
    assert page.stat().st_size > 10_000
    keep = os.environ.get("EMOTION_TEST_PREVIEW_SCREENSHOT")
    if keep:  # 128 colours: a quarter of the bytes, for the README
        from PIL import Image

        Image.open(page).convert("RGB").quantize(128).save(keep, optimize=True)


def test_the_stream_frame_has_the_box_around_the_face(live):
    frame = read_mjpeg_frame(live["url"] + "stream.mjpg", basic_auth(TOKEN))
    assert frame.shape == live["frame"].shape  # 480 px wide: not scaled
    x, y, w, h = live["box"]
    mask = green_mask(frame)
    # Haar's box is within a few pixels of where the face was pasted: its sides cross the face's middle row.
    row = mask[y + h // 2]
    assert row[max(0, x - 15) : x + 15].any() and row[x + w - 15 : x + w + 15].any()
    assert not row[x + 20 : x + w - 20].any()  # nothing drawn over the face itself
    assert mask[: max(0, y - 2), x : x + w].sum() > 100  # the label above it


def test_a_wrong_or_missing_token_gets_401_and_no_frame(live, browser):
    for auth in [None, basic_auth("not-the-token-123"), basic_auth(TOKEN[:-1]), "Bearer " + TOKEN + "4"]:
        for path in ["", "stream.mjpg", "api/status"]:
            status, body = request(live["url"] + path, auth)
            assert status == 401, (path, auth)
            assert b"\xff\xd8" not in body and b"events" not in body and b"<script" not in body
    # The browser with a wrong password: a 401 (the browser would ask for the password), no page, no image.
    authorize(browser, "not-the-token-123")
    browser.get(live["url"])
    navigation = "return performance.getEntriesByType('navigation')[0].responseStatus"
    assert browser.execute_script(navigation) == 401
    assert not browser.find_elements("id", "live") and not browser.find_elements("tag name", "img")


def test_a_stalled_viewer_does_not_slow_the_daemon(live, browser):
    browser.get("about:blank")  # the same load in both measurements
    daemon = live["daemon"]

    def rate(seconds: float) -> float:
        before = events_so_far(daemon)
        time.sleep(seconds)
        return (events_so_far(daemon) - before) / seconds

    baseline = rate(4)
    url = live["url"]
    viewers = request(url + "api/status", basic_auth(TOKEN))[1].count(b'"viewers":')
    assert viewers == 1
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a viewer on a dead link: reads nothing
    stalled.connect(("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))))
    stalled.sendall(
        f"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\nAuthorization: {basic_auth(TOKEN)}\r\n\r\n".encode()
    )
    try:
        time.sleep(2)  # long enough to fill its buffers: the server's writes to it now block
        drawn_before = status_of(url)["preview"]["frames_drawn"]
        during = rate(5)
        status = status_of(url)
        assert status["preview"]["viewers"] == 1
        assert status["preview"]["frames_drawn"] - drawn_before >= 10, "the encoder stalled with the viewer"
        assert during >= 0.6 * baseline, f"{during:.1f} events/s with a stalled viewer, {baseline:.1f} before"
        # The stalled viewer is cut off after the send timeout (10 s), freeing its place.
        deadline = time.monotonic() + 20
        while status_of(url)["preview"]["viewers"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status_of(url)["preview"]["viewers"] == 0
    finally:
        stalled.close()
    assert baseline >= 0.5 * CAMERA_FPS, f"the daemon ran at {baseline:.1f} events/s"
    assert "Traceback" not in daemon.stderr


def status_of(url: str) -> dict:
    import json

    status, body = request(url + "api/status", basic_auth(TOKEN))
    assert status == 200
    return json.loads(body)


def test_the_page_says_when_the_camera_is_away(live, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    live["camera"].close()  # unplugged (the last test: the camera stays away)
    authorize(browser, TOKEN)
    browser.get(live["url"])
    badge = WebDriverWait(browser, 30, poll_frequency=0.25).until(
        lambda d: (
            d.find_element("id", "camera") if "no frames for" in d.find_element("id", "camera").text else None
        )
    )
    assert "camera away?" in badge.text and "away" in badge.get_attribute("class")
    frame = read_mjpeg_frame(live["url"] + "stream.mjpg", basic_auth(TOKEN))  # the stream says so too
    assert not green_mask(frame).any() and np.median(frame) == pytest.approx(40, abs=3)
    assert live["daemon"].proc.poll() is None, "the daemon keeps running while the camera is away"
