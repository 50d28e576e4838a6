"""Face detectors behind one interface: `make_detector(cfg).detect(frame) -> list[Detection]`.

`auto` (default) is `blazeface_full` when its weights are installed, else `haar`. `blazeface_full` is MediaPipe's
full-range TFLite detector (with its short-range sibling for close faces), which also finds the eyes;
`blazeface` is the short-range one alone; `haar` and `lbp` are OpenCV cascades (a box only).
"""

from edge.detect.base import Detection, Detector, DetectorError, describe, largest, make_detector

__all__ = ["Detection", "Detector", "DetectorError", "describe", "largest", "make_detector"]
