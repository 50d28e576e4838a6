"""benchmarks/scene_accuracy.py on a tiny labelled folder: a real face (scikit-image's astronaut) and drawn ones."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.track import iou
from testbed import facesdata
from tests.support import benchscripts
from tests.support.fakefaces import make_faces


def write_faces(root: Path) -> Path:
    """test/happy: the astronaut's face and its mirror image; test/neutral: two drawn faces."""
    face = cv2.resize(facesdata.astronaut_face_gray(), (48, 48), interpolation=cv2.INTER_AREA)
    drawn, _ = make_faces(1, labels=["neutral", "sad"])
    for label, images in (("happy", [face, face[:, ::-1]]), ("neutral", list(drawn))):
        folder = root / "test" / label
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(folder / f"{i}.png"), np.ascontiguousarray(image))
    return root


def run_script(*args):
    return benchscripts.run("scene_accuracy", *args)


def test_pastes_finds_and_scores_every_scene(tmp_path):
    data = write_faces(tmp_path / "faces")
    out = tmp_path / "scene.json"
    done = run_script(
        "--data",
        str(data),
        "--detector",
        "haar",
        "--face-px",
        "96,144",
        "--margin",
        "0,0.1",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["split"] == "test" and report["faces"] == 4
    rows = {(r["background"], r["face_px"]): r for r in report["results"]}
    assert set(rows) == {(b, px) for b in ("flat", "photo", "dark") for px in (96, 144)}
    for row in rows.values():
        assert row["detector"] == "haar" and row["faces"] == 4
        assert row["false_per_frame"] >= 0.0 and row["detect_ms_median"] > 0
        for margin in ("0.0", "0.1"):
            found_right = row["accuracy_of_found"][margin] * row["found"]
            assert abs(row["end_to_end"][margin] - found_right) < 1e-9
            assert row["end_to_end"][margin] <= row["found"]
    # The astronaut, a real frontal face, is found on every background at both sizes, mirrored or not.
    assert all(row["found_by_label"]["happy"] == 1.0 for row in rows.values()), rows
    assert all(set(row["found_by_label"]) == {"happy", "neutral"} for row in rows.values())
    assert "end-to-end by margin" in done.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--detector", "haar:min_neighbours=3"], "detector.min_neighbours: unknown key"),
        (["--detector", "haar:scale_factor=0.5"], "detector.scale_factor: must be"),
        (["--detector", "sonar"], "detector.type: must be"),
        (["--limit", "0"], "--limit"),
        (["--split", "val"], "no split 'val'"),
    ],
)
def test_bad_arguments_are_named_without_a_traceback(tmp_path, args, named):
    data = write_faces(tmp_path / "faces")
    done = run_script("--data", str(data), *args)
    assert done.returncode == 2
    assert named in done.stderr and "Traceback" not in done.stderr


# --- --room: room-camera scenes ------------------------------------------------------------------------------

scene = benchscripts.load("scene_accuracy")


class FakeDetection:
    def __init__(self, box, score=0.9, eyes=None):
        self.box, self.score, self.eyes = box, score, eyes


def test_face_bins_have_their_lower_edge_and_the_last_its_upper_one():
    edges = scene.ROOM_BINS
    assert [scene.face_bin(v) for v in (24, 31.9, 32, 47.9, 48, 199.9, 200)] == [0, 0, 1, 1, 2, 5, 5]
    assert len(edges) - 1 == 6


def test_each_face_takes_its_nearest_detection_and_every_other_detection_is_false():
    faces = [((100, 100, 40, 40), 0), ((300, 100, 40, 40), 1), ((500, 300, 30, 30), 2)]
    on_first = FakeDetection((104, 98, 38, 44))
    second_on_first = FakeDetection((95, 105, 40, 40))  # a duplicate: an extra face in the event
    near_second = FakeDetection((312, 108, 40, 40))  # centre 0.3 face widths off: found
    far = FakeDetection((400, 400, 40, 40))  # on nobody
    chosen, false = scene.match([second_on_first, far, on_first, near_second], faces)
    assert chosen[0] is on_first and chosen[1] is near_second and chosen[2] is None
    assert false == 2
    off_by_half = FakeDetection((120, 100, 40, 40))  # centre exactly FOUND_WITHIN (0.5) widths away: missed
    assert scene.match([off_by_half], faces[:1]) == ([None], 1)


def test_summary_counts_rates_by_mode_and_bin():
    def record(b, colour, found, right, dim=False):
        return {"bin": b, "colour": colour, "dim": dim, "found": found, "right": right}

    records = [record(0, True, True, True), record(0, True, False, False), record(3, True, True, False, dim=True),
               record(1, False, True, True), record(1, False, True, False), record(5, False, False, False)]  # fmt: skip
    out = scene.summarise_room(records, false_faces=[0, 2, 1, 0], seconds=[0.01, 0.03, 0.02, 0.04])
    assert out["frames"] == 4 and out["faces"] == 6 and out["false_per_frame"] == 0.75
    assert out["detect_ms_median"] == pytest.approx(25.0)
    colour, grey = out["colour"], out["grey"]
    assert colour["24-32"] == {"faces": 2, "found": 0.5, "end_to_end": 0.5}
    assert colour[">=32"] == {"faces": 1, "found": 1.0, "end_to_end": 0.0}
    assert colour["dim"]["faces"] == 1 and colour["by_bin"]["64-96"]["found"] == 1.0
    assert colour["by_bin"]["32-48"] == {"faces": 0, "found": None, "end_to_end": None}
    assert grey[">=32"] == {"faces": 3, "found": 2 / 3, "end_to_end": 1 / 3}
    assert out["all"] == {"faces": 6, "found": 4 / 6, "end_to_end": 2 / 6}


