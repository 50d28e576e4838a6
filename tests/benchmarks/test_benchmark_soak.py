"""python -m benchmarks.daemon_soak, shortened: the script works, and the daemon it drives recovers from both outages.

docs/reliability.md quotes a long run of it; this keeps the script from rotting and checks what it measures
is real: the broker and the camera are each taken away and the daemon's events come back after both; a
broker outage longer than the buffer drops events, and every event is either on the broker or counted.
"""

from __future__ import annotations

import json

import pytest

from testbed.daemonproc import daemon_env
from tests.support import benchscripts


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_soak_sees_events_return_after_each_outage(mosquitto, tiny_model_path, tmp_path):
    out = tmp_path / "soak.json"
    result = benchscripts.run("daemon_soak", "--minutes", "0.75", "--broker-every", "12", "--camera-every", "20",
                              "--outage", "2", "--warmup", "5", "--long-outage", "6", "--buffer", "20",
                              "--flaky", "5", "--sample", "1", "--model", tiny_model_path, "--json", out,
                              env=daemon_env())  # fmt: skip
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
    events = report["summary"]["events"]
    assert events["mqtt_dropped"] > 0 and events["unaccounted"] == 0, events  # lost only with a word
    assert (
        events["made"]
        == events["stdout_lines"]
        == events["on_broker_distinct"] + events["mqtt_dropped"] + (events["mqtt_left_at_stop"])
    )
    assert report["summary"]["journal"]["lines"] > 0 and "per hour" in result.stdout
    assert (
        "MB/h over its second half" in result.stdout
        and "first event after each camera came back" in result.stdout
    )
