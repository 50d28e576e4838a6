"""Daemon footprint: start-up time to the first event, and resident memory, as a real subprocess.

Runs `python -m edge.cli` (what the console script runs) on a video of a real face (scikit-image's
astronaut, from testbed/facesdata.py) with policy `every`, several times, and reports medians:

- start-up to first event: from process start to the first JSON line on stdout (imports, model load,
  detector build, source open, first frame detected + classified);
- RSS at the first event (from /proc/<pid>/statm) and peak RSS of the whole run (ru_maxrss via wait4);
- total run time for the clip.

    .venv/bin/python -m benchmarks.daemon_footprint [--model FILE] [--runs 5] [--frames 60] [--detector auto ...]

Several --detector values (default: auto, blazeface_full, haar) are run in turn within each round, so a busy
machine slows them alike and their medians compare.

Without --model the shipped edge/models/default.tflite is used. Needs the dev extras (scikit-image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, command_line


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def one_run(args: list[str], env: dict[str, str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    first_line = proc.stdout.readline()
    first_event_s = time.perf_counter() - started
    rss_first = _rss_mb(proc.pid)
    events = 1 if first_line else 0
    for _ in proc.stdout:
        events += 1
    _, status, usage = os.wait4(proc.pid, 0)
    total_s = time.perf_counter() - started
    if not first_line or os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"daemon failed (exit {os.waitstatus_to_exitcode(status)}): {' '.join(args)}")
    json.loads(first_line)  # it really was an event
    return {
        "first_event_s": first_event_s,
        "rss_first_event_mb": rss_first,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "total_s": total_s,
        "events": events,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .tflite with its .json contract (default: the shipped model)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60, help="frames in the test clip")
    parser.add_argument(
        "--detector", action="append", help="repeat to compare (default auto, blazeface_full, haar)"
    )
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args(argv)

    from testbed.facesdata import write_face_video

    detectors = options.detector or ["auto", "blazeface_full", "haar"]
    with tempfile.TemporaryDirectory() as tmp:
        video = write_face_video(Path(tmp) / "clip.avi", n_frames=options.frames)
        config = Path(tmp) / "config.yaml"
        config.write_text("stats:\n  interval_s: 0\n")
        base = [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", str(video),
                "--policy", "every", "--publish", "stdout", "--threads", str(options.threads),
                "--log-level", "WARNING"]  # fmt: skip
        if options.model:
            base += ["--model", options.model]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_EDGE_")}
        runs: dict[str, list[dict]] = {d: [] for d in detectors}
        for _ in range(options.runs):
            for detector in detectors:
                runs[detector].append(one_run([*base, "--detector", detector], env))

    print("command:", command_line())
    print(f"daemon:  {' '.join(base[1:3])} --source <{options.frames}-frame 640x480 MJPG clip> "
          f"--policy every --threads {options.threads} --detector D; {options.runs} runs each, "
          f"{runs[detectors[0]][0]['events']} events per run")  # fmt: skip
    for detector, results in runs.items():

        def median(key: str, results=results) -> float:
            return statistics.median(r[key] for r in results if r[key] is not None)

        print(
            f"{detector:15s} start-up to first event median {median('first_event_s'):.2f} s "
            f"(min {min(r['first_event_s'] for r in results):.2f}); RSS at first event median "
            f"{median('rss_first_event_mb'):.1f} MB; peak RSS median {median('peak_rss_mb'):.1f} MB; whole clip "
            f"median {median('total_s'):.2f} s ({options.frames / median('total_s'):.1f} frames/s incl. start-up)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
