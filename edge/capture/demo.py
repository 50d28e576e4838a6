"""`--source demo`: the bundled sample photos (edge/samples/) as an endless camera, so the preview page, the
stats and Home Assistant's entities can be tried without one.

It plays a short scene over and over at the camera's pace (`source.fps`): one face, then two, then an empty
room, so faces appear and leave as they would in front of a real camera (a single still looped would give
one `appeared` and nothing after it). Like a camera it is live: it runs until the daemon is stopped.
"""

from __future__ import annotations

import importlib.resources
import time

import numpy as np

from edge.capture.base import Frame, Source, SourceError
from edge.capture.imagefile import ImageRefused, load_image

DEMO_URI = "demo"
DEFAULT_FPS = 15.0
# (sample file, or None for the empty room; seconds on screen). Long enough for the tracker to settle on
# each scene and for someone watching the preview page to see it.
SCENE = (
    ("astronaut_640x480.jpg", 4.0),
    ("astronaut_pair_640x480.jpg", 4.0),
    (None, 3.0),
)
EMPTY_GREY = 96  # the empty room: a plain mid-grey frame the size of the samples


class DemoSource(Source):
    """The SCENE's pictures, `fps` frames a second (the capture thread keeps the pace: frame_interval)."""

    live = True
    source_id = DEMO_URI

    def __init__(self, fps: float | None, image_limits: tuple[float, float]):
        self.fps = float(fps or DEFAULT_FPS)
        self.frame_interval = 1.0 / self.fps
        pictures = [_sample(name, image_limits) if name else None for name, _ in SCENE]
        shape = next(p.shape for p in pictures if p is not None)
        empty = np.full(shape, EMPTY_GREY, np.uint8)
        # One entry per frame of the whole scene: frame i shows schedule[i % len(schedule)].
        self._schedule = [
            picture if picture is not None else empty
            for picture, (_, seconds) in zip(pictures, SCENE, strict=True)
            for _ in range(max(1, round(seconds * self.fps)))
        ]
        self._index = 0

    def read(self) -> Frame:
        picture = self._schedule[self._index % len(self._schedule)]
        frame = Frame(picture.copy(), self._index, time.time(), None)  # a copy: nobody can draw on the next
        self._index += 1
        return frame


def _sample(name: str, image_limits: tuple[float, float]) -> np.ndarray:
    path = importlib.resources.files("edge") / "samples" / name
    try:
        return load_image(str(path), *image_limits)
    except ImageRefused as exc:  # unreadable too
        raise SourceError(
            f"source demo: the sample {name} cannot be read ({exc}); the install is incomplete: reinstall "
            "the package"
        ) from None
