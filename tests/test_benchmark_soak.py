"""benchmarks/daemon_soak.py, shortened: the script works, and the daemon it drives recovers from both outages.

The README quotes a long run of it; this keeps the script from rotting and checks what it measures is real:
the broker and the camera are each taken away and the daemon's events come back after both.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.daemonproc import REPO, daemon_env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_soak_sees_events_return_after_each_outage(mosquitto, tiny_model_path, tmp_path):
    out = tmp_path / "soak.json"
    command = [sys.executable, str(REPO / "benchmarks" / "daemon_soak.py"), "--minutes", "0.75",
               "--broker-every", "12", "--camera-every", "20", "--outage", "2", "--warmup", "5",
               "--sample", "1", "--model", str(tiny_model_path), "--json", str(out)]  # fmt: skip
    result = subprocess.run(command, env=daemon_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())
    kinds = [outage["kind"] for outage in report["outages"]]
    assert kinds.count("broker") >= 2 and kinds.count("camera") >= 1, kinds
    for outage in report["outages"]:
        assert outage["recovered_s"] is not None and 0 < outage["recovered_s"] < 20, outage
    running = [s for s in report["samples"] if s["t"] >= 5]  # past start-up (the interpreter's first ms)
    assert len(running) >= 20
    assert all(s["rss_mb"] > 30 and s["fds"] > 2 and s["threads"] >= 3 for s in running), running[:3]
    assert "daemon exit 0 on SIGTERM, 0 tracebacks" in result.stdout
    assert (
        "MB/h over its second half" in result.stdout
        and "first event after each camera came back" in result.stdout
    )