def test_a_photos_face_is_where_two_detectors_agree_and_only_one_face_may_be_agreed():
    class Fake:
        def __init__(self, *boxes):
            self.boxes = boxes

        def detect(self, image):
            return [FakeDetection(b) for b in self.boxes]

    image = np.zeros((350, 350), np.uint8)
    agreed = scene.reference_face(image, [Fake((40, 50, 260, 280)), Fake((50, 40, 280, 280)), Fake()])
    assert agreed == (45.0, 45.0, 270.0, 280.0)
    assert scene.reference_face(image, [Fake((40, 50, 260, 280)), Fake(), Fake((10, 10, 30, 30))]) is None
    two_people = [Fake((0, 0, 100, 100), (200, 200, 100, 100)), Fake((5, 5, 100, 100), (205, 200, 100, 100))]
    assert scene.reference_face(image, two_people) is None


def test_room_scenes_are_repeatable_with_faces_of_the_asked_size_where_they_say():
    x, y, w, h = facesdata.ASTRONAUT_FACE
    # A close-up, as the dev photos are.
    portrait = facesdata.astronaut_bgr()[y - 20 : y + h + 20, x - 20 : x + w + 20]
    box = (20, 20, w, h)
    grey = cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY)
    pool = ([portrait, grey], [tuple(map(float, box))] * 2, np.array([3, 4]), np.array([True, False]))
    backgrounds = [np.full((480, 640, 3), 90, np.uint8)]
    for index in range(12):
        frame, faces, colour, _ = scene.room_scene(index, pool, backgrounds, seed=1)
        again, same_faces, _, _ = scene.room_scene(index, pool, backgrounds, seed=1)
        assert np.array_equal(frame, again) and faces == same_faces  # every detector sees the same frames
        assert frame.shape == ((480, 640, 3) if colour else (480, 640)) and frame.dtype == np.uint8
        assert colour == (index % 2 == 0) and 1 <= len(faces) <= scene.MAX_FACES
        for (x, y, w, h), target in faces:
            assert scene.ROOM_BINS[0] <= w <= scene.ROOM_BINS[-1] and x >= 0 and x + w <= 640 and y + h <= 480
            assert target == 3 or not colour  # colour frames hold colour photos only; grey ones any photo
        for i, ((x, y, w, h), _) in enumerate(faces):  # the photos around the faces do not overlap
            for (x2, y2, w2, h2), _ in faces[i + 1 :]:
                assert iou((x, y, w, h), (x2, y2, w2, h2)) == 0
    widths = [w for i in range(60) for (_, _, w, _), _ in scene.room_scene(i, pool, backgrounds, 1)[1]]
    counts = np.bincount([scene.face_bin(w) for w in widths], minlength=6)
    assert counts.min() > 0.5 * counts.max()  # every size bin is about equally represented


def test_room_run_end_to_end_on_a_tiny_photo_folder(tmp_path):
    root = tmp_path / "photos"
    for label, mirror in (("happy", False), ("neutral", True)):
        (root / label).mkdir(parents=True)
        portrait, _ = facesdata.portrait(300, mirror=mirror)
        cv2.imwrite(str(root / label / f"Colour_Person_{label}_0001.jpg"), portrait)
        cv2.imwrite(
            str(root / label / f"Grey_Person_{label}_0001.jpg"), cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY)
        )
    out = tmp_path / "room.json"
    done = run_script("--room", "--data", root, "--split", "all", "--frames", 8, "--detector", "yunet",
                      "--detector", "haar", "--json", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4 photos" in done.stdout and "(all; 2 in colour), 0 left out" in done.stdout
    report = json.loads(out.read_text())
    assert [r["detector"] for r in report["results"]] == ["yunet", "haar"] and report["frames"] == 8
    faces = {r["faces"] for r in report["results"]}
    assert len(faces) == 1  # both detectors saw the same scenes
    for row in report["results"]:
        for mode in ("colour", "grey"):
            part = row[mode]
            assert sum(b["faces"] for b in part["by_bin"].values()) == part["all"]["faces"]
            assert part["24-32"]["faces"] + part[">=32"]["faces"] == part["all"]["faces"]
            assert part["all"]["end_to_end"] <= part["all"]["found"]
    assert report["results"][0]["grey"][">=32"]["found"] > report["results"][1]["grey"][">=32"]["found"]


def test_room_needs_colour_and_grey_photos(tmp_path):
    root = tmp_path / "photos" / "happy"
    root.mkdir(parents=True)
    cv2.imwrite(str(root / "Grey_0001.jpg"), cv2.cvtColor(facesdata.portrait(300)[0], cv2.COLOR_BGR2GRAY))
    done = run_script("--room", "--data", root.parent, "--split", "all", "--frames", 2)
    assert (
        done.returncode == 2
        and "needs colour and grey photos" in done.stderr
        and "Traceback" not in done.stderr
    )
