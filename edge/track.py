"""Face tracking and score smoothing (the publish policy is in edge/emit.py).

Faces are matched frame to frame by box overlap (greedy IoU), so each face keeps a track id. Each track's
class scores are smoothed with an exponential moving average, and its label only switches when another
label's smoothed score beats the current one by `hysteresis`: a face does not flicker between two emotions
on noisy frames. A track leaves after `max_missing_frames` frames without a matching detection; until then it
keeps its id for the face should it be found again, but only the tracks seen on this frame are in view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceState:
    track_id: int
    box: Box
    scores: np.ndarray  # smoothed probabilities, in label order
    label_index: int  # the label with hysteresis applied
    missing: int = 0  # consecutive frames without a matching detection
    age: int = 1  # frames since it appeared
    # The eye centres of the detection last matched to it (None from box-only detectors): frames that reuse
    # the track's box between detections are aligned from them too.
    eyes: tuple | None = None

    @property
    def confidence(self) -> float:
        return float(self.scores[self.label_index])

    def to_dict(self, labels: list[str]) -> dict:
        return {
            "track_id": self.track_id,
            "box": [int(v) for v in self.box],
            "emotion": labels[self.label_index],
            "confidence": round(self.confidence, 4),
            "scores": {label: round(float(s), 4) for label, s in zip(labels, self.scores, strict=True)},
        }


class Tracker:
    def __init__(
        self,
        labels: list[str],
        iou_threshold: float = 0.3,
        max_missing_frames: int = 5,
        smoothing: float = 0.6,
        hysteresis: float = 0.1,
    ):
        self.labels = list(labels)
        self.iou_threshold = iou_threshold
        self.max_missing_frames = max_missing_frames
        self.smoothing = smoothing
        self.hysteresis = hysteresis
        self.tracks: list[FaceState] = []
        self._next_id = 1

    def reset(self) -> None:
        """Forget every track without reporting them as left (independent photos). Ids keep increasing."""
        self.tracks = []

    def _match(self, boxes: list[Box]) -> list[tuple[int, int]]:
        """Greedy matching: highest-overlap (track, detection) pairs first, each used once."""
        pairs = []
        for t, track in enumerate(self.tracks):
            for d, box in enumerate(boxes):
                overlap = iou(track.box, box)
                if overlap >= self.iou_threshold and overlap > 0:
                    pairs.append((overlap, t, d))
        pairs.sort(reverse=True)
        used_t, used_d, matches = set(), set(), []
        for _, t, d in pairs:
            if t not in used_t and d not in used_d:
                used_t.add(t)
                used_d.add(d)
                matches.append((t, d))
        return matches

    def _smooth(self, track: FaceState, probs: np.ndarray) -> dict | None:
        """EMA update; returns a 'changed' record when the label switches past the hysteresis margin."""
        track.scores = self.smoothing * track.scores + (1.0 - self.smoothing) * probs
        best = int(np.argmax(track.scores))
        current = track.label_index
        if best != current and track.scores[best] >= track.scores[current] + self.hysteresis:
            track.label_index = best
            return {
                "track_id": track.track_id,
                "kind": "changed",
                "emotion": self.labels[best],
                "previous": self.labels[current],
            }
        return None

    def update(self, boxes: list[Box], probs: np.ndarray, eyes: list | None = None) -> list[dict]:
        """One frame's detections (boxes + class probabilities, and their eyes when the detector finds them)
        -> changes: appeared / changed / left."""
        probs = np.asarray(probs, np.float32).reshape(len(boxes), len(self.labels))
        eyes = list(eyes) if eyes is not None else [None] * len(boxes)
        changes: list[dict] = []
        matches = self._match(boxes)
        matched_t = {t for t, _ in matches}
        matched_d = {d for _, d in matches}
        for t, d in matches:
            track = self.tracks[t]
            track.box, track.eyes, track.missing = tuple(int(v) for v in boxes[d]), eyes[d], 0
            track.age += 1
            change = self._smooth(track, probs[d])
            if change:
                changes.append(change)
        survivors = []
        for t, track in enumerate(self.tracks):
            if t not in matched_t:
                track.missing += 1
                track.age += 1
                if track.missing > self.max_missing_frames:
                    changes.append(
                        {
                            "track_id": track.track_id,
                            "kind": "left",
                            "emotion": self.labels[track.label_index],
                            "previous": None,
                        }
                    )
                    continue
            survivors.append(track)
        self.tracks = survivors
        for d, box in enumerate(boxes):
            if d in matched_d:
                continue
            label = int(np.argmax(probs[d]))
            track = FaceState(self._next_id, tuple(int(v) for v in box), probs[d].copy(), label, eyes=eyes[d])
            self._next_id += 1
            self.tracks.append(track)
            changes.append(
                {
                    "track_id": track.track_id,
                    "kind": "appeared",
                    "emotion": self.labels[label],
                    "previous": None,
                }
            )
        return changes

    def visible(self) -> list[FaceState]:
        """The tracks matched on the last update: the faces in view. A missed track's box is where the face
        was, not where it is, so it is not published until it is found again."""
        return [t for t in self.tracks if t.missing == 0]

    def visible_boxes(self) -> list[Box]:
        """Boxes of the tracks seen on the last detection frame: followed on frames without detection."""
        return [t.box for t in self.visible()]
