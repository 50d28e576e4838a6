"""The daemon's processing loop in-process: a scripted camera, a fake clock, a recording publisher.

The real loop (`Daemon.serve`), the real FrameProcessor, tracker, publish policy and emitter run; only the
camera, the detector and the classifier are stand-ins (a scene says where the faces are and what they show),
and time is a fake clock that each capture.get() advances: no threads, no sleeps, no subprocess.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from edge import notify
from edge.capture import Frame
from edge.config import Config
from edge.daemon import Daemon
from edge.emit import CAMERA_AWAY_S, STATE_REFRESH_S
from edge.pipeline import FrameProcessor
from edge.publish.base import Publisher

LABELS = ["angry", "happy", "neutral"]
HAPPY, ANGRY = [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]
FACE = (40, 30, 50, 50)
TICK = 0.125  # seconds between frames (exact in binary: no drift in the cadences below)
GET_TIMEOUT = 0.25  # what Daemon._loop waits for a frame


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedCamera:
    """The capture thread's interface over a script: each item is one get(): a scene (a list of
    (box, probabilities), [] for an empty room) delivered as a frame after TICK seconds, or None (no frame
    within the timeout: the camera is away). After the last item the source has finished."""

    def __init__(self, clock: Clock, script, error: str | None = None, busy_for: float = 0.0):
        self.clock = clock
        self.script = list(script)
        self.scene: list = []
        self.captured = self.dropped = 0
        self.error = error
        self._busy_for = busy_for

    @property
    def finished(self) -> bool:
        return not self.script

    def is_alive(self) -> bool:
        return not self.finished

    def busy_for(self) -> float:
        return self._busy_for

    def get(self, timeout: float):
        if not self.script:
            return None
        item = self.script.pop(0)
        if item is None:
            self.clock.now += timeout
            return None
        self.clock.now += TICK
        self.scene = item
        self.captured += 1
        return Frame(
            np.full((120, 160, 3), 128, np.uint8), self.captured - 1, 1_795_000_000.0 + self.clock.now
        )


class SceneDetector:
    name = "scene"
    landmarks = False

    def __init__(self, camera: ScriptedCamera):
        self.camera = camera

    def detect(self, image):
        return [SimpleNamespace(box=box, eyes=None) for box, _ in self.camera.scene]


class SceneClassifier:
    labels = LABELS
    input_size = (48, 48)
    contract = SimpleNamespace(crop_margin=0.0, face_framing=None)
    backend = "scene"

    def __init__(self, camera: ScriptedCamera):
        self.camera = camera

    def classify(self, batch):
        assert batch.shape == (len(self.camera.scene), 48, 48, 1)  # the real preprocessing ran
        return np.array([probs for _, probs in self.camera.scene], np.float32)


class RecordingPublisher(Publisher):
    name = "recording"

    def __init__(self, clock: Clock):
        self.clock = clock
        self.sent: list[tuple[float, str, dict]] = []

    def publish_event(self, event):
        self.sent.append((self.clock.now, "event", event))

    def publish_state(self, state):
        self.sent.append((self.clock.now, "state", state))

    def publish_stats(self, stats):
        self.sent.append((self.clock.now, "stats", stats))

    def of(self, kind: str) -> list[tuple[float, dict]]:
        return [(at, payload) for at, k, payload in self.sent if k == kind]


class RecordingPreview:
    def __init__(self):
        self.offers = []
        self.events = []

    def offer(self, frame, result, stats, capture, event=None):
        self.offers.append((frame.index, result, stats.processed))
        self.events.append(event)


@pytest.fixture
def pings(monkeypatch):
    """WATCHDOG=1 pings at the fake clock's times; the watchdog interval is 1 s."""
    sent: list[float] = []
    monkeypatch.setattr(notify, "watchdog_interval", lambda environ=None: 1.0)
    monkeypatch.setattr(notify, "status", lambda text: True)
    return sent


def run_loop(script, pings=None, preview=None, error=None, busy_for=0.0, **sections):
    clock = Clock()
    camera = ScriptedCamera(clock, script, error, busy_for)
    config = Config()
    config.device_id = "loop-pi"
    config.detector = replace(config.detector, every_n_frames=1)
    config.stats = replace(config.stats, interval_s=0)  # off unless a test turns it on
    for name, changes in sections.items():
        setattr(config, name, replace(getattr(config, name), **changes))
    publisher = RecordingPublisher(clock)
    daemon = Daemon(config, publishers=[publisher], clock=clock)
    daemon.preview = preview
    if pings is not None:
        notify.watchdog = lambda: pings.append(clock.now) or True  # undone by monkeypatch's fixture scope
    processor = FrameProcessor(config, SceneClassifier(camera), SceneDetector(camera), "scripted")
    daemon.serve(camera, processor, "scene", "scene")
    return daemon, publisher


@pytest.fixture(autouse=True)
def _restore_watchdog(monkeypatch):
    monkeypatch.setattr(notify, "watchdog", notify.watchdog)


