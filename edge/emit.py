"""What goes out, and when: the one place that decides what the daemon publishes, entered once per processed
frame from the loop (edge/loop.py) with what edge/pipeline.py found.

- events: the publish policy (`every` frame or on `change`, capped by `publish.max_rate_hz`) and the
  schema-v1 event payload (edge/schema/event.schema.json), its `latency_ms` included;
- the retained `state`: faces in view, whether someone is present (a face still tracked, also through a few
  missed frames), the emotion and scores of the largest one and the camera's state, sent
  when what it says changes; scores alone send it only past `publish.score_deadband`, at most once per
  STATE_REFRESH_S, and an unchanged state goes out again every `publish.state_heartbeat_s` (StatePolicy);
- a live camera silent for CAMERA_AWAY_S: the state says nobody is in view and `camera: away`;
- the cadences of `stats` and of the systemd watchdog pings.

Every timestamp is `edge.stats.utc_timestamp`. Nothing here touches a network: publishers only enqueue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge.stats import utc_timestamp

log = logging.getLogger("edge.daemon")  # the daemon's own lines, as before this module existed

SCHEMA_VERSION = 1
STATE_REFRESH_S = 1.0  # retained state follows changes at once, and scores at most once a second
# A live camera silent this long no longer shows who is in view: the retained state says nobody, instead of
# keeping the last face (and Home Assistant automations on it) alive while the camera is unplugged.
CAMERA_AWAY_S = 5.0


class PublishPolicy:
    """`every`: an event per frame; `change`: only when something changed. Both capped by max_rate_hz.

    With a rate cap, `change` events are never lost: changes wait and go out together in the next event.
    """

    def __init__(self, policy: str = "change", max_rate_hz: float = 0.0):
        if policy not in ("every", "change"):
            raise ValueError(f"publish policy must be 'every' or 'change', got {policy!r}")
        self.policy = policy
        self.min_interval = 1.0 / max_rate_hz if max_rate_hz and max_rate_hz > 0 else 0.0
        self._last: float | None = None
        self._pending: list[dict] = []

    def decide(self, changes: list[dict], now: float) -> list[dict] | None:
        """None = publish nothing now; otherwise the changes the event should carry."""
        self._pending.extend(changes)
        if self.policy == "change" and not self._pending:
            return None
        if self.min_interval and self._last is not None and now - self._last < self.min_interval:
            return None
        self._last = now
        out, self._pending = self._pending, []
        return out


class EventMaker:
    """The policy and the event payload of one source: `make` is called once per processed frame."""

    def __init__(self, config, labels: list[str], source_id: str):
        self.device_id = config.device_id
        self.labels = list(labels)
        self.source_id = source_id
        self.policy = PublishPolicy(config.publish.policy, config.publish.max_rate_hz)

    def make(self, frame, result, now: float) -> dict | None:
        """The event for this frame (result: edge.pipeline.ProcessResult), or None when the policy says wait.
        `now` is the loop's clock, which the rate cap counts in."""
        started = time.perf_counter()
        to_publish = self.policy.decide(result.changes, now)
        if to_publish is None:
            return None
        shape = getattr(frame.image, "shape", (0, 0))
        height, width = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (0, 0)
        event = {
            "schema_version": SCHEMA_VERSION,
            "device_id": self.device_id,
            "source_id": self.source_id,
            "timestamp": utc_timestamp(frame.timestamp),
            "frame_index": int(frame.index),
        }
        if frame.file is not None:
            event["file"] = frame.file
        event["frame_size"] = [width, height]
        event["faces"] = face_dicts(result.faces, self.labels)
        event["changes"] = [dict(change) for change in to_publish]
        timings = result.timings_ms
        # From the frame to its event: the pipeline's stages and the building of this event.
        total = sum(timings.values()) + (time.perf_counter() - started) * 1000
        event["latency_ms"] = {
            "detect": round(timings["detect"], 2),
            "classify": round(timings["classify"], 2),
            "total": round(total, 2),
        }
        return event


def face_dicts(faces, labels: list[str]) -> list[dict]:
    """FaceStates as the event carries them: track_id, box, emotion, confidence, scores."""
    return [face.to_dict(labels) for face in faces]


CAMERA_OK, CAMERA_AWAY = "ok", "away"


def build_state(
    device_id: str,
    labels: list[str],
    faces: list[dict],
    camera: str = CAMERA_OK,
    decimals: int = 4,
    present: bool | None = None,
) -> dict:
    """The retained `state` payload from the faces' dicts: faces in view, the emotion of the largest one, its
    scores and confidence rounded to `decimals`, and the camera (`ok`, or `away` after CAMERA_AWAY_S).

    `present` (default: any face in view) stays true while a face missed on the last frames is still
    tracked, up to `tracking.max_missing_frames`: one frame without a detection (a turned head, motion
    blur) does not make Home Assistant's presence flap off and on; `face_count` counts the faces in view."""
    largest = max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None
    scores = {label: 0.0 for label in labels}
    if largest is not None and largest.get("scores"):
        scores.update({k: round(float(v), decimals) for k, v in largest["scores"].items()})
    return {
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "timestamp": utc_timestamp(),
        "camera": camera,
        "present": bool(faces) if present is None else bool(present),
        "face_count": len(faces),
        "dominant_emotion": largest["emotion"] if largest else "none",
        "dominant_confidence": round(float(largest["confidence"]), decimals) if largest else None,
        "scores": scores,
        "faces": [
            {k: face[k] for k in ("track_id", "box", "emotion", "confidence") if k in face} for face in faces
        ],
    }


