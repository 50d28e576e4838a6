"""Daemon limits: the peak memory and thread counts that size MemoryMax= and TasksMax= in the systemd unit.

Runs the real daemon (`python -m edge.cli`) as a subprocess in the heaviest cases its defaults let in, and
reads its peak resident memory (VmHWM) and threads from /proc:

- a folder holding one photo at the pixel limit (source.max_image_mpx, 40 Mpx by default): the largest
  image the daemon decodes;
- a live camera (an MJPEG stream on localhost) published to stdout and a real Mosquitto, with the preview
  page on and four viewers streaming (preview.max_clients);
- the same while 200 clients without the token flood the preview with 6 MB request heads.

It prints the figures next to the unit's MemoryMax= and TasksMax=, which must stay above them.

    .venv/bin/python -m benchmarks.daemon_limits [--model FILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import REPO, command_line

TOKEN = "limits-token-0123456789"
# Reports the process's own peak at exit: VmHWM of a process that has ended cannot be read from outside.
PEAK_AT_EXIT = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('VmHWM', open('/proc/self/status').read().split('VmHWM:')[1].split()[0],"
    " file=sys.stderr))\n"
    "sys.argv = ['edge.cli', *sys.argv[1:]]\n"
    "runpy.run_module('edge.cli', run_name='__main__')\n"
)


def proc_status(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                fields[key] = int(value.split()[0])
    return {"peak_mb": round(fields["VmHWM"] / 1024, 1), "rss_mb": round(fields["VmRSS"] / 1024, 1),
            "threads": fields["Threads"]}  # fmt: skip


def unit_limits() -> dict:
    text = (REPO / "systemd" / "emotion-edge.service").read_text()
    limits = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("MemoryMax", "TasksMax"):
            limits[key] = value.strip()
    return limits


def largest_photo(workdir: Path, args: list[str], env: dict) -> dict:
    import cv2
    import numpy as np

    from edge.config import SourceConfig

    megapixels = SourceConfig().max_image_mpx
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(megapixels * 1e6 // width)
    photos = workdir / "photos"
    photos.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)  # no easy compression
    cv2.imwrite(str(photos / "largest.jpg"), noise)
    config = workdir / "photo.yaml"
    config.write_text("stats:\n  interval_s: 0\n")
    command = [sys.executable, "-c", PEAK_AT_EXIT, "--config", str(config), "--source", str(photos),
               "--publish", "stdout", "--policy", "every", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"the photo run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    peak_kb = int(result.stderr.rsplit("VmHWM", 1)[1].split()[0])
    return {"case": f"one {width}x{height} photo ({width * height / 1e6:.1f} Mpx)",
            "peak_mb": round(peak_kb / 1024, 1)}  # fmt: skip


def live_with_preview(workdir: Path, args: list[str], env: dict) -> list[dict]:
    from testbed.daemonproc import MjpegServer, live_frame
    from testbed.mosquitto import MosquittoBroker, find_mosquitto, free_port

    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt install mosquitto)")
    broker = MosquittoBroker(binary, workdir).start()
    (workdir / "token").write_text(TOKEN)
    port = free_port()
    config = workdir / "live.yaml"
    config.write_text(
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
        f"preview:\n  enabled: true\n  port: {port}\n  token_file: {workdir / 'token'}\n  max_clients: 4\n"
    )
    rows = []
    viewers: list[socket.socket] = []
    try:
        with MjpegServer(live_frame(), fps=15) as camera, open(workdir / "daemon.err", "wb") as err:
            command = [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", camera.url,
                       "--publish", "stdout,mqtt", "--policy", "every", *args]  # fmt: skip
            daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)
            try:
                time.sleep(20)
                rows.append({"case": "live camera, stdout + MQTT, preview on, nobody watching",
                             **proc_status(daemon.pid)})  # fmt: skip
                auth = "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()
                for _ in range(4):
                    viewer = socket.create_connection(("127.0.0.1", port), timeout=10)
                    viewer.sendall(f"GET /stream.mjpg HTTP/1.0\r\nAuthorization: {auth}\r\n\r\n".encode())
                    threading.Thread(target=_drain, args=(viewer,), daemon=True).start()
                    viewers.append(viewer)
                time.sleep(15)
                rows.append({"case": "... and four viewers streaming", **proc_status(daemon.pid)})
                flood = b"GET / HTTP/1.1\r\nHost: pi\r\n" + b"".join(
                    b"X-Pad-%d: %s\r\n" % (i, b"a" * 60000) for i in range(99)
                )
                attackers = [
                    threading.Thread(target=_flood, args=(port, flood), daemon=True) for _ in range(200)
                ]
                for attacker in attackers:
                    attacker.start()
                threads_seen = 0
                for _ in range(20):
                    threads_seen = max(threads_seen, proc_status(daemon.pid)["threads"])
                    time.sleep(0.25)
                for attacker in attackers:
                    attacker.join(30)
                rows.append({"case": "... and 200 clients without the token sending 6 MB heads",
                             **proc_status(daemon.pid), "threads_max_seen": threads_seen})  # fmt: skip
            finally:
                daemon.terminate()
                daemon.wait(10)
    finally:
        for viewer in viewers:
            viewer.close()
        broker.stop()
    return rows


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


def _flood(port: int, flood: bytes) -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(flood)
        sock.recv(100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .tflite with its .json contract (default: the shipped model)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    options = parser.parse_args(argv)
    from testbed.daemonproc import daemon_env

    args = ["--model", options.model] if options.model else []
    env = daemon_env()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = [largest_photo(workdir, args, env), *live_with_preview(workdir, args, env)]
    limits = unit_limits()
    print("command:", command_line())
    for row in rows:
        threads = f", {row['threads']} threads" if "threads" in row else ""
        seen = f" (at most {row['threads_max_seen']} during the flood)" if "threads_max_seen" in row else ""
        print(f"{row['case']}: peak {row['peak_mb']} MB{threads}{seen}")
    print(
        f"systemd/emotion-edge.service: MemoryMax={limits.get('MemoryMax')}, TasksMax={limits.get('TasksMax')}"
    )
    if options.json:
        Path(options.json).write_text(json.dumps({"rows": rows, "unit": limits}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