def test_change_policy_one_event_per_change_and_state_on_change_then_refreshed(pings):
    script = [[(FACE, HAPPY)]] * 20 + [[(FACE, ANGRY)]] * 12  # 2.5 s happy, then angry wins (smoothing)
    daemon, out = run_loop(script, tracking={"smoothing": 0.5, "hysteresis": 0.1})
    events = [event for _, event in out.of("event")]
    assert [[c["kind"] for c in e["changes"]] for e in events] == [["appeared"], ["changed"]]
    changed = events[1]["changes"][0]
    assert (changed["emotion"], changed["previous"]) == ("angry", "happy")
    assert daemon.events_published == 2 and daemon.exit_code == 0
    states = out.of("state")
    assert states[0][0] == 1000.0 + TICK and states[0][1]["dominant_emotion"] == "happy"
    # A change is in the state at once. Between changes, a score moving by publish.score_deadband (0.05) or
    # more sends it too, at most once per STATE_REFRESH_S: the smoothed scores converge (0.5 per frame), so a
    # face held still sends nothing more; the switch to angry moves them and sends a few in between.
    event_times = [at for at, _ in out.of("event")]
    state_times = [at for at, _ in states]
    assert set(event_times) <= set(state_times)
    between = [at for at in state_times if at not in event_times]
    assert all(b - a >= STATE_REFRESH_S for a, b in zip(state_times, state_times[1:], strict=False)
               if b in between)  # fmt: skip
    held_still = [at for at in between if at < event_times[1] - 0.5]
    assert len(held_still) <= 1  # convergence after the first frame, then nothing
    assert len(states) < 8  # 32 frames: before the state policy, a state a second plus every change
    assert states[-1][1]["dominant_emotion"] == "angry"
    # The state's faces are the event's, without scores; the dominant scores are the largest face's.
    first_state, first_event = states[0][1], events[0]
    assert first_state["faces"] == [{k: f[k] for k in ("track_id", "box", "emotion", "confidence")}
                                    for f in first_event["faces"]]  # fmt: skip
    assert first_state["scores"] == first_event["faces"][0]["scores"] and first_state["face_count"] == 1


def test_presence_rides_out_missed_frames_until_the_track_has_left(pings):
    """`present` in the state (Home Assistant's presence) stays on while a face missed on a few frames is
    still tracked; `face_count` is the faces in view. A gap shorter than tracking.max_missing_frames is no
    leaving; a longer one is, at the frame the `left` change is made."""
    script = [[(FACE, HAPPY)]] * 4 + [[]] * 2 + [[(FACE, HAPPY)]] * 2 + [[]] * 5
    _, out = run_loop(script, tracking={"max_missing_frames": 3})
    states = [(s["present"], s["face_count"]) for _, s in out.of("state")]
    assert states == [(True, 1), (True, 0), (True, 1), (True, 0), (False, 0)]
    changes = [c["kind"] for _, e in out.of("event") for c in e["changes"]]
    assert changes == ["appeared", "left"]  # the short gap made no change
    left_at = next(at for at, e in out.of("event") if e["changes"][0]["kind"] == "left")
    assert out.of("state")[-1][0] == left_at  # presence goes off with the `left` change, not before


def test_every_policy_with_a_rate_cap(pings):
    script = [[(FACE, HAPPY)]] * 16  # 2 s of frames
    _, out = run_loop(script, publish={"policy": "every", "max_rate_hz": 2.0})
    times = [at - 1000.0 for at, _ in out.of("event")]
    assert times == [TICK, TICK + 0.5, TICK + 1.0, TICK + 1.5]
    _, uncapped = run_loop(script, publish={"policy": "every", "max_rate_hz": 0.0})
    assert len(uncapped.of("event")) == 16


def test_camera_away_for_five_seconds_shows_nobody_then_the_face_again(pings):
    away = int(CAMERA_AWAY_S / GET_TIMEOUT) + 4  # a little over 5 s without frames
    script = [[(FACE, HAPPY)]] * 3 + [None] * away + [[(FACE, HAPPY)]] * 2
    _, out = run_loop(script)
    states = out.of("state")
    nobody = [(at, s) for at, s in states if s["face_count"] == 0]
    assert len(nobody) == 1  # once, not on every empty get
    at, state = nobody[0]
    last_frame_at = 1000.0 + 3 * TICK
    assert CAMERA_AWAY_S <= at - last_frame_at < CAMERA_AWAY_S + GET_TIMEOUT
    assert state["dominant_emotion"] == "none" and state["dominant_confidence"] is None
    assert state["faces"] == [] and set(state["scores"].values()) == {0.0} and state["camera"] == "away"
    back = [s for t, s in states if t > at]
    assert back and back[0]["face_count"] == 1 and back[0]["dominant_emotion"] == "happy"
    assert back[0]["camera"] == "ok" and all(s["camera"] == "ok" for t, s in states if t < at)
    kinds = [(c["track_id"], c["kind"]) for _, e in out.of("event") for c in e["changes"]]
    assert kinds == [(1, "appeared"), (2, "appeared")]  # forgotten, not reported as left; a new track after


