"""What every frame source is and gives: a Source's `read()` returns Frames, its failures are SourceErrors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SourceError(RuntimeError):
    """A source cannot be opened or has failed; the message names the source and the reason."""


@dataclass
class Frame:
    image: np.ndarray  # as decoded: BGR, gray, or BGRA
    index: int  # 0-based, in order of the source
    timestamp: float  # time.time() at capture
    file: str | None = None  # file name (basename) for image files/folders, else None


class Source:
    """One open frame source. `read()` returns the next Frame, or None when a finite source has ended."""

    source_id: str = ""
    live: bool = False
    # Seconds between frames when the source must not be read faster (the demo, a file played in real
    # time): the capture thread keeps the pace. None: read as fast as frames come.
    frame_interval: float | None = None

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
