"""edge/opcount.py: MACs read from real TFLite graphs, and the cascade's window count on hand-sized scans."""

from __future__ import annotations

import json
from pathlib import Path

from edge.interpreter import load_interpreter
from edge.opcount import cascade_windows, format_work, tflite_work

SHIPPED = Path(__file__).resolve().parents[2] / "edge" / "models" / "default.tflite"


def test_tiny_model_macs_match_its_layers_by_hand(tiny_model_path):
    interpreter, _ = load_interpreter(tiny_model_path)
    work = tflite_work(interpreter)
    convs = 48 * 48 * 8 * (3 * 3 * 1) + 24 * 24 * 16 * (3 * 3 * 8) + 12 * 12 * 32 * (3 * 3 * 16)
    dense = (6 * 6 * 32) * 32 + 32 * 7
    assert work["macs_by_op"] == {"CONV_2D": convs, "FULLY_CONNECTED": dense}
    assert work["macs"] == convs + dense
    assert 0 < work["other_ops"] < work["macs"] / 10  # pooling, softmax, quantize: small next to the MACs


def test_shipped_model_macs_match_the_count_training_recorded_from_keras():
    interpreter, _ = load_interpreter(SHIPPED)
    recorded = json.loads(SHIPPED.with_suffix(".json").read_text())["extra"]["source_extra"]["macs"]
    assert tflite_work(interpreter)["macs"] == recorded


def test_cascade_windows_follow_opencvs_scan():
    # 48x48 image, 24 px window: scale 1 leaves a 24x24 range scanned in steps of 2 (12 x 12 windows);
    # at factor 2 the image is 24x24, no room left, so the scan ends.
    assert cascade_windows(48, 48, (24, 24), 2.0, min_side=1) == 144
    assert cascade_windows(48, 48, (24, 24), 2.0, min_side=25) == 0  # the only scale is below min size
    # 72x72 by 1.5: a 48x48 range in steps of 2 (576), then 24x24 at 1.5 (144), then at 2.25 (> 2) the
    # 32 px image leaves 8x8 positions scanned in steps of 1 (64); at 3.375 it is smaller than the window.
    assert cascade_windows(72, 72, (24, 24), 1.5, min_side=1) == 576 + 144 + 64
    assert cascade_windows(640, 480, (24, 24), 1.1, 24) > cascade_windows(640, 480, (24, 24), 1.2, 24)


def test_format_names_the_units():
    classify = {"macs": 84_272_448, "other_ops": 14_030, "macs_by_op": {}}
    text = format_work({"classify": classify, "detect": {"windows": 68_591, "scan_size": [320, 240]}})
    assert "classify 84.3M MACs" in text and "~68,591 cascade windows" in text and "estimate" in text


def test_yunet_macs_from_opencvs_layers_scale_with_the_pixels_and_count_depthwise_as_such():
    from edge.opcount import dnn_work

    yunet = Path(__file__).resolve().parents[2] / "edge" / "models" / "face_detection_yunet_2023mar.onnx"
    small, large = dnn_work(yunet, 320, 320), dnn_work(yunet, 640, 640)
    # A fully convolutional net whose strides all divide both sizes: four times the pixels, four times the work.
    assert large["macs"] == 4 * small["macs"] and set(large["macs_by_op"]) == {"Convolution"}
    # By hand for 320x320: the stem is a 3x3 stride-2 convolution, 3 -> 16 channels, onto 160x160 (27 MACs per
    # output element); if the many depthwise 3x3 layers were counted as full convolutions (OpenCV's own
    # getFLOPS does), the total would be several times larger than the ~258M at 640x480 its authors quote.
    assert small["macs"] > 160 * 160 * 16 * 27
    assert 250e6 < dnn_work(yunet, 640, 480)["macs"] < 265e6


def test_pi4_floor_divides_the_work_by_the_cores_peak_and_spreads_a_scan_over_the_cadence():
    from edge.opcount import PI4_MACS_PER_S, pi4_floor

    classify = {"macs": 14_400_000, "other_ops": 0}  # 1 ms on one Pi 4 core at 14.4G MACs/s
    yunet_like = {"macs": 144_000_000, "roi": {"macs": 14_400_000, "side": 128}}
    floor = pi4_floor(
        {"classify": classify, "detect": yunet_like}, every_n_frames=3, faces=2, classify_threads=2
    )
    assert PI4_MACS_PER_S == 14.4e9
    assert (floor["scan_ms"], floor["crop_ms"], floor["classify_ms"]) == (10.0, 1.0, 0.5)
    # A 10 ms scan on one frame in three, two 1 ms crops on each of the other two, 2 faces x 0.5 ms each frame.
    assert floor["detect_macs_per_frame"] == (144_000_000 + 2 * 2 * 14_400_000) // 3
    assert floor["frame_ms"] == round((10 + 2 * 2 * 1) / 3 + 2 * 0.5, 2)
    no_crop = pi4_floor({"classify": classify, "detect": {"macs": 144_000_000}}, 3, 2, 2)
    assert no_crop["frame_ms"] == 11.0  # a detector without a cheaper crop scans every frame
    assert pi4_floor({"classify": classify, "detect": {"windows": 5}}, 3, 1, 2) is None