def test_a_camera_away_at_start_shows_in_the_state_and_the_heartbeat_keeps_it_fresh(pings):
    # No frame ever (a camera not plugged in at boot): the state still says so, and it is re-sent every
    # heartbeat meanwhile, so Home Assistant shows a camera problem instead of letting the entities expire.
    _, out = run_loop([None] * 120, publish={"state_heartbeat_s": 10.0})  # 30 s
    states = out.of("state")
    assert [s["camera"] for _, s in states] == ["away"] * len(states) and states[0][1]["face_count"] == 0
    assert [round(at - 1000.0, 2) for at, _ in states] == [5.0, 15.0, 25.0]


def test_heartbeat_resends_an_unchanged_state_and_the_deadband_holds_small_moves(pings):
    wobble = [[(FACE, [0.1, 0.8, 0.1])], [(FACE, [0.12, 0.78, 0.1])]] * 40  # 10 s, scores wobble by 0.02
    _, out = run_loop(wobble, publish={"state_heartbeat_s": 3.0}, tracking={"smoothing": 0.0})
    times = [round(at - 1000.0, 3) for at, _ in out.of("state")]
    assert times == [TICK, TICK + 3.0, TICK + 6.0, TICK + 9.0]  # the first, then heartbeats only
    _, fine = run_loop(wobble, publish={"state_heartbeat_s": 0.0, "score_deadband": 0.01},
                       tracking={"smoothing": 0.0})  # fmt: skip
    gaps = [b - a for (a, _), (b, _) in zip(fine.of("state"), fine.of("state")[1:], strict=False)]
    assert len(gaps) >= 8 and all(STATE_REFRESH_S <= gap < STATE_REFRESH_S + 2 * TICK for gap in gaps)
    _, still = run_loop(wobble, publish={"state_heartbeat_s": 0.0}, tracking={"smoothing": 0.0})
    assert len(still.of("state")) == 1  # no heartbeat, moves under the deadband: the first state only
    scores = still.of("state")[0][1]["scores"]
    assert scores == {"angry": 0.1, "happy": 0.8, "neutral": 0.1}  # rounded to publish.score_decimals


def test_a_short_gap_is_not_camera_away(pings):
    script = [[(FACE, HAPPY)]] * 3 + [None] * 8 + [[(FACE, HAPPY)]] * 2  # 2 s without frames
    _, out = run_loop(script)
    assert all(s["face_count"] == 1 for _, s in out.of("state"))


def test_stats_cadence_with_and_without_frames(pings):
    script = [[(FACE, HAPPY)]] * 16 + [None] * 9  # 2 s of frames, then over 2 s away
    _, out = run_loop(script, stats={"interval_s": 1.0})
    stats = out.of("stats")
    assert [round(at - 1000.0, 3) for at, _ in stats] == [1.0, 2.0, 3.0, 4.0]
    assert stats[0][1]["detector"] == "scene" and stats[0][1]["interpreter"] == "scene"
    assert stats[0][1]["input_fps"] == 8.0  # 8 frames in the first (fake) second
    assert stats[2][1]["processed_fps"] == 0.0 and stats[2][1]["latency_ms"]["publish"]["p50"] is not None


def test_watchdog_pings_while_frames_come_and_while_the_camera_is_away(pings):
    script = [[(FACE, HAPPY)]] * 16 + [None] * 9
    run_loop(script, pings=pings)
    assert [round(at - 1000.0, 3) for at in pings] == [1.0, 2.0, 3.0, 4.0]


def test_no_pings_while_the_capture_is_stuck_in_a_source_call(pings):
    run_loop([None] * 12, pings=pings, busy_for=2.0)  # 3 s inside a hung driver call: systemd must restart
    assert pings == []


def test_preview_is_offered_every_processed_frame(pings):
    preview = RecordingPreview()
    _, out = run_loop([[(FACE, HAPPY)]] * 3 + [None] + [[]] * 2, preview=preview)
    assert [index for index, _, _ in preview.offers] == [0, 1, 2, 3, 4]
    # The page gets the very events that were published (the face appeared on frame 0), and no others.
    assert [event for event in preview.events if event is not None] == [e for _, e in out.of("event")]
    assert preview.events[0] is out.of("event")[0][1] and preview.events[1:3] == [None, None]
    # Frames 3-4 find no face: its track waits (not left yet), but no face is in view to draw.
    assert [len(result.faces) for _, result, _ in preview.offers] == [1, 1, 1, 0, 0]
    assert [processed for _, _, processed in preview.offers] == [1, 2, 3, 4, 5]  # recorded before the offer


def test_finite_source_end_and_failure(pings):
    daemon, out = run_loop([[(FACE, HAPPY)]] * 2)
    assert daemon.exit_code == 0 and daemon.events_published == 1
    daemon, _ = run_loop([[(FACE, HAPPY)]] * 2, error="photo.jpg turned unreadable")
    assert daemon.exit_code == 1
