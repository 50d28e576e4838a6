"""`make ha-check`'s checks: the daemon's Home Assistant entities against a real Home Assistant.

Started by tools/ha-check.sh with the Debian root it made (Home Assistant core in a venv there, run by chroot:
the root shares this machine's network, so everything talks over 127.0.0.1). Here:

1. a real Mosquitto on a free port, and a live camera: an MJPEG stream on localhost whose scene this script
   switches between the shipped sample photos (edge/samples: one face, two faces) and an empty room;
2. Home Assistant with a fresh config folder, set up only through its own APIs: onboarding (the owner, the
   core config, analytics, the integration step), then the MQTT integration through its config flow;
3. the daemon (`python -m edge.cli`, the base install) publishing to that broker, with the preview on;
4. through Home Assistant's REST and WebSocket APIs: the device (with its configuration_url) and every entity
   the daemon announced, under the unique ids `discovery_messages` gives, with the expected device and state
   classes; the device triggers; the disabled score sensors enabled through the entity registry; then, scene by
   scene, presence, faces, emotion, confidence and scores following the retained state on the broker, the
   event entity firing appeared/left with the emotion in its attributes, the triggers of the README's two
   example automations firing, the camera problem while the stream is away, the state entities expiring
   while the daemon is frozen (SIGSTOP: its connection stays up) and back after SIGCONT, and every entity
   unavailable after SIGKILL (the broker's last will);
5. optionally a screenshot of the device page (headless chromium, logged in with the owner's tokens).

The result (Home Assistant version, entities seen with their last state, every check) goes to --out as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import websocket
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.config import load_config  # noqa: E402
from edge.publish.homeassistant import discovery_messages  # noqa: E402
from testbed.mosquitto import MosquittoBroker, find_mosquitto, free_port  # noqa: E402

DEVICE_ID = "ha-check"
USER, PASSWORD = "ha-check", "ha-check-password"
HEARTBEAT_S = 5  # the daemon's state heartbeat here: the state entities expire after 3 of them (15 s)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


class CheckFailed(AssertionError):
    pass


RESULTS: list[dict] = []


def check(ok: bool, name: str, detail: object = "") -> None:
    RESULTS.append({"check": name, "ok": bool(ok), "detail": str(detail)[:500]})
    print(f"ha_check: {'ok  ' if ok else 'FAIL'} {name}{'' if ok else f': {detail}'}", flush=True)
    if not ok:
        raise CheckFailed(f"{name}: {detail}")


def poll(fn, timeout: float, interval: float = 0.25):
    """fn() until it returns something truthy (returned) or `timeout` passes (the last value returned)."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


# --- the camera ------------------------------------------------------------------------------------------


class SceneCamera:
    """A live MJPEG stream on 127.0.0.1 showing whichever scene was set last; `away()` ends it (unplugged),
    `back()` serves again on the same port."""

    def __init__(self, scenes: dict[str, np.ndarray], fps: float = 8.0):
        self.jpegs = {name: cv2.imencode(".jpg", image)[1].tobytes() for name, image in scenes.items()}
        self.scene = next(iter(self.jpegs))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.period = 1.0 / fps
        self._server = None

    def show(self, scene: str) -> None:
        self.scene = scene

    def back(self) -> None:
        camera, stopping = self, threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not stopping.is_set():
                        jpeg = camera.jpegs[camera.scene]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")  # fmt: skip
                        time.sleep(camera.period)
                except OSError:
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._stopping = stopping
        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def away(self) -> None:
        if self._server is not None:
            self._stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def scenes() -> dict[str, np.ndarray]:
    samples = REPO / "edge" / "samples"
    face = cv2.imread(str(samples / "astronaut_640x480.jpg"))
    pair = cv2.imread(str(samples / "astronaut_pair_640x480.jpg"))
    return {"empty": np.full_like(face, 96), "face": face, "pair": pair}


# --- Home Assistant --------------------------------------------------------------------------------------


