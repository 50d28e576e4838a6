"""What the live preview page costs the daemon: the processing loop's per-frame time and the process's CPU,
with no preview, with the preview on but the page closed, and with one or two viewers streaming it.

    python -m benchmarks.preview_cost [--frames 150] [--fps 15] [--rounds 4] [--max-fps 5] [--threads 1]

A 640x480 camera frame with one real face (scikit-image's astronaut) is fed at --fps, as a camera would,
through the daemon's own FrameProcessor and the preview's offer() hook, exactly as edge/daemon.py calls
them; viewers are HTTP clients in this process reading /stream.mjpg as fast as it comes. The modes take
turns, each round in a rotated order (--rounds), so drift on a shared machine spreads over all of them.
Reported per mode:

  loop ms/frame   median and mean of process() + offer(): what a frame costs the processing loop
  offer us        median of the offer() call alone
  CPU             time.process_time() over wall time, % of one core: every thread (encoder, HTTP, viewers)
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

from benchmarks.common import REPO, command_line
from edge.capture import Frame
from edge.classify import EmotionClassifier
from edge.config import Config, PreviewConfig
from edge.detect import make_detector
from edge.emit import EventMaker
from edge.pipeline import FrameProcessor
from edge.preview.server import start_preview
from edge.stats import StatsCollector
from testbed import facesdata

MODES = ("no preview", "preview on, page closed", "page open, 1 viewer", "page open, 2 viewers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def viewer(port: int, stop: threading.Event, received: list[int]) -> None:
    """Reads the MJPEG stream as fast as it comes, counting bytes, until stopped."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stream.mjpg", headers={"Host": f"localhost:{port}"})
    response = conn.getresponse()
    while not stop.is_set():
        chunk = response.read1(65536)
        if not chunk:
            break
        received[0] += len(chunk)
    conn.close()


def run_mode(mode: str, frames: int, fps: float, processor, events, preview, port: int) -> dict:
    viewers = MODES.index(mode) - 1 if mode.startswith("page open") else 0
    stop, received, threads = threading.Event(), [0], []
    for _ in range(viewers):
        threads.append(threading.Thread(target=viewer, args=(port, stop, received), daemon=True))
        threads[-1].start()
    if viewers:
        time.sleep(0.5)  # connected, first frames drawn
    hook = preview if mode != "no preview" else None
    image, _ = facesdata.one_face_frame()
    stats, capture = StatsCollector(), SimpleNamespace(captured=0, dropped=0)
    drawn_before = preview.hub.frames_drawn
    loop_ms, offer_us = [], []
    period = 1.0 / fps
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for index in range(frames):
        due = wall0 + index * period
        time.sleep(max(0.0, due - time.perf_counter()))
        capture.captured += 1
        start = time.perf_counter()
        frame = Frame(image, index, time.time())
        result = processor.process(frame)
        event = events.make(frame, result, time.monotonic())
        stats.record(result.timings_ms, len(result.faces))
        offered = time.perf_counter()
        if hook is not None:
            hook.offer(SimpleNamespace(image=image, index=index), result, stats, capture, event)
        done = time.perf_counter()
        loop_ms.append((done - start) * 1000)
        offer_us.append((done - offered) * 1e6)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    drawn = preview.hub.frames_drawn - drawn_before
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    while preview.hub.status()["preview"]["viewers"]:  # gone before the next mode starts counting
        time.sleep(0.05)
    time.sleep(0.3)
    return {"loop_ms": loop_ms, "offer_us": offer_us, "cpu": cpu / wall,
            "drawn": drawn, "wall": wall, "bytes": received[0]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per mode per round")
    parser.add_argument("--fps", type=float, default=15.0, help="camera frame rate fed to the loop")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-fps", type=float, default=5.0, help="preview.max_fps")
    parser.add_argument("--threads", type=int, default=1, help="TFLite threads")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    classifier = EmotionClassifier(REPO / "edge" / "models" / "default.tflite", num_threads=args.threads)
    config = Config()
    config.publish = replace(config.publish, policy="every")
    port = free_port()
    config.preview = PreviewConfig(enabled=True, port=port, max_fps=args.max_fps)
    processor = FrameProcessor(config, classifier, make_detector(config.detector), "bench")
    events = EventMaker(config, classifier.labels, "bench")
    preview = start_preview(config, "bench", classifier.labels, publishers=[])
    print("command:", command_line())
    print(f"640x480, one face, {args.fps:g} fps in, haar every {config.detector.every_n_frames} frames, "
          f"preview.max_fps {args.max_fps:g}, {args.frames} frames x {args.rounds} rounds per mode")  # fmt: skip
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    try:
        for round_index in range(args.rounds):
            for mode in MODES[round_index % 4 :] + MODES[: round_index % 4]:  # each mode in each position
                results[mode].append(run_mode(mode, args.frames, args.fps, processor, events, preview, port))
    finally:
        preview.close()
    for mode, runs in results.items():
        loop = [v for r in runs for v in r["loop_ms"]]
        offer = [v for r in runs for v in r["offer_us"]]
        cpu = statistics.median(r["cpu"] for r in runs) * 100
        drawn = sum(r["drawn"] for r in runs) / sum(r["wall"] for r in runs)
        kib = sum(r["bytes"] for r in runs) / sum(r["wall"] for r in runs) / 1024
        print(f"{mode:>24}: loop ms/frame median {statistics.median(loop):5.2f}, mean {statistics.fmean(loop):5.2f}; "
              f"offer median {statistics.median(offer):6.1f} us; CPU {cpu:5.1f}% of a core; "
              f"{drawn:4.1f} frames drawn/s, {kib:6.1f} KiB/s streamed")  # fmt: skip
    print(f"draw + JPEG encode per preview frame: median {preview.hub.status()['preview']['draw_ms_p50']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
