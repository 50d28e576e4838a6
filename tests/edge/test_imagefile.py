"""Image files are checked before they are decoded (issue 21, item 2): header sizes, size limits, and the
folder source skipping and counting what it refuses instead of stopping or swallowing the Pi's memory."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.imagefile import ImageRefused, header_size, load_image
from testbed.daemonproc import daemon_args, run_daemon, write_config

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "edge" / "models" / "default.tflite"
FACE = REPO / "edge" / "samples" / "astronaut_640x480.jpg"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit gray), with one short compressed row: a few hundred
    bytes that ask the decoder for width * height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _header(data: bytes, tmp_path: Path) -> tuple[int, int]:
    path = tmp_path / "img"
    path.write_bytes(data)
    with open(path, "rb") as f:
        return header_size(f)


@pytest.mark.parametrize(
    ("ext", "gray"),
    [(ext, gray) for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff") for gray in (False, True)]
    + [(".ppm", False), (".pgm", True), (".pbm", True)],
)
def test_header_size_matches_what_opencv_decodes(tmp_path, ext, gray):
    image = np.random.default_rng(1).integers(0, 255, (37, 53, 1 if gray else 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(ext, image)
    assert ok
    assert _header(encoded.tobytes(), tmp_path) == (53, 37)


def test_header_size_of_lossless_webp_gif_os2_bmp_and_jpeg_after_exif(tmp_path):
    image = np.full((41, 67, 3), 90, np.uint8)
    ok, lossless = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok and lossless.tobytes()[12:16] == b"VP8L"
    assert _header(lossless.tobytes(), tmp_path) == (67, 41)
    assert _header(b"GIF89a" + struct.pack("<HH", 300, 200) + b"\x00" * 20, tmp_path) == (300, 200)
    os2 = b"BM" + b"\x00" * 12 + struct.pack("<IHHHH", 12, 120, 80, 1, 24)
    assert _header(os2, tmp_path) == (120, 80)
    ok, jpeg = cv2.imencode(".jpg", image)
    app1 = b"\xff\xe1" + struct.pack(">H", 60002) + b"Exif\x00\x00" + b"\x00" * 59994  # a big EXIF block
    assert _header(jpeg.tobytes()[:2] + app1 + jpeg.tobytes()[2:], tmp_path) == (67, 41)


def test_unknown_and_broken_headers_are_refused(tmp_path):
    with pytest.raises(ImageRefused, match="not a readable image .no PNG, JPEG"):
        _header(b"just some text, not a picture", tmp_path)
    with pytest.raises(ImageRefused, match="a broken JPEG header"):
        _header(b"\xff\xd8 this is not really a jpeg", tmp_path)
    with pytest.raises(ImageRefused, match="a broken PNG header"):
        _header(b"\x89PNG\r\n\x1a\n\x00\x00", tmp_path)


def test_limits_refuse_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_claiming(30000, 30000))  # 1.9 GB of RSS when decoded
    with pytest.raises(
        ImageRefused, match=r"30000x30000 pixels \(900\.0 Mpx\), more than source\.max_image_mpx"
    ):
        load_image(huge, 50, 40)
    sparse = tmp_path / "sparse.jpg"
    with open(sparse, "wb") as f:
        f.write(FACE.read_bytes())
        f.truncate(3_000_000_000)  # a hole: 3 GB to read, nothing on disk
    with pytest.raises(ImageRefused, match=r"3000\.0 MB, more than source\.max_image_mb \(50\)"):
        load_image(sparse, 50, 40)
    assert load_image(FACE, 50, 40).shape[:2] == (480, 640)
    with pytest.raises(ImageRefused, match="max_image_mpx"):
        load_image(FACE, 50, 0.3)  # 640x480 is 0.31 Mpx


def test_folder_run_skips_and_counts_what_it_refuses(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_face.jpg").write_bytes(FACE.read_bytes())
    (folder / "b_beyond_opencv.png").write_bytes(png_claiming(60000, 60000))  # OpenCV itself raises on it
    (folder / "c_huge.png").write_bytes(png_claiming(30000, 30000))
    (folder / "d_broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    with open(folder / "e_sparse.jpg", "wb") as f:
        f.write(FACE.read_bytes())
        f.truncate(2_000_000)
    (folder / "f_face.jpg").write_bytes(FACE.read_bytes())
    config = write_config(tmp_path, "stats:\n  interval_s: 0\nsource:\n  max_image_mb: 1\n")
    result = run_daemon(daemon_args(config, MODEL, str(folder), "--policy", "every"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    events = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(events) == 2
    assert "skipped 4 of 6 images in" in result.stderr
    assert "2 over source.max_image_mpx" in result.stderr and "1 over source.max_image_mb" in result.stderr
    assert "1 a broken JPEG header" in result.stderr


def test_a_single_refused_image_is_one_error_line(tmp_path):
    image = tmp_path / "huge.png"
    image.write_bytes(png_claiming(60000, 60000))
    result = run_daemon(daemon_args(write_config(tmp_path), MODEL, str(image)), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: source {image}: not used: 60000x60000 pixels" in result.stderr


def test_training_decodes_with_the_same_guard(tmp_path):
    from train.data import _decode_image

    (tmp_path / "huge.png").write_bytes(png_claiming(30000, 30000))
    image, reason = _decode_image(str(tmp_path / "huge.png"), (48, 48))
    assert image is None and "max_image_mpx" in reason
    face, reason = _decode_image(str(FACE), (48, 48))
    assert face.shape == (48, 48) and reason == ""
    assert os.path.getsize(tmp_path / "huge.png") < 2000


def test_jpeg_with_stray_bytes_before_a_marker_is_still_measured(tmp_path):
    """libjpeg skips junk between segments with a warning and decodes the photo: so must the header check."""
    ok, jpeg = cv2.imencode(".jpg", np.full((30, 50, 3), 128, np.uint8))
    data = jpeg.tobytes()
    end = 4 + struct.unpack(">H", data[4:6])[0]  # after the first segment (APP0)
    stray = data[:end] + b"\x00\x13\x37" + data[end:]
    assert cv2.imdecode(np.frombuffer(stray, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (30, 50)
    assert _header(stray, tmp_path) == (50, 30)
