"""Decoding an image file without trusting it: size and pixel count are checked before OpenCV sees it.

A PNG of 874 KB can claim 30000x30000 pixels and take 1.9 GB to decode; a sparse file reads as gigabytes;
a header past OpenCV's own limit raises instead of returning None. Either would take a Pi down in the middle
of a folder. So the file size is checked first, then the width and height are read from the header (PNG,
JPEG, GIF, BMP, WebP, TIFF, PNM: a few hundred bytes, a few segments for JPEG), and only an image within
both limits is decoded. Training decodes through the same function, so the same files are refused there.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

import cv2
import numpy as np

from edge.preprocess import IMREAD_FLAGS


class ImageRefused(ValueError):
    """The file is not decoded; the message says why (too large, unknown format, not decodable)."""


class ImageUnreadable(ImageRefused):
    """The file could not be read at all (gone, or no permission): an OSError, not a matter of its content."""


def _png(head: bytes, _f: BinaryIO) -> tuple[int, int] | None:
    if head[12:16] != b"IHDR" or len(head) < 24:
        return None
    return struct.unpack(">II", head[16:24])


def _gif(head: bytes, _f: BinaryIO) -> tuple[int, int] | None:
    return struct.unpack("<HH", head[6:10]) if len(head) >= 10 else None


def _bmp(head: bytes, _f: BinaryIO) -> tuple[int, int] | None:
    if len(head) < 26:
        return None
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # a negative height means top-down rows


def _webp(head: bytes, _f: BinaryIO) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(_head: bytes, f: BinaryIO) -> tuple[int, int] | None:
    """Walk the segments (EXIF and thumbnails come first, up to 64 KB each) to the frame header."""
    f.seek(2)
    for _ in range(4096):
        marker = f.read(2)
        for _ in range(65536):  # stray bytes before a marker: libjpeg skips them (with a warning), so do we
            if len(marker) < 2 or marker[0] == 0xFF:
                break
            marker = marker[1:] + f.read(1)
        while len(marker) == 2 and marker[0] == 0xFF and marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] == 0x01:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        size = struct.unpack(">H", length)[0]
        if marker[1] in _JPEG_SOF:
            frame = f.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        if size < 2:
            return None
        f.seek(size - 2, os.SEEK_CUR)
    return None


def _tiff(head: bytes, f: BinaryIO) -> tuple[int, int] | None:
    """The first image's ImageWidth (256) and ImageLength (257) tags: what OpenCV decodes."""
    order = "<" if head[:2] == b"II" else ">"
    f.seek(struct.unpack(order + "I", head[4:8])[0])
    count_bytes = f.read(2)
    if len(count_bytes) < 2:
        return None
    sizes: dict[int, int] = {}
    for _ in range(min(struct.unpack(order + "H", count_bytes)[0], 4096)):
        entry = f.read(12)
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            sizes[tag] = struct.unpack(
                order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12]
            )[0]
    return (sizes[256], sizes[257]) if len(sizes) == 2 else None


def _pnm(head: bytes, _f: BinaryIO) -> tuple[int, int] | None:
    """P1..P6: the magic, then width and height as text, with `#` comments allowed between them."""
    numbers: list[int] = []
    for line in head[2:].split(b"\n"):
        for word in line.split(b"#", 1)[0].split():
            if not word.isdigit():
                return None
            numbers.append(int(word))
            if len(numbers) == 2:
                return numbers[0], numbers[1]
    return None


# (magic bytes, offset, parser, name). What OpenCV decodes is decided by these bytes, not the file name.
_FORMATS = [
    (b"\x89PNG\r\n\x1a\n", 0, _png, "PNG"),
    (b"\xff\xd8", 0, _jpeg, "JPEG"),
    (b"GIF8", 0, _gif, "GIF"),
    (b"BM", 0, _bmp, "BMP"),
    (b"WEBP", 8, _webp, "WebP"),
    (b"II*\x00", 0, _tiff, "TIFF"),
    (b"MM\x00*", 0, _tiff, "TIFF"),
] + [(b"P%d" % n, 0, _pnm, "PNM") for n in range(1, 7)]


def image_format(head: bytes) -> str | None:
    """The image format the first bytes of a file announce ("PNG", "JPEG", ...), or None: what OpenCV
    will decode it as, whatever the file is called."""
    for magic, offset, _parse, name in _FORMATS:
        if head[offset : offset + len(magic)] == magic and (offset == 0 or head[:4] == b"RIFF"):
            return name
    return None


def header_size(f: BinaryIO) -> tuple[int, int]:
    """(width, height) from an open image file's header; ImageRefused when it is no format known here."""
    f.seek(0)
    head = f.read(512)
    for magic, offset, parse, name in _FORMATS:
        if head[offset : offset + len(magic)] == magic and (offset == 0 or head[:4] == b"RIFF"):
            try:
                size = parse(head, f)
            except (struct.error, OSError, ValueError, KeyError):
                size = None
            if size is None:
                raise ImageRefused(f"a broken {name} header")
            return size
    raise ImageRefused("not a readable image (no PNG, JPEG, GIF, BMP, WebP, TIFF or PNM header)")


def check_pixels(width: int, height: int, max_mpx: float) -> None:
    """ImageRefused when a picture of `width` x `height` is over `max_mpx` megapixels, or empty."""
    if width * height > max_mpx * 1e6:
        raise ImageRefused(
            f"{width}x{height} pixels ({width * height / 1e6:.1f} Mpx), more than "
            f"source.max_image_mpx ({max_mpx:g})"
        )
    if width == 0 or height == 0:
        raise ImageRefused(f"a header of {width}x{height} pixels")


def load_image(path: str | os.PathLike, max_mb: float, max_mpx: float) -> np.ndarray:
    """Decode an image file as every stage does (IMREAD_FLAGS), refusing (ImageRefused, with the reason)
    a file over `max_mb` megabytes or whose header claims more than `max_mpx` megapixels."""
    try:
        with open(path, "rb") as f:
            size_bytes = os.fstat(f.fileno()).st_size
            if size_bytes > max_mb * 1e6:
                raise ImageRefused(f"{size_bytes / 1e6:.1f} MB, more than source.max_image_mb ({max_mb:g})")
            if size_bytes == 0:
                raise ImageRefused("an empty file")
            check_pixels(*header_size(f), max_mpx)
            f.seek(0)
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except OSError as exc:
        raise ImageUnreadable(f"cannot be read ({exc.strerror or exc})") from None
    try:
        image = cv2.imdecode(data, IMREAD_FLAGS)
    except cv2.error as exc:  # e.g. past OpenCV's own pixel limit, or a decoder that gave up
        raise ImageRefused(f"OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise ImageRefused("not a readable image (corrupt or unsupported)")
    return image
