"""Face detectors behind one interface: `make_detector(cfg).detect(frame) -> list[Detection]`.

`auto` (default) is `yunet` when its weights are installed, else `blazeface_full`, else `haar`. `yunet` is
OpenCV Zoo's YuNet on OpenCV's own DNN (`cv2.FaceDetectorYN`), which scans the frame at its own resolution and
finds the eyes; `blazeface_full` is MediaPipe's full-range TFLite detector (with its short-range sibling for
close faces), also with the eyes; `blazeface` is the short-range one alone; `haar` and `lbp` are OpenCV
cascades (a box only).
"""

from edge.detect.base import Detection, Detector, DetectorError, describe, largest
from edge.detect.factory import make_detector

__all__ = ["Detection", "Detector", "DetectorError", "describe", "largest", "make_detector"]
