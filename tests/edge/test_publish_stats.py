"""Stdout publisher (JSON Lines) and the stats collector (percentiles, interval rates, /proc and /sys readers)."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest

from edge.bench import STAGES as BENCH_STAGES
from edge.bench import percentiles
from edge.publish.stdout import StdoutPublisher
from edge.stats import STAGES, StatsCollector, cpu_temp_c, percentile, rss_mb, utc_timestamp


def test_stdout_writes_one_compact_json_line_per_event_and_refuses_nan():
    stream = io.StringIO()
    publisher = StdoutPublisher(stream)
    publisher.publish_event({"frame_index": 1, "faces": []})
    publisher.publish_event({"frame_index": 2, "faces": [{"emotion": "happy"}]})
    publisher.publish_state({"face_count": 1})  # state and stats are not events: not on stdout
    publisher.publish_stats({"uptime_s": 1})
    publisher.close()  # written by the publisher's own thread: close() waits for it
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["frame_index"] for line in lines] == [1, 2]
    with pytest.raises(ValueError):
        publisher.publish_event({"score": float("nan")})  # never write invalid JSON


def test_stdout_closed_by_reader_is_reported_once_and_not_fatal(caplog):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    publisher = StdoutPublisher(ClosedPipe())
    publisher.publish_event({"frame_index": 1})
    publisher.close()
    publisher.publish_event({"frame_index": 2})
    assert sum("stdout is closed" in r.getMessage() for r in caplog.records) == 1


class StalledPipe(io.StringIO):
    """A reader that stops reading: every write blocks until `release` is set."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def write(self, text):
        self.release.wait()
        return super().write(text)


def test_a_stdout_nobody_reads_never_blocks_the_loop_and_drops_are_counted_and_said_once(caplog):
    stream = StalledPipe()
    publisher = StdoutPublisher(stream, queue_size=10)
    publisher.start()
    started = time.monotonic()
    for i in range(100):
        publisher.publish_event({"frame_index": i})
    assert time.monotonic() - started < 2.0  # not one write waited for the reader
    # The writer holds the first line it took; the queue keeps the newest 10; the rest are counted.
    assert publisher.dropped_events >= 80
    said = [r.getMessage() for r in caplog.records if "stdout is not being read" in r.getMessage()]
    assert len(said) == 1 and "events_dropped" in said[0]
    stream.release.set()
    publisher.close(timeout=5)
    written = [json.loads(line)["frame_index"] for line in stream.getvalue().splitlines()]
    assert written[-10:] == list(range(90, 100))  # the newest survive
    assert len(written) + publisher.dropped_events == 100  # every event written or counted
    assert any("read again; " in r.getMessage() for r in caplog.records)


