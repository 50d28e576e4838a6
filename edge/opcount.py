"""Work per stage, counted from the models themselves, for estimating speed on hardware we cannot run.

A TFLite graph's multiply-accumulates come from its tensors' shapes: CONV_2D costs output elements x kernel
height x width x input channels, DEPTHWISE_CONV_2D output elements x kernel height x width, FULLY_CONNECTED
output elements x input features. Every other op (pooling, add, softmax, quantize...) is counted as one op
per output element: small next to the MACs, and not multiply-accumulates. An ONNX model run by OpenCV's DNN
(YuNet) is counted the same way from the layers OpenCV builds: a convolution's weights are [out channels, in
channels / groups, kh, kw], so each output element costs in/groups x kh x kw MACs (a depthwise 3x3 costs 9),
at the output shapes OpenCV infers for the input size. An OpenCV cascade has no MACs: its
cost is the number of windows it evaluates (each runs at least its first stage, most are rejected there),
estimated here from OpenCV's own scan (a window step of 2 pixels until the image is shrunk 2x, then 1).
"""

from __future__ import annotations

import math

import numpy as np

MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
# Raspberry Pi 4 (Cortex-A72 at 1.8 GHz), per core, as Arm's Software Optimization Guide gives the core: two
# 4-lane float32 FMAs per cycle, or one 8-lane int8 multiply-accumulate-long: 8 MACs per cycle either way.
# Work divided by this is a floor at peak throughput (real kernels reach a fraction of it), not a measurement.
PI4_MACS_PER_S = 8 * 1.8e9


def tflite_work(interpreter) -> dict:
    """{"macs": int, "macs_by_op": {op: int}, "other_ops": int} for one invocation of an allocated model."""
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in interpreter.get_tensor_details()}
    by_op: dict[str, int] = {}
    other = 0
    for op in interpreter._get_ops_details():  # the only public-ish view of the graph; no TensorFlow needed
        name = op["op_name"]
        outputs = [shapes.get(i, ()) for i in op["outputs"] if i >= 0]
        out_elems = sum(int(np.prod(shape)) for shape in outputs)
        if name in MAC_OPS:
            weights = shapes.get(op["inputs"][1], ()) if len(op["inputs"]) > 1 else ()
            by_op[name] = by_op.get(name, 0) + out_elems * _macs_per_output(name, weights)
        else:
            other += out_elems
    return {"macs": sum(by_op.values()), "macs_by_op": by_op, "other_ops": other}


def _macs_per_output(name: str, weights: tuple) -> int:
    if len(weights) < 2:
        return 0
    if name == "CONV_2D":  # [out_ch, kh, kw, in_ch]
        return int(np.prod(weights[1:]))
    if name == "DEPTHWISE_CONV_2D":  # [1, kh, kw, out_ch]: each output reads one kh x kw patch
        return int(weights[1] * weights[2])
    if name == "TRANSPOSE_CONV":  # [out_ch, kh, kw, in_ch]: an upper bound (strides skip some)
        return int(np.prod(weights[1:]))
    return int(weights[-1])  # FULLY_CONNECTED: [units, in_features]


def dnn_work(model_path, width: int, height: int) -> dict:
    """{"macs", "macs_by_op", "other_ops"} for one forward pass of an ONNX model in OpenCV's DNN at width x height.

    OpenCV's own `Net.getFLOPS` counts a depthwise convolution as a full one (4.4 GFLOPs for YuNet at 640x480
    against the 258M MACs its layers do), so the count is made here from each layer's weight and output shapes.
    """
    import cv2

    net = cv2.dnn.readNetFromONNX(str(model_path))
    ids, _, outputs = net.getLayersShapes((1, 3, int(height), int(width)))
    by_op: dict[str, int] = {}
    other = 0
    for layer_id, shapes in zip(ids, outputs, strict=True):
        layer = net.getLayer(int(np.ravel(layer_id)[0]))
        out_elems = sum(int(np.prod(shape)) for shape in shapes)
        if layer.type in ("Convolution", "InnerProduct") and layer.blobs:
            weights = layer.blobs[0].shape  # [out, in / groups, kh, kw] or [units, in_features]
            by_op[layer.type] = by_op.get(layer.type, 0) + out_elems * int(np.prod(weights[1:]))
        else:
            other += out_elems
    return {"macs": sum(by_op.values()), "macs_by_op": by_op, "other_ops": other}


def cascade_windows(
    width: int, height: int, window: tuple[int, int], scale_factor: float, min_side: int, max_side: int = 0
) -> int:
    """Windows OpenCV's detectMultiScale evaluates on a width x height image (its scale loop, counted)."""
    total = 0
    factor = 1.0
    max_side = max_side or max(width, height)
    while True:
        win = (round(window[0] * factor), round(window[1] * factor))
        scan = (round(width / factor) - window[0], round(height / factor) - window[1])
        if scan[0] <= 0 or scan[1] <= 0 or max(win) > max_side:
            break
        if min(win) >= min_side:
            step = 1 if factor > 2 else 2
            total += math.ceil(scan[0] / step) * math.ceil(scan[1] / step)
        factor *= scale_factor
    return total


