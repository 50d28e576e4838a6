"""`emotion-edge bench`: per-stage latency and throughput of the real pipeline over a real source.

Runs the configured detector and classifier exactly as the daemon does (capture thread, FrameProcessor),
without publishing, and reports p50/p95 per stage. Finite sources (photos, a video file) are replayed from
the start until enough frames were measured, so a folder of four photos still gives a stable number.
"""

from __future__ import annotations

import threading
import time

import numpy as np

STAGES = ("capture_wait", "detect", "classify", "track", "total")


class _LoopingSource:
    """Replays a finite source from the start when it ends (frame indexes keep counting)."""

    def __init__(self, open_fn, first):
        self._open = open_fn
        self._inner = first
        self.source_id = first.source_id
        self.live = first.live
        self._index = 0

    def read(self):
        frame = self._inner.read()
        if frame is None:
            self._inner.close()
            self._inner = self._open()
            frame = self._inner.read()
            if frame is None:
                return None
        frame.index = self._index
        self._index += 1
        return frame

    def close(self):
        self._inner.close()


def percentiles(values) -> dict[str, float]:
    array = np.asarray(values, np.float64)
    if array.size == 0:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0}
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "mean": round(float(array.mean()), 3),
    }


def run_bench(config, source_uri: str, frames: int = 100, warmup: int = 10, timeout_s: float = 600.0) -> dict:
    """Measure the pipeline over `frames` frames after `warmup` unmeasured ones. Raises FatalError on bad input."""
    from edge.capture import CaptureThread, SourceError, open_source
    from edge.daemon import FatalError, load_components, resolve_model_path
    from edge.pipeline import FrameProcessor

    classifier, detector, _ = load_components(config)
    warmup_total = warmup
    cfg = config.source

    def open_it():
        return open_source(source_uri, cfg.width, cfg.height, cfg.fps)

    try:
        first = open_it()
    except SourceError as exc:
        raise FatalError(str(exc)) from None
    source = first if first.live else _LoopingSource(open_it, first)
    processor = FrameProcessor(config, classifier, detector, first.source_id)
    stop = threading.Event()
    capture = CaptureThread(lambda: source, stop, queue_size=1)
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    faces = 0
    measured = 0
    capture.start()
    deadline = time.monotonic() + timeout_s
    frame_size = None
    try:
        started = None
        while measured < frames and time.monotonic() < deadline:
            waited = time.perf_counter()
            frame = capture.get(timeout=1.0)
            wait_ms = (time.perf_counter() - waited) * 1000
            if frame is None:
                if capture.finished:
                    break
                continue
            result = processor.process(frame)
            frame_size = [int(v) for v in frame.image.shape[1::-1]] if frame.image.ndim >= 2 else None
            if warmup > 0:
                warmup -= 1
                continue
            if started is None:
                started = time.perf_counter() - wait_ms / 1000
            timings = dict(result.timings_ms, capture_wait=wait_ms)
            timings["total"] = sum(result.timings_ms.values())
            for stage in STAGES:
                samples[stage].append(timings[stage])
            faces += len(result.faces)
            measured += 1
        elapsed = (time.perf_counter() - started) if started is not None else 0.0
    finally:
        stop.set()
        capture.join(2.0)
    if measured == 0:
        raise FatalError(
            f"source {source_uri}: no frames arrived to measure ({capture.error or 'timed out'})"
        )
    return {
        "source": source_uri,
        "frames": measured,
        "warmup": warmup_total,
        "model": resolve_model_path(config).name,
        "interpreter": classifier.backend,
        "threads": config.model.threads,
        "detector": config.detector.type,
        "frame_size": frame_size,
        "fps": round(measured / elapsed, 2) if elapsed > 0 else None,
        "faces_per_frame": round(faces / measured, 3),
        "dropped_frames": capture.dropped,
        "latency_ms": {stage: percentiles(values) for stage, values in samples.items()},
        "work": stage_work(classifier, detector, frame_size),
    }


def stage_work(classifier, detector, frame_size) -> dict:
    """Per-stage operation counts (edge/opcount.py): what a Pi's speed can be estimated from."""
    from edge.opcount import detector_work, tflite_work

    return {"classify": tflite_work(classifier.interpreter), "detect": detector_work(detector, frame_size)}


def format_bench(results: dict) -> str:
    """A small table for the terminal."""
    lines = [
        f"source {results['source']}  frames {results['frames']}  frame size {results.get('frame_size')}",
        f"detector {results['detector']}  model {results['model']} via {results['interpreter']} "
        f"({results['threads']} threads)",
        f"{'stage':<14}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}",
    ]
    for stage, stats in results["latency_ms"].items():
        lines.append(f"{stage:<14}{stats['p50']:>10.2f}{stats['p95']:>10.2f}{stats['mean']:>10.2f}")
    fps = results["fps"]
    lines.append(
        f"throughput {fps if fps is not None else 'n/a'} fps, {results['faces_per_frame']} faces/frame, "
        f"{results['dropped_frames']} dropped"
    )
    if "work" in results:
        from edge.opcount import format_work

        lines.append(format_work(results["work"]))
    return "\n".join(lines)