def test_a_stalled_stdout_at_close_is_given_up_in_time_and_counted():
    stream = StalledPipe()
    publisher = StdoutPublisher(stream, queue_size=10)
    publisher.start()
    for i in range(5):
        publisher.publish_event({"frame_index": i})
    started = time.monotonic()
    publisher.close(timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert publisher.dropped_events == 5 and "5 events were not written" in publisher.delivery_failure()
    stream.release.set()


def test_a_finite_run_waits_for_a_slow_reader_instead_of_dropping_until_stopped():
    stream = StalledPipe()
    stop = threading.Event()
    publisher = StdoutPublisher(stream, wait_for_reader=True, stop_event=stop, queue_size=2)
    publisher.start()
    threading.Timer(0.5, stream.release.set).start()
    for i in range(20):
        publisher.publish_event({"frame_index": i})
    publisher.close(timeout=5)
    assert [json.loads(x)["frame_index"] for x in stream.getvalue().splitlines()] == list(range(20))
    assert publisher.dropped_events == 0
    # Asked to stop while the reader is stalled: the wait ends, and what could not be written is counted.
    stalled, stop = StalledPipe(), threading.Event()
    publisher = StdoutPublisher(stalled, wait_for_reader=True, stop_event=stop, queue_size=2)
    publisher.start()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    for i in range(10):
        publisher.publish_event({"frame_index": i})
    assert time.monotonic() - started < 3.0
    publisher.close(timeout=0.2)
    assert publisher.dropped_events == 10
    stalled.release.set()


def test_stats_carry_the_delivery_figures_other_engineers_read():
    from edge.config import MqttConfig
    from edge.publish.mqtt import MqttPublisher
    from edge.stats import delivery_figures, format_stats

    mqtt = MqttPublisher(MqttConfig(host="127.0.0.1", port=1, buffer_size=3), "t")  # never started
    for i in range(5):
        mqtt.publish_event({"frame_index": i})
    stdout = StdoutPublisher(io.StringIO())
    figures = delivery_figures([stdout, mqtt], events_published=5)
    assert figures["events_dropped"] == 2 and figures["mqtt_buffered"] == 3
    assert figures["events_dropped_by_output"] == {"stdout": 0, "mqtt": 2}
    assert delivery_figures([stdout], 5)["mqtt_buffered"] is None
    stats = StatsCollector()
    snap = stats.snapshot(captured=5, dropped=0, reconnects=0, detector="d", interpreter="i", outputs=figures)
    assert snap["events_dropped"] == 2 and snap["mqtt_buffered"] == 3 and snap["events_published"] == 5
    assert "events dropped 2, mqtt buffered 3" in format_stats(snap)
    json.dumps(snap, allow_nan=False)


def test_percentile_interpolates():
    assert percentile([1.0], 95) == 1.0
    assert percentile([0.0, 10.0], 50) == 5.0
    assert percentile(list(map(float, range(101))), 95) == 95.0


def test_the_bench_and_the_daemon_share_one_percentile_numpys_default():
    values = np.random.default_rng(3).exponential(5.0, 257)
    expected = {q: round(float(np.percentile(values, q)), 3) for q in (50, 95)}
    assert percentiles(values) == {"p50": expected[50], "p95": expected[95], "mean": round(values.mean(), 3)}
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "mean": 0.0}
    assert set(BENCH_STAGES) == set(STAGES) - {"publish"}  # the bench publishes nothing


def test_a_stage_outside_the_list_is_reported_not_dropped():
    stats = StatsCollector()
    stats.record({"detect": 1.0, "emit": 0.5}, faces=0)
    latency = stats.latency()
    assert latency["emit"] == {"p50": 0.5, "p95": 0.5}
    assert set(STAGES) <= set(latency) and latency["track"] == {"p50": None, "p95": None}


def test_collector_rates_cover_the_last_interval_and_latency_window():
    now = [100.0]
    stats = StatsCollector(window=4, clock=lambda: now[0])
    for i in range(10):
        stats.record({"detect": float(i), "total": 2.0 * i, "unknown_stage": 1.0}, faces=2)
    now[0] += 2.0
    snap = stats.snapshot(captured=24, dropped=4, reconnects=1, detector="haar", interpreter="ai-edge-litert")
    assert snap["processed_fps"] == 5.0 and snap["input_fps"] == 12.0 and snap["faces_per_s"] == 10.0
    assert snap["latency_ms"]["detect"] == {"p50": 7.5, "p95": 8.85}  # only the last 4 frames: 6..9
    assert snap["latency_ms"]["classify"] == {"p50": None, "p95": None}
    assert snap["dropped_frames"] == 4 and snap["reconnects"] == 1 and snap["uptime_s"] == 2.0
    now[0] += 1.0
    stats.record({"total": 1.0}, faces=0)
    again = stats.snapshot(captured=30, dropped=4, reconnects=1, detector="haar", interpreter="x")
    assert again["processed_fps"] == 1.0 and again["input_fps"] == 6.0 and again["faces_per_s"] == 0.0
    json.dumps(again, allow_nan=False)


def test_cpu_temperature_prefers_the_cpu_zone_and_is_none_without_zones(tmp_path):
    assert cpu_temp_c(str(tmp_path)) is None
    for name, kind, milli in (
        ("thermal_zone0", "acpitz", "30000"),
        ("thermal_zone1", "cpu-thermal", "51234"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "temp").write_text(milli + "\n")
    assert cpu_temp_c(str(tmp_path)) == 51.2


def test_rss_and_timestamp_formats():
    assert rss_mb() > 5  # this Python process with numpy loaded
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1.5) == "1970-01-01T00:00:01.500Z"
