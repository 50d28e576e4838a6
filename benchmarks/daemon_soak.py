"""Daemon soak: over a long run with outages, is every event delivered or counted, does memory stay flat,
and does the journal stay quiet?

Runs the real daemon (`python -m edge.cli`, default log level and stats interval) as a subprocess for
`--minutes` against a live source (an HTTP MJPEG stream of a real face on localhost, testbed/daemonproc.py),
publishing every frame's event to stdout (a file) and to a real Mosquitto on a free localhost port, while the
harness

- restarts the broker every `--broker-every` s (down for `--outage` s): paho reconnects, the outage buffer
  fills and flushes, Home Assistant discovery is re-sent;
- takes the camera away every `--camera-every` s (down for `--outage` s): the capture thread reopens it;
- once, at 40% of the run, keeps the broker away for `--long-outage` s, longer than the outage buffer
  (`--buffer` events) lasts: events are dropped, and must be counted and said;
- once, at 70% of the run, makes the camera fail right after every open for `--flaky` s (one frame per
  connection): the backoff must grow and the journal stay quiet.

Every `--sample` s it reads the daemon's RSS, open file descriptors, threads and CPU time from /proc. A
subscriber with a persistent session on a broker with persistence on receives every event the broker
accepted, across its restarts. At the end the daemon is stopped with SIGTERM and the script reports

- events in and out: made by the daemon ("stopped after N events"), lines on stdout, distinct events on the
  broker, dropped (the daemon's own count, from its log and its last `stats`), and what is unaccounted for
  (made - delivered - dropped - left undelivered at the stop: 0 when no loss goes unsaid);
- the RSS trend after `--warmup` s (the median of the first vs the last fifth, and least-squares slopes in MB
  per hour over the whole and over the second half, so a leak, which keeps growing, can be told from an
  allocator settling, which flattens), the descriptor and thread ranges;
- journal lines: everything the daemon wrote to stderr (what systemd sends to the journal), per hour, by
  level, and how many came during the flaky-camera phase;
- for every outage, how long until the next event arrived on the broker.

    .venv/bin/python -m benchmarks.daemon_soak [--minutes 30] [--model FILE] [--json OUT]

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

from benchmarks.common import command_line

DEVICE = "soak-pi"
EVENTS = f"emotion/{DEVICE}/events"
STATS = f"emotion/{DEVICE}/stats"


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
    """Arrival times and frame indexes of the daemon's events on the broker. The session persists (clean
    session off, a fixed client id) and the broker keeps it across restarts, so events the daemon flushes
    before this client is back are queued for it instead of lost."""

    def __init__(self, broker):
        import paho.mqtt.client as mqtt

        self.times: list[float] = []
        self.made: list[float] = []  # the events' own timestamps (UNIX time), in arrival order
        self.indexes: set[tuple[str, int]] = set()
        self.messages = 0
        self.last_stats: dict | None = None
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="soak-events", clean_session=False
        )
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe([(EVENTS, 1), (STATS, 1)])
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=0.2, max_delay=1)
        self._broker = broker

    def _on_message(self, client, userdata, message):
        payload = json.loads(message.payload)
        with self._lock:
            if message.topic == STATS:
                self.last_stats = payload
                return
            self.times.append(time.monotonic())
            self.made.append(_unix_time(payload["timestamp"]))
            self.indexes.add(
                (payload["timestamp"], int(payload["frame_index"]))
            )  # an index restarts per open
            self.messages += 1

    def __enter__(self) -> EventClock:
        self._client.connect(self._broker.host, self._broker.port, keepalive=5)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise SystemExit("the soak's subscriber could not subscribe")
        return self

    def __exit__(self, *exc) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def first_after(self, moment: float, made_after: float) -> float | None:
        """When the first event made after `made_after` (UNIX time) arrived after `moment` (monotonic): not
        one of the events the broker kept for this session from before an outage, replayed on reconnect."""
        with self._lock:
            return next((t for t, m in zip(self.times, self.made, strict=True) if t > moment and m > made_after),
                        None)  # fmt: skip

    def settle(self, quiet_s: float = 3.0, timeout: float = 60.0) -> None:
        """Wait until no event has arrived for `quiet_s` (the queued ones have all come in)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                last = self.times[-1] if self.times else 0.0
            if time.monotonic() - last >= quiet_s:
                return
            time.sleep(0.2)


