"""Edge latency benchmark: detect + classify (+ publish to a null stdout) per 640x480 frame, and per-face
classify time, on real photographs (scikit-image astronaut, one and two faces).

    python -m benchmarks.edge_latency [--model edge/models/default.tflite] [--detector auto --detector haar]
                                      [--repeats 50] [--every-n N] [--no-roi-redetect]

A --detector is `type[:key=value,...]` of detector settings, checked as the daemon's config is (as in
scene_accuracy.py), e.g. `--detector auto:every_n_frames=6 --detector blazeface_full:every_n_frames=3`.

Several --detector values are measured one after the other in one run (default: the default `auto`, then
`blazeface_full` and `haar`), so their times can be compared as ratios on a shared, noisy machine: the full
scan alone, and a whole frame at the cadence (wall time, and the process's CPU time, which other jobs on the
machine inflate less).

Without --model it uses the shipped edge/models/default.tflite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import REPO, command_line, parse_detector
from edge.capture import Frame
from edge.classify import EmotionClassifier
from edge.config import Config
from edge.detect import make_detector
from edge.emit import EventMaker
from edge.pipeline import FrameProcessor
from edge.preprocess import faces_to_batch
from edge.publish.stdout import StdoutPublisher
from testbed import facesdata


def timings_ms(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def median_ms(fn, repeats: int) -> float:
    return statistics.median(timings_ms(fn, repeats))


def cpu_ms_per_call(fn, repeats: int) -> float:
    """The process's CPU time per call (all its threads: OpenCV's and the interpreter's), in ms."""
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) * 1000 / repeats


def measure(spec: str, args, classifier, model_name: str) -> dict:
    """Print one detector's per-frame figures; return the one-face frame's full-scan detect time and its
    per-frame mean (wall) and CPU time at the cadence."""
    config = Config()
    config.detector = parse_detector(spec)
    kind = spec
    if args.every_n:
        config.detector = replace(config.detector, every_n_frames=args.every_n)
    if args.no_roi_redetect:
        config.detector = replace(config.detector, roi_redetect=False)
    config.publish = replace(config.publish, policy="every")
    detector = make_detector(config.detector)
    publisher = StdoutPublisher(stream=open(os.devnull, "w"))  # noqa: SIM115  # JSON + write cost, no terminal
    print(
        f"model: {model_name} via {classifier.backend}, {args.threads} thread(s); detector: {kind} "
        f"({detector.name}), full scan every {config.detector.every_n_frames} frame(s), in between "
        + ("a crop around each tracked face" if config.detector.roi_redetect else "the last boxes reused")
    )
    one_face = {}
    for name, (image, _) in {
        "one face": facesdata.one_face_frame(),
        "two faces": facesdata.two_faces_frame(),
    }.items():
        processor = FrameProcessor(config, classifier, detector, "bench")
        events = EventMaker(config, classifier.labels, "bench")
        counter = iter(range(10**9))

        def one_frame(image=image, processor=processor, events=events, counter=counter):
            frame = Frame(image, next(counter), time.time())
            result = processor.process(frame)
            publisher.publish_event(events.make(frame, result, time.monotonic()))
            return result

        faces = len(one_frame().faces)
        detect_only = median_ms(lambda image=image: detector.detect(image), args.repeats)
        frame_times = timings_ms(one_frame, args.repeats)
        total, mean = statistics.median(frame_times), statistics.fmean(frame_times)
        cpu = cpu_ms_per_call(one_frame, args.repeats)
        print(
            f"{name:>9} 640x480: detect {detect_only:6.2f} ms; detect+classify+publish per frame: median "
            f"{total:6.2f} ms, mean {mean:6.2f} ms, CPU {cpu:6.2f} ms ({faces} tracked faces, "
            f"{1000 / mean:5.1f} fps)"
        )
        one_face = one_face or {"detect": detect_only, "frame": mean, "cpu": cpu}
        if name == "one face":
            detections = detector.detect(image)
            batch = faces_to_batch(
                image, [d.box for d in detections], classifier.input_size, classifier.contract.crop_margin,
                [d.eyes for d in detections], classifier.contract.face_framing,
            )  # fmt: skip
            per_face = median_ms(lambda batch=batch: classifier.classify(batch[:1]), args.repeats * 4)
            print(f"           classify one face (48x48 int8): {per_face:6.3f} ms median")
    return one_face


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .tflite with its .json contract")
    parser.add_argument("--detector", action="append", help="type[:key=value,...]; repeat to compare")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument(
        "--every-n", type=int, help="detect on every n-th frame (default: the config default)"
    )
    parser.add_argument(
        "--no-roi-redetect",
        action="store_true",
        help="between full scans reuse the last boxes instead of re-detecting in a crop around each face",
    )
    args = parser.parse_args()

    model = Path(args.model) if args.model else REPO / "edge" / "models" / "default.tflite"
    if not model.is_file():
        raise SystemExit(f"no model at {model}: give --model FILE (a .tflite with its .json contract)")
    classifier = EmotionClassifier(model, num_threads=args.threads)
    print("command:", command_line())
    figures = {}
    for kind in args.detector or ["auto", "blazeface_full", "haar"]:
        figures[kind] = measure(kind, args, classifier, model.name)
    first, *others = figures
    for key, what in (
        ("detect", "full-scan detect time"),
        ("frame", "per-frame mean"),
        ("cpu", "per-frame CPU"),
    ):
        if others:
            ratios = ", ".join(f"{k} {figures[k][key] / figures[first][key]:.2f}x" for k in others)
            print(f"{what}, one face, relative to {first}: {ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