class HomeAssistant:
    """Home Assistant core started in the root by chroot, on 127.0.0.1:<port>, with a fresh config folder."""

    def __init__(self, root: Path, hass: str, workdir: Path):
        self.root, self.hass = root, hass
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = f"{self.url}/"
        self.config_dir = workdir / "ha-config"  # inside the root: workdir is under root/tmp
        self.log_path = workdir / "home-assistant.log"
        self.token: str | None = None
        self.tokens: dict = {}
        self.version = ""
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        shutil.rmtree(self.config_dir, ignore_errors=True)
        self.config_dir.mkdir(parents=True)
        # Only what a fresh install's `default_config:` would not give a headless check: a fixed port, the
        # recorder and the device page's history and logbook. Everything else is set up through the APIs.
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n  name: ha-check\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "frontend:\nconfig:\nrecorder:\n  commit_interval: 1\nhistory:\nlogbook:\n"
            "automation: !include automations.yaml\n"
            "logger:\n  default: warning\n"
        )
        (self.config_dir / "automations.yaml").write_text("[]\n")
        inside = "/" + str(self.config_dir.relative_to(self.root))
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(
            [
                "chroot",
                str(self.root),
                "/usr/bin/env",
                "-i",
                "HOME=/root",
                "LANG=C.UTF-8",
                "PATH=/usr/bin:/bin",
                "nice",
                "-n",
                "10",
                self.hass,
                "-c",
                inside,
                "--skip-pip",
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def request(self, method: str, path: str, body=None, form: dict | None = None, auth: bool = True):
        headers = {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise
            raise CheckFailed(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}"
            ) from None
        return json.loads(text) if text else None

    def wait_up(self, timeout: float = 600) -> None:
        def up():
            if self.proc.poll() is not None:
                raise CheckFailed(f"Home Assistant exited ({self.proc.returncode}): see {self.log_path}")
            try:
                return self.request("GET", "/api/onboarding", auth=False)
            except (urllib.error.URLError, ConnectionError, OSError):
                return None

        check(bool(poll(up, timeout, 1.0)), "Home Assistant answers on its HTTP port", self.log_path)

    def onboard(self) -> None:
        """The onboarding steps the frontend walks a new user through, by their own API."""
        user = self.request("POST", "/api/onboarding/users", auth=False, body={
            "client_id": self.client_id, "name": "ha-check", "username": USER, "password": PASSWORD,
            "language": "en"})  # fmt: skip
        self.tokens = self.request("POST", "/auth/token", auth=False, form={
            "grant_type": "authorization_code", "code": user["auth_code"], "client_id": self.client_id})  # fmt: skip
        self.token = self.tokens["access_token"]
        self.request("POST", "/api/onboarding/core_config", body={})
        self.request("POST", "/api/onboarding/analytics", body={})
        self.request("POST", "/api/onboarding/integration", body={
            "client_id": self.client_id, "redirect_uri": f"{self.url}/?auth_callback=1"})  # fmt: skip
        steps = self.request("GET", "/api/onboarding", auth=False)
        check(all(step["done"] for step in steps), "onboarding done through its API", steps)

    def add_mqtt(self, host: str, port: int) -> str:
        """The MQTT integration through its config flow, as Settings > Integrations > Add does it."""
        flow = self.request("POST", "/api/config/config_entries/flow", body={"handler": "mqtt"})
        if flow.get("type") == "menu":  # offered where a Supervisor add-on could be chosen instead
            flow = self.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                                body={"next_step_id": "broker"})  # fmt: skip
        form = {**form_defaults(flow.get("data_schema", [])), "broker": host, "port": port}
        result = self.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", body=form)
        check(result.get("type") == "create_entry", "MQTT integration added through its config flow", result)
        return result["result"]["entry_id"]

    def state(self, entity_id: str) -> dict | None:
        try:
            return self.request("GET", f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def form_defaults(schema: list[dict]) -> dict:
    """What the frontend submits for a form left as it is shown: defaults, an off switch for a required
    boolean, the first choice of a required select, the same inside collapsed sections."""
    form = {}
    for field in schema:
        selector = field.get("selector") or {}
        if field.get("type") == "expandable":
            form[field["name"]] = form_defaults(field.get("schema", []))
        elif "default" in field:
            form[field["name"]] = field["default"]
        elif field.get("required") and "boolean" in selector:
            form[field["name"]] = False
        elif field.get("required") and "select" in selector:
            option = selector["select"]["options"][0]
            form[field["name"]] = option["value"] if isinstance(option, dict) else option
    return form


class WebSocketApi:
    """Home Assistant's WebSocket API: `call` waits for its result; events of subscriptions are collected."""

    def __init__(self, ha: HomeAssistant):
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{ha.port}/api/websocket", timeout=60)
        assert json.loads(self.ws.recv())["type"] == "auth_required"
        self.ws.send(json.dumps({"type": "auth", "access_token": ha.token}))
        reply = json.loads(self.ws.recv())
        check(reply["type"] == "auth_ok", "WebSocket API authenticated", reply)
        self.version = reply.get("ha_version")
        self._id = 0
        self._results: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = json.loads(self.ws.recv())
            except (websocket.WebSocketException, OSError, ValueError):
                return
            with self._cond:
                if message.get("type") == "event":
                    self.events.append(message["event"])
                else:
                    self._results[message["id"]] = message
                self._cond.notify_all()

    def keep_http_config(self) -> None:
        """Confirm the HTTP settings (the check's port), as the owner does in the dialog that Home Assistant
        2026.11 and later show after they changed; older releases have no such step."""
        try:
            self.call("http/config/promote")
        except CheckFailed as exc:
            if "unknown_command" not in str(exc):
                raise

    def call(self, type_: str, **fields):
        with self._cond:
            self._id += 1
            ident = self._id
        self.ws.send(json.dumps({"id": ident, "type": type_, **fields}))
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._results, 60):
                raise CheckFailed(f"no answer to {type_}")
            reply = self._results.pop(ident)
        if not reply.get("success", True):
            raise CheckFailed(f"{type_} failed: {reply.get('error')}")
        return reply.get("result")


# --- the daemon ------------------------------------------------------------------------------------------


def write_daemon_config(
    workdir: Path, broker: MosquittoBroker, camera: SceneCamera, preview_port: int
) -> Path:
    path = workdir / "emotion-edge.yaml"
    path.write_text(yaml.safe_dump({
        "device_id": DEVICE_ID,
        "source": {"uri": camera.url, "width": None, "height": None, "fps": None},
        "publish": {"outputs": ["mqtt"], "state_heartbeat_s": HEARTBEAT_S},
        "mqtt": {"host": broker.host, "port": broker.port,
                 "discovery": {"configuration_url": f"http://127.0.0.1:{preview_port}/"}},
        "stats": {"interval_s": 2},
        "preview": {"enabled": True, "port": preview_port},
    }, sort_keys=False))  # fmt: skip
    return path


class RetainedState:
    """The daemon's retained state as the broker delivers it: what Home Assistant's entities must show."""

    def __init__(self, broker: MosquittoBroker, topic: str):
        self.latest: dict | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-check-state")
        self.client.on_connect = lambda c, *a: c.subscribe(topic, 1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        if message.payload:
            self.latest = json.loads(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the checks ------------------------------------------------------------------------------------------


def registry(ws: WebSocketApi, device_identifier: str):
    devices = ws.call("config/device_registry/list")
    device = next((d for d in devices if ["mqtt", device_identifier] in d["identifiers"]), None)
    if device is None:
        return None, {}
    entities = {
        e["unique_id"]: e for e in ws.call("config/entity_registry/list") if e["device_id"] == device["id"]
    }
    return device, entities


def check_registry(ha, ws, expected: list[tuple[str, dict]]) -> tuple[dict, dict[str, str]]:
    entity_configs = {p["unique_id"]: (t.split("/")[1], p) for t, p in expected if "unique_id" in p}
    identifier = next(iter(entity_configs.values()))[1]["device"]["identifiers"][0]
    found = poll(lambda: (lambda d, e: (d, e) if d and set(entity_configs) <= set(e) else None)(
        *registry(ws, identifier)), 120, 1.0)  # fmt: skip
    device, entities = found or registry(ws, identifier)
    check(device is not None, "the device is in the device registry", identifier)
    missing = sorted(set(entity_configs) - set(entities))
    check(
        not missing, f"all {len(entity_configs)} announced entities are registered under the device", missing
    )
    check(device["name"] == f"Emotion edge {DEVICE_ID}" and device["manufacturer"] == "emotion-edge",
          "device name and manufacturer", device)  # fmt: skip
    url = next(p for _, p in entity_configs.values())["device"].get("configuration_url")
    check(device.get("configuration_url") == url, "configuration_url is the preview page", device)
    wrong_platform, wrong_enabled = [], []
    for unique_id, (component, payload) in entity_configs.items():
        entry = entities[unique_id]
        if not entry["entity_id"].startswith(f"{component}."):
            wrong_platform.append((unique_id, entry["entity_id"]))
        if (entry["disabled_by"] == "integration") != (payload.get("enabled_by_default") is False):
            wrong_enabled.append((entry["entity_id"], entry["disabled_by"]))
    check(not wrong_platform, "each entity on its platform (sensor, binary_sensor, event)", wrong_platform)
    disabled = sum(p.get("enabled_by_default") is False for _, p in entity_configs.values())
    check(not wrong_enabled, f"{len(entity_configs) - disabled} entities enabled, {disabled} disabled by "
          "default, as announced", wrong_enabled)  # fmt: skip
    return device, {uid: entities[uid]["entity_id"] for uid in entity_configs}


def check_triggers(ws, device: dict, expected) -> None:
    wanted = {(p["type"], p["subtype"]) for t, p in expected if "/device_automation/" in t}

    def offered():
        triggers = ws.call("device_automation/trigger/list", device_id=device["id"])
        return {(t["type"], t["subtype"]) for t in triggers if t.get("domain") == "mqtt"}

    seen = poll(lambda: (lambda got: got if wanted <= got else None)(offered()), 60, 1.0) or offered()
    check(wanted <= seen, f"{len(wanted)} device triggers offered for the device", sorted(wanted - seen))


def enable_disabled(ha, ws, ids: dict[str, str], expected) -> None:
    """What a user does for a graph of a score: enable the entity. Home Assistant reloads the integration by
    itself 30 s later; the scenario starts once every enabled entity has a state."""
    enabled = [ids[p["unique_id"]] for _, p in expected if p.get("enabled_by_default") is False]
    for entity_id in enabled:
        ws.call("config/entity_registry/update", entity_id=entity_id, disabled_by=None)
    ready = poll(lambda: all(ha.state(entity_id) for entity_id in enabled), 120, 1.0)
    check(bool(ready), f"the {len(enabled)} disabled entities enabled through the entity registry",
          [e for e in enabled if not ha.state(e)])  # fmt: skip


def readme_automations() -> list[dict]:
    """The README's example automations (the YAML blocks after its `<!-- ha-automation -->` markers)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- ha-automation -->\s*```yaml\n(.*?)```", text, re.S)
    return [yaml.safe_load(block) for block in blocks]


def load_automations(ha, ws) -> list[str]:
    """The README's automations with this device's entity ids and, for actions, an event this script hears:
    their triggers and conditions are what is checked."""
    aliases = []
    old_syntax = version_tuple(ha.version) < (2024, 10)
    for number, automation in enumerate(readme_automations()):
        text = json.dumps(automation).replace("kitchen_pi", DEVICE_ID.replace("-", "_"))
        automation = json.loads(text)
        if old_syntax:  # the README's 2024.10 keys, as the releases before read them
            automation = {{"triggers": "trigger", "conditions": "condition"}.get(k, k): v
                          for k, v in automation.items()}  # fmt: skip
            automation["trigger"] = [{("platform" if k == "trigger" else k): v for k, v in t.items()}
                                     for t in automation["trigger"]]  # fmt: skip
        automation.pop("actions", None)
        action = [{"event": "ha_check_automation", "event_data": {"alias": automation["alias"]}}]
        automation["action" if old_syntax else "actions"] = action
        ha.request("POST", f"/api/config/automation/config/ha-check-{number}", body=automation)
        aliases.append(automation["alias"])
    check(len(aliases) == 2, "the README's two example automations loaded", aliases)
    ws.call("subscribe_events", event_type="ha_check_automation")
    return aliases


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def fired(ws, alias: str, since: int) -> bool:
    return any(e["event_type"] == "ha_check_automation" and e["data"].get("alias") == alias
               for e in ws.events[since:])  # fmt: skip


def entity_values(ha, ids: dict[str, str]) -> dict[str, dict]:
    return {entity_id: ha.state(entity_id) or {} for entity_id in ids.values()}


def follows_state(ha, ids, state: dict, labels) -> tuple[bool, dict]:
    """Home Assistant's values against the retained state, as its templates would derive them."""
    base = f"emotion_edge_{DEVICE_ID.replace('-', '_')}"
    in_view = state["face_count"] > 0
    present = state.get("present", in_view)  # true a few frames longer than a face is in view
    want = {
        f"{base}_presence": "on" if present else "off",
        f"{base}_face_count": str(state["face_count"]),
        f"{base}_emotion": state["dominant_emotion"],
        f"{base}_camera": "on" if state.get("camera") == "away" else "off",
    }
    if state["dominant_confidence"] is not None:
        want[f"{base}_confidence"] = round(state["dominant_confidence"] * 100, 1)
    for label in labels:
        want[f"{base}_score_{label}"] = round(state["scores"][label] * 100, 1) if in_view else "unknown"
    got = {}
    for unique_id, value in want.items():
        actual = (ha.state(ids[unique_id]) or {}).get("state")
        if isinstance(value, float):
            with contextlib.suppress(TypeError, ValueError):
                actual = round(float(actual), 1)
        got[unique_id] = actual
    return got == want, {"want": want, "got": got}


def wait_follows(ha, ids, retained: RetainedState, labels, name: str, predicate, timeout=90) -> dict:
    """Until the retained state satisfies `predicate` and Home Assistant shows exactly it."""
    detail = {}

    def ok():
        nonlocal detail
        state = retained.latest
        if state is None or not predicate(state):
            detail = {"retained": state}
            return False
        good, detail = follows_state(ha, ids, state, labels)
        return good

    check(bool(poll(ok, timeout, 0.5)), name, detail)
    return retained.latest


def event_fired(ws, event_entity: str, event_type: str, since: int):
    for event in ws.events[since:]:
        data = event.get("data", {})
        if event.get("event_type") == "state_changed" and data.get("entity_id") == event_entity:
            attributes = (data.get("new_state") or {}).get("attributes", {})
            if attributes.get("event_type") == event_type:
                return attributes
    return None


def history(ws, entity_id: str) -> list:
    """The entity's state changes this script saw, for a failure's message."""
    out = []
    for event in ws.events:
        data = event.get("data", {})
        if event.get("event_type") == "state_changed" and data.get("entity_id") == entity_id:
            out.append([(s or {}).get("state") for s in (data.get("old_state"), data.get("new_state"))]
                       + [(data.get("new_state") or {}).get("attributes", {}).get("emotion")])  # fmt: skip
    return out


def screenshot(ha: HomeAssistant, device: dict, path: Path) -> None:
    """The device page in headless chromium, logged in as the owner by the frontend's own token store."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = Path(ha.log_path.parent, "chromium-profile")
    shutil.rmtree(profile, ignore_errors=True)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1400"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{ha.url}/auth/authorize")  # any page of the origin, to reach its localStorage
        tokens = {**ha.tokens, "hassUrl": ha.url, "clientId": ha.client_id,
                  "expires": int(time.time() * 1000) + ha.tokens["expires_in"] * 1000}  # fmt: skip
        driver.execute_script("localStorage.setItem('hassTokens', arguments[0]);", json.dumps(tokens))
        driver.get(f"{ha.url}/config/devices/device/{device['id']}")
        # The device page is built inside shadow roots: wait until its text names the device and an entity.
        script = """
            const texts = []; const walk = (node) => { if (!node) return;
              if (node.shadowRoot) walk(node.shadowRoot);
              for (const child of node.children || []) walk(child);
              if (node.nodeType === 1 && node.children.length === 0) texts.push(node.textContent); };
            walk(document.body); return texts.join(' ');"""
        ready = poll(lambda: "Presence" in (driver.execute_script(script) or ""), 120, 1.0)
        check(bool(ready), "the device page renders in chromium", driver.current_url)
        time.sleep(3)  # history charts and logbook fill in after the entity cards
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
        check(path.stat().st_size > 20_000, f"screenshot saved to {path}", path.stat().st_size)
    finally:
        driver.quit()


def run(args) -> dict:
    root = Path(args.root)
    workdir = root / "tmp" / "ha-check"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    broker = MosquittoBroker(find_mosquitto() or "mosquitto", workdir).start()
    camera = SceneCamera(scenes())
    camera.back()
    ha = HomeAssistant(root, args.hass, workdir)
    daemon = None
    retained = None
    try:
        started = time.monotonic()
        ha.start()
        ha.wait_up()
        ha.onboard()
        ha.add_mqtt(broker.host, broker.port)
        ws = WebSocketApi(ha)
        ws.keep_http_config()
        version = ha.version = ha.request("GET", "/api/config")["version"]
        print(f"ha_check: Home Assistant {version} set up in {time.monotonic() - started:.0f} s", flush=True)

        config_path = write_daemon_config(workdir, broker, camera, free_port())
        config = load_config(config_path, environ={})
        labels = json.loads((REPO / "edge" / "models" / "default.json").read_text())["labels"]
        expected = discovery_messages(config, labels)
        retained = RetainedState(broker, f"emotion/{DEVICE_ID}/state")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOTION_EDGE_", "NOTIFY_SOCKET"))}
        daemon_log = open(workdir / "daemon.log", "wb")  # noqa: SIM115
        daemon = subprocess.Popen([args.edge_python, "-m", "edge.cli", "--config", str(config_path)],
                                  cwd=REPO, env=env, stdout=daemon_log, stderr=subprocess.STDOUT)  # fmt: skip

        device, ids = check_registry(ha, ws, expected)
        check_triggers(ws, device, expected)
        enable_disabled(ha, ws, ids, expected)
        aliases = load_automations(ha, ws)
        ws.call("subscribe_events", event_type="state_changed")
        event_entity = ids[f"emotion_edge_{DEVICE_ID.replace('-', '_')}_face"]

        camera.show("empty")
        wait_follows(ha, ids, retained, labels, "nobody in view: presence off, emotion none",
                     lambda s: s["face_count"] == 0 and not s["present"] and s["camera"] == "ok",
                     timeout=180)  # fmt: skip
        mark = len(ws.events)
        camera.show("face")
        state = wait_follows(ha, ids, retained, labels, "a face: presence on; faces, emotion, confidence and "
                             "every score as in the retained state", lambda s: s["face_count"] == 1)  # fmt: skip
        appeared = poll(lambda: event_fired(ws, event_entity, "appeared", mark), 30)
        check(bool(appeared) and appeared.get("emotion") in labels,
              "the event entity fired `appeared` with the emotion in its attributes", appeared)  # fmt: skip
        for alias in aliases:
            check(bool(poll(lambda a=alias: fired(ws, a, 0), 30)), f"README automation fired: {alias}",
                  [history(ws, event_entity), ws.call("trace/list", domain="automation")])  # fmt: skip
        camera.show("pair")
        wait_follows(
            ha, ids, retained, labels, "two faces: the face count follows", lambda s: s["face_count"] == 2
        )
        mark = len(ws.events)
        camera.show("empty")
        wait_follows(ha, ids, retained, labels, "the faces left: presence off, emotion none, scores unknown",
                     lambda s: s["face_count"] == 0 and not s["present"])  # fmt: skip
        left = poll(lambda: event_fired(ws, event_entity, "left", mark), 30)
        check(bool(left), "the event entity fired `left`", left)
        snapshot_state = state

        camera.show("face")
        wait_follows(ha, ids, retained, labels, "the face is back", lambda s: s["face_count"] == 1)
        time.sleep(5)  # two stats intervals of a face in view, for the diagnostics recorded below
        seen = entity_values(ha, ids)
        if args.screenshot:
            screenshot(ha, device, Path(args.screenshot))
        camera.away()
        wait_follows(ha, ids, retained, labels, "camera away: camera problem on, presence off",
                     lambda s: s["camera"] == "away", timeout=60)  # fmt: skip
        camera.back()
        wait_follows(
            ha, ids, retained, labels, "camera back: problem off", lambda s: s["camera"] == "ok", 120
        )

        presence = ids[f"emotion_edge_{DEVICE_ID.replace('-', '_')}_presence"]
        os.kill(daemon.pid, signal.SIGSTOP)  # hung: the TCP connection and `online` stay, no heartbeat comes
        frozen = time.monotonic()
        gone = poll(lambda: (ha.state(presence) or {}).get("state") == "unavailable", 3 * HEARTBEAT_S + 20)
        check(bool(gone), f"a frozen daemon's state entities expire (after {time.monotonic() - frozen:.0f} s; "
              f"expire_after {3 * HEARTBEAT_S} s)", ha.state(presence))  # fmt: skip
        os.kill(daemon.pid, signal.SIGCONT)
        back = poll(lambda: (ha.state(presence) or {}).get("state") in ("on", "off"), 3 * HEARTBEAT_S + 20)
        check(bool(back), "after SIGCONT the next heartbeat brings them back", ha.state(presence))

        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        everything = poll(
            lambda: all((ha.state(e) or {}).get("state") == "unavailable" for e in ids.values()), 60
        )
        check(bool(everything), "SIGKILL: every entity unavailable (the broker's last will)",
              {e: (ha.state(e) or {}).get("state") for e in ids.values()})  # fmt: skip
        errors = [line for line in ha.log_path.read_text(errors="replace").splitlines()
                  if ("ERROR" in line or "WARNING" in line) and re.search(r"mqtt|template", line, re.I)]  # fmt: skip
        check(not errors, "no MQTT or template errors or warnings in Home Assistant's log", errors[:5])
        entities = {
            eid: {"state": s.get("state"), "attributes": s.get("attributes", {})} for eid, s in seen.items()
        }
        triggers = sum("/device_automation/" in topic for topic, _ in expected)
        summary = (f"Home Assistant {version}: {len(ids)} entities and {triggers} device triggers on one "
                   f"device, {sum(r['ok'] for r in RESULTS)} checks passed")  # fmt: skip
        return {"summary": summary, "ha_version": version, "checks": RESULTS, "entities": entities,
                "face_state": snapshot_state}  # fmt: skip
    finally:
        if daemon is not None and daemon.poll() is None:
            os.kill(daemon.pid, signal.SIGCONT)
            daemon.kill()
        if retained is not None:
            retained.close()
        ha.stop()
        camera.away()
        broker.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the Debian root tools/ha-check.sh made")
    parser.add_argument("--hass", required=True, help="the hass executable, as a path inside the root")
    parser.add_argument("--edge-python", required=True, help="the interpreter of the daemon's base install")
    parser.add_argument("--out", required=True, help="where the result goes (JSON)")
    parser.add_argument("--screenshot", help="a PNG of the device page")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (CheckFailed, urllib.error.URLError, OSError) as exc:
        Path(args.out).write_text(json.dumps({"summary": f"FAIL: {exc}", "checks": RESULTS}, indent=1))
        print(f"ha_check: FAIL: {exc}", file=sys.stderr)
        return 1
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"ha_check: {result['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
