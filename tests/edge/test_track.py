"""Tracking, smoothing with hysteresis, and the publish policy."""

from __future__ import annotations

import numpy as np
import pytest

from edge.emit import PublishPolicy
from edge.track import Tracker, iou

LABELS = ["happy", "neutral", "sad"]


def probs(*rows):
    return np.asarray(rows, np.float32)


def test_iou_basics():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_ids_persist_across_moving_faces_and_increase_from_one():
    tracker = Tracker(LABELS)
    changes = tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)], probs([1, 0, 0], [0, 1, 0]))
    assert [(c["track_id"], c["kind"], c["emotion"]) for c in changes] == [
        (1, "appeared", "happy"),
        (2, "appeared", "neutral"),
    ]
    for step in range(1, 6):  # both faces drift right; listed in the other order
        boxes = [(200 + 5 * step, 0, 50, 50), (5 * step, 0, 50, 50)]
        assert tracker.update(boxes, probs([0, 1, 0], [1, 0, 0])) == []
    by_id = {t.track_id: t.box for t in tracker.tracks}
    assert by_id == {1: (25, 0, 50, 50), 2: (225, 0, 50, 50)}
    tracker.update([(500, 300, 40, 40)], probs([0, 0, 1]))  # a third person: the next id
    assert max(t.track_id for t in tracker.tracks) == 3


def test_label_does_not_flicker_on_noisy_scores():
    tracker = Tracker(LABELS, smoothing=0.6, hysteresis=0.1)
    tracker.update([(0, 0, 50, 50)], probs([0.6, 0.4, 0.0]))
    rng = np.random.default_rng(0)
    switches = 0
    for _ in range(40):  # happy and neutral alternate winning by a hair
        noise = rng.uniform(-0.08, 0.08)
        changes = tracker.update([(0, 0, 50, 50)], probs([0.5 + noise, 0.5 - noise, 0.0]))
        switches += sum(c["kind"] == "changed" for c in changes)
    assert switches == 0
    assert tracker.tracks[0].label_index == 0


def test_a_real_change_switches_once_with_previous_label():
    tracker = Tracker(LABELS, smoothing=0.6, hysteresis=0.1)
    tracker.update([(0, 0, 50, 50)], probs([0.9, 0.1, 0.0]))
    changes = []
    for _ in range(10):
        changes += tracker.update([(0, 0, 50, 50)], probs([0.05, 0.05, 0.9]))
    assert changes == [{"track_id": 1, "kind": "changed", "emotion": "sad", "previous": "happy"}]
    scores = tracker.tracks[0].scores
    assert scores.argmax() == 2 and scores.sum() == pytest.approx(1.0, abs=1e-5)


def test_smoothing_is_an_ema_weighted_by_the_past():
    tracker = Tracker(LABELS, smoothing=0.75)
    tracker.update([(0, 0, 50, 50)], probs([1.0, 0.0, 0.0]))
    tracker.update([(0, 0, 50, 50)], probs([0.0, 1.0, 0.0]))
    np.testing.assert_allclose(tracker.tracks[0].scores, [0.75, 0.25, 0.0], atol=1e-6)


def test_track_leaves_after_max_missing_frames():
    tracker = Tracker(LABELS, max_missing_frames=2)
    tracker.update([(0, 0, 50, 50)], probs([1, 0, 0]))
    assert tracker.update([], probs()) == []
    assert tracker.update([], probs()) == []
    assert tracker.update([], probs()) == [
        {"track_id": 1, "kind": "left", "emotion": "happy", "previous": None}
    ]
    assert tracker.tracks == []


def test_a_missed_track_keeps_its_id_but_is_not_in_view_until_found_again():
    tracker = Tracker(LABELS, max_missing_frames=3)
    tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)], probs([1, 0, 0], [0, 1, 0]))
    tracker.update([(202, 0, 50, 50)], probs([0, 1, 0]))  # the first face is missed on this frame
    assert [t.track_id for t in tracker.tracks] == [1, 2]  # remembered for max_missing_frames...
    assert [(t.track_id, t.box) for t in tracker.visible()] == [(2, (202, 0, 50, 50))]  # ...not in view
    assert tracker.visible_boxes() == [(202, 0, 50, 50)]
    assert (
        tracker.update([(3, 0, 50, 50), (204, 0, 50, 50)], probs([1, 0, 0], [0, 1, 0])) == []
    )  # back: no change
    assert [t.track_id for t in tracker.visible()] == [1, 2]


def test_a_detections_eyes_travel_with_its_track():
    tracker = Tracker(LABELS)
    left_eyes, moved_eyes = ((10.0, 20.0), (30.0, 20.0)), ((14.0, 21.0), (34.0, 21.0))
    tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)], probs([1, 0, 0], [0, 1, 0]), [left_eyes, None])
    assert [(t.track_id, t.eyes) for t in tracker.tracks] == [(1, left_eyes), (2, None)]
    tracker.update([(204, 0, 50, 50), (4, 1, 50, 50)], probs([0, 1, 0], [1, 0, 0]), [None, moved_eyes])
    assert [(t.track_id, t.box, t.eyes) for t in tracker.visible()] == [
        (1, (4, 1, 50, 50), moved_eyes),  # matched by overlap, not by list position: the newest eyes
        (2, (204, 0, 50, 50), None),
    ]
    tracker.update([(4, 1, 50, 50)], probs([1, 0, 0]))  # a box-only detector (no eyes given): none kept
    assert tracker.tracks[0].eyes is None


def test_low_overlap_is_a_new_face():
    tracker = Tracker(LABELS, iou_threshold=0.5, max_missing_frames=0)
    tracker.update([(0, 0, 50, 50)], probs([1, 0, 0]))
    changes = tracker.update([(40, 0, 50, 50)], probs([1, 0, 0]))  # IoU 0.11
    assert sorted(c["kind"] for c in changes) == ["appeared", "left"]


def test_reset_forgets_tracks_silently_but_ids_keep_increasing():
    tracker = Tracker(LABELS)
    tracker.update([(0, 0, 50, 50)], probs([1, 0, 0]))
    tracker.reset()
    changes = tracker.update([(0, 0, 50, 50)], probs([1, 0, 0]))
    assert [(c["track_id"], c["kind"]) for c in changes] == [(2, "appeared")]


def test_change_policy_publishes_only_changes():
    policy = PublishPolicy("change")
    assert policy.decide([], 0.0) is None
    change = {"track_id": 1, "kind": "appeared", "emotion": "happy", "previous": None}
    assert policy.decide([change], 0.1) == [change]
    assert policy.decide([], 0.2) is None


def test_every_policy_with_rate_cap_keeps_changes_for_the_next_event():
    policy = PublishPolicy("every", max_rate_hz=2)  # at most one event per 0.5 s
    change = {"track_id": 1, "kind": "appeared", "emotion": "happy", "previous": None}
    assert policy.decide([], 0.0) == []
    assert policy.decide([change], 0.1) is None  # too soon: held back
    assert policy.decide([], 0.3) is None
    assert policy.decide([], 0.6) == [change]  # delivered with the next allowed event
    assert policy.decide([], 0.7) is None


def test_bad_policy_name():
    with pytest.raises(ValueError, match="every"):
        PublishPolicy("sometimes")