def detector_work(detector, frame_size) -> dict:
    """What one full scan of a frame_size = [width, height] frame costs the detector and, under "roi", what
    re-finding one tracked face between scans costs (YuNet's crop, BlazeFace full range's short-range pass)."""
    roi_side = getattr(detector, "roi_side", None)
    if roi_side is not None and frame_size:  # YuNet: an ONNX model at the size it is handed
        width, height = detector.network_size(detector.scan_size(frame_size))
        scan = dnn_work(detector.path, width, height)
        roi = dict(dnn_work(detector.path, roi_side, roi_side), side=roi_side)
        return dict(scan, scan_size=[width, height], roi=roi, unit="MACs per full scan")
    interpreter = getattr(detector, "interpreter", None)
    if interpreter is not None:
        work = dict(tflite_work(interpreter), unit="MACs per detect call")
        short = getattr(detector, "short", None)  # BlazeFace full range re-finds tracked faces with this one
        if short is not None:
            side = int(short.variant.input_size)
            work["roi"] = dict(tflite_work(short.interpreter), side=side)
        return work
    cascade = getattr(detector, "_cascade", None)
    if cascade is None or not frame_size:
        return {"unit": "not applicable"}
    width, height = frame_size
    scale = min(1.0, detector.detect_width / width)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    min_side = max(1, int(round(detector.min_face_px * scale)))
    window = tuple(int(v) for v in cascade.getOriginalWindowSize())
    windows = cascade_windows(w, h, window, detector.scale_factor, min_side)
    return {"windows": windows, "scan_size": [w, h], "unit": "window evaluations per full scan (estimate)"}


def pi4_floor(work: dict, every_n_frames: int, faces: float, classify_threads: int) -> dict | None:
    """Milliseconds on a Pi 4 at PI4_MACS_PER_S: a full scan and a tracked-face crop on one core, a face's
    classification on its threads, and a frame at `every_n_frames` with `faces` faces in view (a full scan on
    one frame in n, a crop per face on the others); None for a detector without MACs (a cascade)."""
    detect, classify = work["detect"], work["classify"]["macs"]
    if "macs" not in detect:
        return None
    scan, crop = detect["macs"], detect.get("roi", detect)["macs"]  # no cheaper crop: a full scan per frame

    def ms(macs: float, cores: int = 1) -> float:
        return round(1000 * macs / (PI4_MACS_PER_S * cores), 2)

    n = max(1, int(every_n_frames))
    detect_per_frame = (scan + (n - 1) * (crop * faces if "roi" in detect else scan)) / n
    return {
        "scan_ms": ms(scan),
        "crop_ms": ms(crop),
        "classify_ms": ms(classify, classify_threads),
        "frame_ms": round(ms(detect_per_frame) + faces * ms(classify, classify_threads), 2),
        "detect_macs_per_frame": int(detect_per_frame),
        "every_n_frames": n,
        "faces": faces,
    }


def format_pi4(floor: dict | None) -> str:
    if floor is None:
        return "Pi 4 floor: no MAC model for this detector (measure on the Pi)"
    return (
        f"Pi 4 floor at peak SIMD (an estimate): full scan {floor['scan_ms']:.1f} ms, tracked-face crop "
        f"{floor['crop_ms']:.1f} ms, classify {floor['classify_ms']:.1f} ms per face; per frame "
        f"{floor['frame_ms']:.1f} ms ({floor['detect_macs_per_frame'] / 1e6:.1f}M detect MACs) at "
        f"every_n_frames {floor['every_n_frames']} with {floor['faces']:g} faces"
    )


def format_work(work: dict) -> str:
    def macs(entry):
        return f"{entry['macs'] / 1e6:.1f}M MACs + {entry['other_ops'] / 1e6:.2f}M other ops"

    detect = work["detect"]
    if "roi" in detect:
        size = "x".join(map(str, detect.get("scan_size", [])))
        side = "x".join(map(str, [detect["roi"]["side"]] * 2))
        detect_text = (
            f"{macs(detect)} per full scan{' of ' + size if size else ''}; {macs(detect['roi'])} per tracked "
            f"face between scans ({side} crop)"
        )
    elif "macs" in detect:
        detect_text = f"{macs(detect)} per call"
    elif "windows" in detect:
        size = "x".join(map(str, detect["scan_size"]))
        detect_text = f"~{detect['windows']:,} cascade windows per full scan of {size} (estimate; no MACs)"
    else:
        detect_text = "not applicable"
    return f"work: classify {macs(work['classify'])} per face; detect {detect_text}"
