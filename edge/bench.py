"""`emotion-edge bench`: per-stage latency and throughput of the real pipeline over a real source.

Runs the configured detector and classifier exactly as the daemon does (capture thread, FrameProcessor),
without publishing, and reports p50/p95 per stage. Finite sources (photos, a video file) are replayed from
the start until enough frames were measured, so a folder of four photos still gives a stable number.
"""

from __future__ import annotations

import threading
import time

from edge.stats import STAGES as DAEMON_STAGES
from edge.stats import percentile

STAGES = tuple(stage for stage in DAEMON_STAGES if stage != "publish")  # the bench publishes nothing


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
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0}
    return {
        "p50": round(percentile(ordered, 50), 3),
        "p95": round(percentile(ordered, 95), 3),
        "mean": round(sum(ordered) / len(ordered), 3),
    }


def run_bench(config, source_uri: str, frames: int = 100, warmup: int = 10, timeout_s: float = 600.0) -> dict:
    """Measure the pipeline over `frames` frames after `warmup` unmeasured ones. Raises FatalError on bad input."""
    from edge.capture import CaptureThread
    from edge.daemon import FatalError, load_components, resolve_model_path
    from edge.loop import FrameLoop
    from edge.opcount import pi4_floor
    from edge.pipeline import FrameProcessor

    classifier, detector, _ = load_components(config)
    source = _open_replaying(config, source_uri)
    processor = FrameProcessor(config, classifier, detector, source.source_id)
    stop = threading.Event()
    capture = CaptureThread(lambda: source, stop, queue_size=1)
    capture.start()
    try:  # the daemon's loop step, without publishing
        run = _measure(FrameLoop(capture, processor), frames, warmup, time.monotonic() + timeout_s)
    finally:
        stop.set()
        capture.join(2.0)
    samples, faces, measured, elapsed, frame_size = run
    if measured == 0:
        raise FatalError(
            f"source {source_uri}: no frames arrived to measure ({capture.error or 'timed out'})"
        )
    work = stage_work(classifier, detector, frame_size)
    return {
        "source": source_uri,
        "frames": measured,
        "warmup": warmup,
        "model": resolve_model_path(config).name,
        "interpreter": classifier.backend,
        "threads": config.model.threads,
        "detector": detector.name,
        "frame_size": frame_size,
        "fps": round(measured / elapsed, 2) if elapsed > 0 else None,
        "faces_per_frame": round(faces / measured, 3),
        "dropped_frames": capture.dropped,
        "latency_ms": {stage: percentiles(values) for stage, values in samples.items()},
        "work": work,
        "pi4_floor": pi4_floor(
            work, config.detector.every_n_frames, round(faces / measured, 2), config.model.threads
        ),
    }


def _open_replaying(config, source_uri: str):
    """The source, opened once here so a wrong path fails now; a finite one replays from its start."""
    from edge.capture import SourceError, open_source
    from edge.daemon import FatalError

    cfg = config.source

    def open_it():
        return open_source(source_uri, cfg.width, cfg.height, cfg.fps, (cfg.max_image_mb, cfg.max_image_mpx))

    try:
        first = open_it()
    except SourceError as exc:
        raise FatalError(str(exc)) from None
    return first if first.live else _LoopingSource(open_it, first)


def _measure(frames_in, frames: int, warmup: int, deadline: float):
    """(samples by stage, faces, frames measured, seconds, frame size) over `frames` frames after `warmup`."""
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    faces = measured = 0
    started = frame_size = None
    while measured < frames and time.monotonic() < deadline:
        step = frames_in.next(timeout=1.0)
        if step is None:
            if frames_in.capture.finished:
                break
            continue
        image = step.frame.image
        frame_size = [int(v) for v in image.shape[1::-1]] if image.ndim >= 2 else None
        if warmup > 0:
            warmup -= 1
            continue
        if started is None:
            started = time.perf_counter() - step.timings["capture_wait"] / 1000
        for stage in STAGES:
            samples[stage].append(step.timings[stage])
        faces += len(step.result.faces)
        measured += 1
    elapsed = (time.perf_counter() - started) if started is not None else 0.0
    return samples, faces, measured, elapsed, frame_size


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
        from edge.opcount import format_pi4, format_work

        lines.append(format_work(results["work"]))
        lines.append(format_pi4(results.get("pi4_floor")))
    return "\n".join(lines)
