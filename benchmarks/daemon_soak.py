"""Daemon soak: does a long run with outages leak memory, file descriptors or threads, and does it recover?

Runs the real daemon (`python -m edge.cli`) as a subprocess for `--minutes` against a live source (an HTTP
MJPEG stream of a real face on localhost, tests/daemonproc.py) publishing to a real Mosquitto on a free
localhost port, while the harness

- restarts the broker every `--broker-every` s (down for `--outage` s): paho reconnects, the outage buffer
  fills and flushes, Home Assistant discovery is re-sent;
- takes the camera away every `--camera-every` s (down for `--outage` s): the capture thread reopens it.

Every `--sample` s it reads the daemon's RSS, open file descriptors, threads and CPU time from /proc. At
the end it stops the daemon with SIGTERM and reports the RSS trend after `--warmup` s (the median of the
first vs the last fifth, and least-squares slopes in MB per hour over the whole and over the second half, so
a leak, which keeps growing, can be told from an allocator settling, which flattens), the descriptor and
thread ranges, and for every outage how long until the next event arrived on the broker.

    .venv/bin/python benchmarks/daemon_soak.py [--minutes 20] [--model FILE] [--json OUT]

A single run on a shared machine: read the trend with its first/last medians, not the slope alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEVICE = "soak-pi"
EVENTS = f"emotion/{DEVICE}/events"


def proc_sample(pid: int) -> dict | None:
    """RSS (MB), open descriptors, threads and CPU seconds of a live process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            rss_mb = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as handle:
            threads = next(int(line.split()[1]) for line in handle if line.startswith("Threads:"))
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, StopIteration):
        return None
    return {"rss_mb": rss_mb, "fds": fds, "threads": threads, "cpu_s": cpu_s}


def slope_per_hour(times: list[float], values: list[float]) -> float:
    """Least-squares slope of values over times (s), per hour."""
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    denominator = sum((t - mean_t) ** 2 for t in times)
    if denominator == 0:
        return 0.0
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / denominator


