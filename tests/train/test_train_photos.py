"""train/photos.py: the person-disjoint split and the daemon-cut crops of a labelled photo folder.

Faces are scikit-image's astronaut (testbed/facesdata.py), never the shared photo set."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.align import DEFAULT_BOX_MARGIN, DEFAULT_FRAMING
from edge.capture.sources import read_image
from edge.config import DetectorConfig
from edge.detect import make_detector
from edge.preprocess import faces_to_batch
from testbed.facesdata import no_face_frame, portrait
from train.data import DataError
from train.photos import HELD_OUT, TRAIN, load_photo_dataset, person_of, relabel, split_of


def test_person_is_the_name_without_its_serial_and_single_images_are_their_own_person():
    assert person_of("George_W_Bush_0042.jpg") == "George_W_Bush"
    assert person_of("Jean_Chretien_0001.png") == "Jean_Chretien"
    assert person_of("facial-expressions_2868588k.jpg") == "facial-expressions_2868588k"
    assert person_of("facial-expressions_0001.jpg") == "facial-expressions_0001"  # not stripped
    assert person_of("Madonna.jpg") == "Madonna"


def test_split_is_person_disjoint_deterministic_and_about_half():
    names = [f"Person_{i}_{n:04d}.jpg" for i in range(400) for n in range(1, 4)]
    first = {name: split_of(person_of(name)) for name in names}
    assert first == {name: split_of(person_of(name)) for name in names}  # same answer every time
    by_person: dict[str, set[str]] = {}
    for name, side in first.items():
        by_person.setdefault(person_of(name), set()).add(side)
    assert all(len(sides) == 1 for sides in by_person.values())  # nobody on both sides
    held = sum(sides == {HELD_OUT} for sides in by_person.values())
    assert 150 < held < 250  # a fair coin over 400 people
    # The split depends on the name alone, not on which other files are present.
    assert split_of("Person_7") == first["Person_7_0001.jpg"]


def _people() -> tuple[str, str]:
    """One person name that lands in each half (found, not assumed, so the test follows the hash)."""
    candidates = [f"Astro_{i}" for i in range(100)]
    return (
        next(p for p in candidates if split_of(p) == TRAIN),
        next(p for p in candidates if split_of(p) == HELD_OUT),
    )


def write_labelled_photos(root):
    """happy/ and neutral/ photos of the astronaut at several sizes, named by two people, and one faceless."""
    trained, held = _people()
    photos = {
        f"happy/{trained}_0001.jpg": portrait(360)[0],
        f"happy/{held}_0001.jpg": portrait(220)[0],
        f"neutral/{trained}_0002.jpg": portrait(300, mirror=True)[0],
        f"neutral/{held}_0002.jpg": portrait(400, mirror=True)[0],
        "neutral/Nobody_0001.jpg": no_face_frame(320, 320),
    }
    for name, image in photos.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return trained, held


def test_photo_folder_becomes_framed_48px_crops_in_person_disjoint_halves(tmp_path):
    trained, held = write_labelled_photos(tmp_path / "photos")
    ds = load_photo_dataset(tmp_path / "photos", cache_dir=tmp_path / "cache")
    assert ds.labels == ["happy", "neutral"] and ds.format == "photos" and not ds.from_cache
    assert set(ds.splits) == {TRAIN, HELD_OUT}
    for split, person in ((TRAIN, trained), (HELD_OUT, held)):
        part = ds.splits[split]
        assert part.images.shape == (2, 48, 48) and part.images.dtype == np.uint8
        assert all(person in f for f in part.files)
        assert sorted(part.labels.tolist()) == [0, 1]
    assert ds.skipped == [(str(tmp_path / "photos" / "neutral" / "Nobody_0001.jpg"), "no face found")]
    # Framed from the eyes: the same face photographed at 220 and 360 px gives nearly the same crop, while
    # the photos themselves, squeezed to 48x48, differ (the face fills a different share of each).
    # (The default detector, YuNet, places the eyes ~1-2 px differently at the two sizes: 17.6 grey levels
    # apart here against ~79 for the squeezed photos; BlazeFace full range, which sees both photos as the same
    # 192 px letterbox, gave 2.9.)
    a, b = ds.splits[TRAIN].images[0].astype(float), ds.splits[HELD_OUT].images[0].astype(float)
    assert np.abs(a - b).mean() < 20
    # Cut exactly as the daemon cuts a frame: its decoder, its default detector, the largest face, the eyes.
    photo = read_image(tmp_path / "photos" / "happy" / f"{trained}_0001.jpg")
    face = max(make_detector(DetectorConfig()).detect(photo), key=lambda d: d.box[2] * d.box[3])
    daemon = faces_to_batch(photo, [face.box], (48, 48), DEFAULT_BOX_MARGIN, [face.eyes], DEFAULT_FRAMING)
    np.testing.assert_array_equal(ds.splits[TRAIN].images[0], daemon[0, :, :, 0])
    squeezed = cv2.resize(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(a - squeezed).mean() > 2 * np.abs(a - b).mean()

    again = load_photo_dataset(tmp_path / "photos", cache_dir=tmp_path / "cache")
    assert again.from_cache and again.skipped == ds.skipped
    np.testing.assert_array_equal(again.splits[HELD_OUT].images, ds.splits[HELD_OUT].images)
    # A changed file invalidates the cache.
    (tmp_path / "photos" / "neutral" / "Nobody_0001.jpg").unlink()
    assert not load_photo_dataset(tmp_path / "photos", cache_dir=tmp_path / "cache").from_cache


def test_relabel_maps_by_name_and_refuses_unknown_labels(tmp_path):
    write_labelled_photos(tmp_path / "photos")
    ds = load_photo_dataset(tmp_path / "photos", use_cache=False)
    part = relabel(ds.splits[TRAIN], ds.labels, ["angry", "happy", "neutral"], "photos")
    assert sorted(part.labels.tolist()) == [1, 2]
    with pytest.raises(DataError, match="'neutral'"):
        relabel(ds.splits[TRAIN], ds.labels, ["angry", "happy"], "photos")


def test_not_a_photo_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_photo_dataset(tmp_path / "missing")
    (tmp_path / "one" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "one" / "happy" / "x_0001.jpg"), portrait(200)[0])
    with pytest.raises(DataError, match="at least two"):
        load_photo_dataset(tmp_path / "one")
