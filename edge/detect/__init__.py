"""Face detectors behind one interface: `make_detector(cfg).detect(frame) -> list[Detection]`.

`haar` (default) and `lbp` are OpenCV cascades; `blazeface` is MediaPipe's short-range TFLite detector.
"""

from edge.detect.base import Detection, Detector, DetectorError, make_detector

__all__ = ["Detection", "Detector", "DetectorError", "make_detector"]