class EventClock:
    """Arrival times of the daemon's events on the broker (a real subscriber)."""

    def __init__(self, broker):
        from tests.mosquitto import Subscriber

        self.times: list[float] = []
        self._lock = threading.Lock()
        self._subscriber = Subscriber(broker, EVENTS)
        self._subscriber.client.on_message = self._on_message
        self._subscriber.client.reconnect_delay_set(min_delay=0.2, max_delay=1)

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.times.append(time.monotonic())

    def __enter__(self) -> EventClock:
        self._subscriber.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._subscriber.__exit__(*exc)

    def first_after(self, moment: float) -> float | None:
        with self._lock:
            return next((t for t in self.times if t > moment), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--model", help="a .tflite with its .json contract (default: the shipped model)")
    parser.add_argument("--fps", type=float, default=10.0, help="camera frame rate")
    parser.add_argument("--broker-every", type=float, default=120.0, help="seconds between broker restarts")
    parser.add_argument("--camera-every", type=float, default=180.0, help="seconds between camera outages")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds each outage lasts")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between /proc samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the RSS trend")
    parser.add_argument("--json", metavar="OUT", help="also write every sample and outage as JSON")
    options = parser.parse_args(argv)

    from tests.daemonproc import DaemonProcess, MjpegServer, live_frame
    from tests.mosquitto import MosquittoBroker, find_mosquitto

    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt install mosquitto)")
    frame = live_frame()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = MosquittoBroker(binary, workdir).start()
        camera = MjpegServer(frame, fps=options.fps).__enter__()
        camera_port = int(camera.url.split(":")[2].split("/")[0])
        config = workdir / "config.yaml"
        config.write_text(
            f"device_id: {DEVICE}\npublish:\n  outputs: [mqtt]\n  policy: every\n"
            f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  keepalive: 5\n"
            "stats:\n  interval_s: 10\nlog:\n  level: WARNING\n"
        )
        args = [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", camera.url]
        if options.model:
            args += ["--model", options.model]
        daemon = DaemonProcess(args, workdir)
        samples, outages = [], []
        started = time.monotonic()
        end = started + 60 * options.minutes
        next_sample = started
        next_broker, next_camera = started + options.broker_every, started + options.camera_every
        try:
            with EventClock(broker) as clock:
                while time.monotonic() < end:
                    now = time.monotonic()
                    if daemon.proc.poll() is not None:
                        raise SystemExit(
                            f"the daemon exited ({daemon.proc.returncode}):\n{daemon.stderr[-3000:]}"
                        )
                    if now >= next_sample:
                        sample = proc_sample(daemon.proc.pid)
                        if sample:
                            samples.append({"t": now - started, **sample})
                        next_sample += options.sample
                    if now >= next_broker:
                        broker.stop()
                        time.sleep(options.outage)
                        broker.start()
                        outages.append(
                            {"kind": "broker", "t": time.monotonic() - started, "back": time.monotonic()}
                        )
                        next_broker += options.broker_every
                    if now >= next_camera:
                        camera.close()
                        time.sleep(options.outage)
                        camera = MjpegServer(frame, fps=options.fps, port=camera_port).__enter__()
                        outages.append(
                            {"kind": "camera", "t": time.monotonic() - started, "back": time.monotonic()}
                        )
                        next_camera += options.camera_every
                    time.sleep(0.05)
                daemon.proc.send_signal(signal.SIGTERM)
                exit_code = daemon.proc.wait(timeout=30)
                for outage in outages:
                    seen = clock.first_after(outage.pop("back"))
                    outage["recovered_s"] = None if seen is None else seen - (started + outage["t"])
                events = len(clock.times)
        finally:
            daemon.stop()
            camera.close()
            broker.stop()
        stderr = daemon.stderr

    steady = [s for s in samples if s["t"] >= options.warmup]
    if len(steady) < 5:
        raise SystemExit("too few samples after the warm-up: run longer (--minutes) or sample more often")
    fifth = max(1, len(steady) // 5)
    rss = [s["rss_mb"] for s in steady]
    cpu = (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / (samples[-1]["t"] - samples[0]["t"])
    recovered = [o["recovered_s"] for o in outages]
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"ran {options.minutes:g} min at {options.fps:g} fps: {events} events on the broker, daemon exit {exit_code}"
          f" on SIGTERM, {stderr.count('Traceback')} tracebacks, {stderr.count(' ERROR ')} ERROR lines")  # fmt: skip
    print(f"outages: {sum(o['kind'] == 'broker' for o in outages)} broker restarts, "
          f"{sum(o['kind'] == 'camera' for o in outages)} camera outages, {options.outage:g} s each")  # fmt: skip
    for kind in ("broker", "camera"):
        times = [o["recovered_s"] for o in outages if o["kind"] == kind]
        if times:
            shown = ", ".join("never" if t is None else f"{t:.1f}" for t in times)
            print(f"  first event after each {kind} came back (s): {shown}")
    times = [s["t"] for s in steady]
    half = len(steady) // 2
    print(f"RSS after {options.warmup:g} s warm-up: first fifth median {statistics.median(rss[:fifth]):.1f} MB, "
          f"last fifth median {statistics.median(rss[-fifth:]):.1f} MB, max {max(rss):.1f} MB")  # fmt: skip
    # A leak grows steadily; an allocator settling grows early and then stays flat: compare the two halves.
    print(f"RSS slope {slope_per_hour(times, rss):+.2f} MB/h after the warm-up, "
          f"{slope_per_hour(times[half:], rss[half:]):+.2f} MB/h over its second half")  # fmt: skip
    for key in ("fds", "threads"):
        values = [s[key] for s in steady]
        print(f"{key:<8} min {min(values)}, max {max(values)}, last {values[-1]}")
    print(f"CPU      {100 * cpu:.0f}% of one core on average")
    if options.json:
        Path(options.json).write_text(json.dumps({"samples": samples, "outages": outages}, indent=1) + "\n")
    healthy = exit_code == 0 and None not in recovered and "Traceback" not in stderr
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
