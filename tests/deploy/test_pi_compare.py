"""tools/pi_compare.py: when an emulated Pi's events count as the x86 run's (tools/pi-check.sh)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "tools" / "pi_compare.py"
_spec = importlib.util.spec_from_file_location("pi_compare", _PATH)
pi_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pi_compare)

STEP = 1 / 256
LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def event(frame, boxes, happy=0.9102):
    scores = dict.fromkeys(LABELS, round((1 - happy) / 6, 4))
    scores["happy"] = happy
    faces = [
        {"track_id": i + 1, "box": list(box), "emotion": "happy", "confidence": happy, "scores": scores}
        for i, box in enumerate(boxes)
    ]
    return {"frame_index": frame, "frame_size": [640, 480], "faces": faces, "timestamp": f"t{frame}"}


@pytest.fixture
def x86():
    return [event(0, [(212, 96, 118, 118)]), event(1, [(212, 96, 118, 118), (10, 20, 60, 60)])]


def test_identical_runs_and_differences_within_tolerance_match(x86):
    arm = copy.deepcopy(x86)
    assert pi_compare.compare_events(x86, arm, 1, STEP) == []
    arm[1]["faces"][1]["box"] = [11, 19, 60, 61]  # each coordinate within a pixel
    arm[0]["faces"][0]["confidence"] = round(0.9102 + STEP, 4)  # one int8 step, rounded to 4 decimals
    arm[0]["faces"][0]["scores"]["happy"] = round(0.9102 - STEP, 4)
    arm[0]["timestamp"] = "later"  # times and latencies are not compared
    assert pi_compare.compare_events(x86, arm, 1, STEP) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e[1]["faces"][1]["box"].__setitem__(0, 12), "box [10, 20, 60, 60] vs [12, 20, 60, 60]"),
        (lambda e: e[0]["faces"][0]["scores"].__setitem__("happy", 0.9102 + 2 * STEP), "happy 0.9102 vs"),
        (lambda e: e[0]["faces"][0].__setitem__("emotion", "sad"), "emotion 'happy' != 'sad'"),
        (lambda e: e[1]["faces"].pop(), "2 faces on x86, 1 on arm64"),
        (lambda e: e.pop(), "2 events on x86, 1 on arm64"),
        (lambda e: e[1].__setitem__("frame_index", 2), "frame_index 1 != 2"),
    ],
)
def test_each_kind_of_difference_is_reported(x86, change, expected):
    arm = copy.deepcopy(x86)
    change(arm)
    problems = pi_compare.compare_events(x86, arm, 1, STEP)
    assert any(expected in line for line in problems), problems


def test_cli_exit_codes_and_summary(x86, tmp_path, capsys):
    ref, got = tmp_path / "x86.jsonl", tmp_path / "arm.jsonl"
    ref.write_text("".join(json.dumps(e) + "\n" for e in x86))
    got.write_text(ref.read_text())
    assert pi_compare.main([str(ref), str(got)]) == 0
    assert "match: 2 events, 3 faces, first face happy 0.9102" in capsys.readouterr().out
    x86[0]["faces"][0]["box"][1] += 5
    got.write_text("".join(json.dumps(e) + "\n" for e in x86))
    assert pi_compare.main([str(ref), str(got)]) == 1
    got.write_text("not json\n")
    assert pi_compare.main([str(ref), str(got)]) == 2
    assert "arm.jsonl:1: not a JSON event" in capsys.readouterr().err