class StatePolicy:
    """When the retained state goes out. Home Assistant's recorder writes a row whenever an entity's value
    changes, so the state is sent only when it says something new:

    - at once when faces in view, their emotions or the camera change (what automations trigger on);
    - for scores alone, once one of them (or the confidence) moved by `deadband` or more since the last state
      sent, and at most once per `min_interval` seconds;
    - unchanged every `heartbeat` seconds (0 = never), so subscribers can tell a live device from a hung one.
    """

    def __init__(self, deadband: float, heartbeat: float, min_interval: float = STATE_REFRESH_S):
        self.deadband = deadband
        self.heartbeat = heartbeat
        self.min_interval = min_interval
        self._sent: dict | None = None
        self._sent_at = 0.0

    @property
    def sent_once(self) -> bool:
        return self._sent is not None

    @staticmethod
    def _what_it_says(state: dict) -> tuple:
        return (
            state["camera"],
            state["present"],
            state["face_count"],
            state["dominant_emotion"],
            tuple((face.get("track_id"), face.get("emotion")) for face in state["faces"]),
        )

    def due(self, state: dict, now: float) -> bool:
        """Whether `state` should go out now; when it is, it counts as sent."""
        last, since = self._sent, now - self._sent_at
        if last is None or self._what_it_says(state) != self._what_it_says(last):
            due = True  # what automations trigger on
        else:
            heartbeat = bool(self.heartbeat) and since >= self.heartbeat
            moved = since >= self.min_interval and self._moved(last, state) >= max(self.deadband, 1e-9)
            due = heartbeat or moved
        if due:
            self._sent, self._sent_at = state, now
        return due

    @staticmethod
    def _moved(last: dict, state: dict) -> float:
        """The largest change of a score or of the confidence between two states."""
        moves = [abs(state["scores"].get(k, 0.0) - v) for k, v in last["scores"].items()]
        confidence = (last["dominant_confidence"], state["dominant_confidence"])
        if None not in confidence:
            moves.append(abs(confidence[1] - confidence[0]))
        return max(moves, default=0.0)


class Every:
    """A cadence: `due(now)` is true, and restarts the interval, once `interval` seconds have passed since the
    last time it was (or since `start`). A falsy interval is never due (stats off, no watchdog)."""

    def __init__(self, interval: float | None, start: float):
        self.interval = interval
        self.last = start

    def due(self, now: float) -> bool:
        if not self.interval or now - self.last < self.interval:
            return False
        self.last = now
        return True


class Emitter:
    """Makes one processed frame's event and sends it and the state to every publisher; says nobody is in
    view when frames stop. `forget_faces()` (the processor's) clears the tracks and returns how many there
    were."""

    def __init__(
        self,
        config,
        labels: list[str],
        source_id: str,
        publishers,
        forget_faces: Callable[[], int],
        now: float,
        snapshots=None,
    ):
        self.device_id = config.device_id
        self.labels = list(labels)
        self.events = EventMaker(config, labels, source_id)
        self.publishers = publishers
        self._forget_faces = forget_faces
        self._snapshots = snapshots  # debug JPEGs of published events (debug.snapshot_dir), or None
        self._decimals = config.publish.score_decimals
        self.state_policy = StatePolicy(config.publish.score_deadband, config.publish.state_heartbeat_s)
        self.last_frame = now
        self.camera = CAMERA_OK
        self._last_faces: list[dict] = []  # the faces of the last state sent (a heartbeat repeats them)
        self._last_present = False
        self.events_published = 0

    def frame(self, frame, result, now: float) -> dict | None:
        """One processed frame (edge.pipeline.ProcessResult): its event when the policy makes one, then the
        state when it is due. Returns the event (None when there was none) for the preview page."""
        self.last_frame = now
        self.camera = CAMERA_OK
        event = self.events.make(frame, result, now)
        if event is not None:
            for publisher in self.publishers:
                publisher.publish_event(event)
            self.events_published += 1
            if self._snapshots is not None:
                self._snapshots.save(frame.image, event)
        # The event's face dicts are those of this frame's tracks: reuse them rather than build them again.
        faces = event["faces"] if event is not None else face_dicts(result.faces, self.labels)
        self._offer_state(faces, now, present=result.tracked > 0)
        return event

    def no_frame(self, now: float) -> None:
        """No frame this time: after CAMERA_AWAY_S without one, the state shows nobody and the camera away
        (once); the heartbeat goes on meanwhile, so the camera's problem stays visible rather than expired."""
        if self.camera == CAMERA_OK and now - self.last_frame >= CAMERA_AWAY_S:
            self.camera = CAMERA_AWAY
            forgotten = self._forget_faces()
            log.warning(
                "no frames for %.0f s: the state now shows the camera away%s until it is back",
                now - self.last_frame,
                " and no faces" if forgotten else "",
            )
            self._offer_state([], now, present=False)
        elif self.state_policy.sent_once:
            # Only the heartbeat can make this one due.
            self._offer_state(self._last_faces, now, present=self._last_present)

    def _offer_state(self, faces: list[dict], now: float, present: bool) -> None:
        state = build_state(self.device_id, self.labels, faces, self.camera, self._decimals, present)
        if not self.state_policy.due(state, now):
            return
        self._last_faces, self._last_present = faces, present
        for publisher in self.publishers:
            publisher.publish_state(state)
