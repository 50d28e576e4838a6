"""Raspberry Pi camera through picamera2 (Raspberry Pi OS's python3-picamera2; imported only when chosen)."""

from __future__ import annotations

import time

from edge.capture.base import Frame, Source, SourceError


class Picamera2Source(Source):
    """One long-lived Picamera2 object per source; frames are 3-channel BGR arrays ready for OpenCV."""

    live = True

    def __init__(self, camera_num: int = 0, width=None, height=None, fps=None):
        self.source_id = "picamera2" if camera_num == 0 else f"picamera2:{camera_num}"
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(
                "source picamera2: the picamera2 module is not installed "
                "(on Raspberry Pi OS: sudo apt install python3-picamera2, and create the venv with "
                "--system-site-packages)"
            ) from None
        size = (int(width or 640), int(height or 480))
        try:
            self._camera = Picamera2(camera_num)
        except Exception as exc:  # libcamera raises assorted errors for a missing or busy camera
            raise SourceError(f"source {self.source_id}: cannot open the camera: {exc}") from None
        try:
            controls = {"FrameRate": float(fps)} if fps else {}
            # "RGB888" is libcamera's name for pixels stored B, G, R: exactly OpenCV's BGR order.
            config = self._camera.create_video_configuration(
                main={"format": "RGB888", "size": size}, controls=controls
            )
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:
            self._camera.close()
            raise SourceError(f"source {self.source_id}: cannot start the camera: {exc}") from None
        self._index = 0

    def read(self) -> Frame | None:
        try:
            image = self._camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"source {self.source_id}: capture failed: {exc}") from None
        frame = Frame(image, self._index, time.time(), None)
        self._index += 1
        return frame

    def close(self) -> None:
        try:
            self._camera.stop()
        finally:
            self._camera.close()
