"""run_bench / format_bench over real photos with the tiny model and the real Haar detector."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge.bench import STAGES, format_bench, run_bench
from edge.config import Config
from edge.daemon import FatalError
from testbed import facesdata


def bench_config(model_path):
    config = Config()
    config.model = replace(config.model, path=str(model_path), threads=1)
    return config


def test_bench_replays_a_small_folder_and_reports_every_stage(tiny_model_path, tmp_path):
    facesdata.write_photo_folder(tmp_path)  # four readable photos, 1 + 2 + 0 + 1 faces
    results = run_bench(bench_config(tiny_model_path), str(tmp_path), frames=8, warmup=2)
    assert results["frames"] == 8 and results["warmup"] == 2
    assert set(results["latency_ms"]) == set(STAGES)
    for stage in ("detect", "classify", "total"):
        stats = results["latency_ms"][stage]
        assert 0 < stats["p50"] <= stats["p95"]
    assert results["latency_ms"]["total"]["p50"] >= results["latency_ms"]["detect"]["p50"]
    assert results["faces_per_frame"] == 1.0  # 1 + 2 + 0 + 1 faces, each found once
    assert results["dropped_frames"] == 0 and results["fps"] > 0
    assert results["frame_size"] == [640, 480] and results["detector"] == "yunet"
    table = format_bench(results)
    assert "classify" in table and "fps" in table
    assert (
        results["work"]["classify"]["macs"] > 1_000_000
    )  # the tiny model: 1.53M (tests/edge/test_opcount.py)
    # The default detector's full scan is YuNet on the 640x480 frame: 258.2M MACs, and 13.8M for each tracked
    # face's 128x128 crop between scans (the count itself and Haar's window estimate are tests/edge/test_opcount.py's).
    assert 250e6 < results["work"]["detect"]["macs"] < 265e6 and results["work"]["detect"]["scan_size"] == [
        640,
        480,
    ]
    assert 12e6 < results["work"]["detect"]["roi"]["macs"] < 15e6
    assert "work: classify" in table and "M MACs" in table and "per full scan of 640x480" in table


def test_bench_video_file(tiny_model_path, tmp_path):
    video = facesdata.write_face_video(tmp_path / "clip.avi", n_frames=5)
    results = run_bench(bench_config(tiny_model_path), str(video), frames=5, warmup=0)
    assert results["frames"] == 5 and results["faces_per_frame"] >= 1


def test_bench_bad_source_is_a_fatal_error_with_the_reason(tiny_model_path, tmp_path):
    with pytest.raises(FatalError, match="no such file or folder"):
        run_bench(bench_config(tiny_model_path), str(tmp_path / "missing"), frames=2)