def _unix_time(timestamp: str) -> float:
    from datetime import datetime, timezone

    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def log_counts(stderr: str) -> dict:
    """What the daemon's log says about its events (the lines are edge/publish/*.py's)."""
    import re

    made = re.findall(r"stopped after (\d+) events", stderr)
    dropped = sum(int(n) for n in re.findall(r"MQTT: (\d+) events were dropped while", stderr))
    left = sum(int(n) for n in re.findall(r"MQTT: (\d+) buffered events were not delivered", stderr))
    return {"made": int(made[-1]) if made else None, "mqtt_dropped_said": dropped, "mqtt_left_at_stop": left}


def journal(stderr: str) -> dict:
    """Lines by level of the daemon's own log, and `native`: what libraries (TFLite, OpenCV, FFmpeg) wrote
    to stderr themselves."""
    import re

    lines = [line for line in stderr.splitlines() if line.strip()]
    ours = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ([A-Z]+) ")
    levels = dict.fromkeys(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), 0)
    native = []
    for line in lines:
        match = ours.match(line)
        if match and match.group(1) in levels:
            levels[match.group(1)] += 1
        else:
            native.append(line)
    return {"lines": len(lines), "by_level": levels, "native": len(native), "native_first": native[:5]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--model", help="a .tflite with its .json contract (default: the shipped model)")
    parser.add_argument("--fps", type=float, default=10.0, help="camera frame rate")
    parser.add_argument("--broker-every", type=float, default=120.0, help="seconds between broker restarts")
    parser.add_argument("--camera-every", type=float, default=180.0, help="seconds between camera outages")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds each outage lasts")
    parser.add_argument(
        "--long-outage", type=float, default=150.0, help="one broker outage past the buffer (0: none)"
    )
    parser.add_argument("--buffer", type=int, default=1000, help="mqtt.buffer_size (events)")
    parser.add_argument(
        "--flaky", type=float, default=120.0, help="seconds of a camera failing after every open"
    )
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between /proc samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the RSS trend")
    parser.add_argument(
        "--json", metavar="OUT", help="also write the summary, every sample and outage as JSON"
    )
    options = parser.parse_args(argv)

    from testbed.daemonproc import DaemonProcess, MjpegServer, live_frame
    from testbed.mosquitto import MosquittoBroker, find_mosquitto

    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt install mosquitto)")
    frame = live_frame()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "broker").mkdir()
        persistence = f"persistence true\npersistence_location {workdir / 'broker'}/\nautosave_interval 0"
        broker = MosquittoBroker(binary, workdir / "broker", extra_config=persistence).start()
        camera = MjpegServer(frame, fps=options.fps).__enter__()
        camera_port = int(camera.url.split(":")[2].split("/")[0])
        config = workdir / "config.yaml"
        config.write_text(
            f"device_id: {DEVICE}\npublish:\n  outputs: [stdout, mqtt]\n  policy: every\n"
            f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  keepalive: 5\n  buffer_size: {options.buffer}\n"
        )
        args = [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", camera.url]
        if options.model:
            args += ["--model", options.model]
        clock = EventClock(broker).__enter__()  # subscribed before the first event can be made
        daemon = DaemonProcess(args, workdir)
        samples, outages = [], []
        started = time.monotonic()
        end = started + 60 * options.minutes
        next_sample = started
        next_broker, next_camera = started + options.broker_every, started + options.camera_every
        long_at = started + 0.4 * (end - started) if options.long_outage else None
        flaky_at = started + 0.7 * (end - started) if options.flaky else None
        flaky_lines = None
        try:
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
                # Recovery is the first event made after a broker went down (the buffered ones flushed on
                # reconnect count), or after a camera came back, to arrive once it is back.
                if long_at is not None and now >= long_at:
                    down = time.time()
                    broker.stop()
                    time.sleep(options.long_outage)
                    broker.start()
                    outages.append({"kind": "broker", "long": True, "t": time.monotonic() - started,
                                    "back": time.monotonic(), "made_after": down})  # fmt: skip
                    long_at = None
                    next_broker = time.monotonic() + options.broker_every
                elif now >= next_broker:
                    down = time.time()
                    broker.stop()
                    time.sleep(options.outage)
                    broker.start()
                    outages.append({"kind": "broker", "t": time.monotonic() - started, "back": time.monotonic(),
                                    "made_after": down})  # fmt: skip
                    next_broker += options.broker_every
                if flaky_at is not None and now >= flaky_at:
                    before = daemon.stderr.count("\n")
                    camera.close()
                    camera = MjpegServer(frame, fps=options.fps, port=camera_port, frames_per_connection=1)
                    camera.__enter__()
                    time.sleep(options.flaky)
                    camera.close()
                    camera = MjpegServer(frame, fps=options.fps, port=camera_port).__enter__()
                    flaky_lines = daemon.stderr.count("\n") - before
                    outages.append({"kind": "camera", "flaky": True, "t": time.monotonic() - started,
                                    "back": time.monotonic(), "made_after": time.time()})  # fmt: skip
                    flaky_at = None
                    next_camera = time.monotonic() + options.camera_every
                elif now >= next_camera:
                    camera.close()
                    time.sleep(options.outage)
                    camera = MjpegServer(frame, fps=options.fps, port=camera_port).__enter__()
                    outages.append({"kind": "camera", "t": time.monotonic() - started, "back": time.monotonic(),
                                    "made_after": time.time()})  # fmt: skip
                    next_camera += options.camera_every
                time.sleep(0.05)
            ran_s = time.monotonic() - started
            daemon.proc.send_signal(signal.SIGTERM)
            exit_code = daemon.proc.wait(timeout=30)
            clock.settle()
            for outage in outages:
                seen = clock.first_after(outage.pop("back"), outage.pop("made_after"))
                outage["recovered_s"] = None if seen is None else seen - (started + outage["t"])
            delivered, messages, last_stats = len(clock.indexes), clock.messages, clock.last_stats
            on_broker = set(clock.indexes)
        finally:
            daemon.stop()
            clock.__exit__(None, None, None)
            camera.close()
            broker.stop()
        stderr = daemon.stderr
        made_events = {
            (e["timestamp"], e["frame_index"]) for e in map(json.loads, daemon.stdout.splitlines())
        }
        stdout_lines = daemon.stdout.count("\n")

    steady = [s for s in samples if s["t"] >= options.warmup]
    if len(steady) < 5:
        raise SystemExit("too few samples after the warm-up: run longer (--minutes) or sample more often")
    fifth = max(1, len(steady) // 5)
    rss = [s["rss_mb"] for s in steady]
    cpu = (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / (samples[-1]["t"] - samples[0]["t"])
    recovered = [o["recovered_s"] for o in outages]
    counts = log_counts(stderr)
    made = counts["made"]
    dropped = counts["mqtt_dropped_said"]
    unaccounted = None if made is None else made - delivered - dropped - counts["mqtt_left_at_stop"]
    # Which events stdout has and the broker not: dropped ones come in runs (outages).
    missing = sorted(made_events - on_broker)
    lines = journal(stderr)
    per_hour = lines["lines"] / (ran_s / 3600)
    times = [s["t"] for s in steady]
    half = len(steady) // 2
    summary = {
        "minutes": options.minutes, "fps": options.fps, "exit_code": exit_code,
        "tracebacks": stderr.count("Traceback"), "error_lines": lines["by_level"]["ERROR"],
        "events": {"made": made, "stdout_lines": stdout_lines, "on_broker_distinct": delivered,
                   "on_broker_messages": messages, "mqtt_dropped": dropped,
                   "mqtt_left_at_stop": counts["mqtt_left_at_stop"], "unaccounted": unaccounted,
                   "last_stats": {k: (last_stats or {}).get(k) for k in
                                  ("events_published", "events_dropped", "events_dropped_by_output",
                                   "mqtt_buffered", "source_failures", "log_lines_dropped")}},
        "outages": {"broker": sum(o["kind"] == "broker" for o in outages),
                    "camera": sum(o["kind"] == "camera" for o in outages),
                    "long_broker_s": options.long_outage, "flaky_camera_s": options.flaky, "each_s": options.outage},
        "rss_mb": {"first_fifth_median": round(statistics.median(rss[:fifth]), 1),
                   "last_fifth_median": round(statistics.median(rss[-fifth:]), 1), "max": round(max(rss), 1),
                   "slope_mb_per_h": round(slope_per_hour(times, rss), 2),
                   "slope_second_half_mb_per_h": round(slope_per_hour(times[half:], rss[half:]), 2)},
        "fds": [min(s["fds"] for s in steady), max(s["fds"] for s in steady)],
        "threads": [min(s["threads"] for s in steady), max(s["threads"] for s in steady)],
        "cpu_percent": round(100 * cpu),
        "journal": {**lines, "per_hour": round(per_hour), "during_flaky_camera": flaky_lines},
        "not_on_broker": {"count": len(missing), "first": missing[:1], "last": missing[-1:]},
    }  # fmt: skip
    print("command:", command_line())
    print(f"ran {options.minutes:g} min at {options.fps:g} fps: daemon exit {exit_code} on SIGTERM, "
          f"{summary['tracebacks']} tracebacks, {summary['error_lines']} ERROR lines")  # fmt: skip
    print(f"events: {made} made, {stdout_lines} on stdout, {delivered} on the broker ({messages} messages), "
          f"{dropped} dropped by MQTT and said, {counts['mqtt_left_at_stop']} left at the stop: "
          f"{unaccounted} unaccounted for")  # fmt: skip
    if last_stats:
        print(f"last stats: events_dropped {last_stats.get('events_dropped')}, mqtt_buffered "
              f"{last_stats.get('mqtt_buffered')}, source_failures {last_stats.get('source_failures')}, "
              f"log_lines_dropped {last_stats.get('log_lines_dropped')}")  # fmt: skip
    print(f"outages: {summary['outages']['broker']} broker restarts (one of {options.long_outage:g} s), "
          f"{summary['outages']['camera']} camera outages (one of {options.flaky:g} s failing after every "
          f"open), {options.outage:g} s each otherwise")  # fmt: skip
    for kind in ("broker", "camera"):
        times_back = [o["recovered_s"] for o in outages if o["kind"] == kind]
        if times_back:
            shown = ", ".join("never" if t is None else f"{t:.1f}" for t in times_back)
            print(f"  first event after each {kind} came back (s): {shown}")
    print(f"RSS after {options.warmup:g} s warm-up: first fifth median {summary['rss_mb']['first_fifth_median']} MB, "
          f"last fifth median {summary['rss_mb']['last_fifth_median']} MB, max {summary['rss_mb']['max']} MB")  # fmt: skip
    # A leak grows steadily; an allocator settling grows early and then stays flat: compare the two halves.
    print(f"RSS slope {summary['rss_mb']['slope_mb_per_h']:+.2f} MB/h after the warm-up, "
          f"{summary['rss_mb']['slope_second_half_mb_per_h']:+.2f} MB/h over its second half")  # fmt: skip
    for key in ("fds", "threads"):
        values = [s[key] for s in steady]
        print(f"{key:<8} min {min(values)}, max {max(values)}, last {values[-1]}")
    print(f"CPU      {summary['cpu_percent']}% of one core on average")
    print(f"journal: {lines['lines']} lines ({round(per_hour)} per hour; {lines['by_level']['WARNING']} WARNING, "
          f"{lines['by_level']['INFO']} INFO, {lines['native']} from libraries), {flaky_lines} of them during the "
          "flaky camera")  # fmt: skip
    if options.json:
        Path(options.json).write_text(
            json.dumps({"summary": summary, "samples": samples, "outages": outages}, indent=1) + "\n"
        )
    healthy = exit_code == 0 and None not in recovered and "Traceback" not in stderr and unaccounted == 0
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
