"""edge.snapshots: bounded on disk across restarts, and a failing disk turns snapshots off, never the daemon."""

from __future__ import annotations

import logging

import numpy as np

from edge.snapshots import SnapshotWriter

IMAGE = np.full((48, 64, 3), 90, np.uint8)


def _event(index: int) -> dict:
    second = f"{index:02d}"
    return {
        "frame_index": index,
        "timestamp": f"2026-11-22T04:00:{second}.000Z",
        "faces": [{"box": [4, 4, 20, 20], "emotion": "happy"}],
    }


def test_only_the_newest_are_kept_across_restarts(tmp_path):
    first = SnapshotWriter(str(tmp_path / "snaps"), limit=3)
    for i in range(5):
        first.save(IMAGE, _event(i))
    assert sorted(p.name[-12:-4] for p in (tmp_path / "snaps").iterdir()) == [
        "00000002",
        "00000003",
        "00000004",
    ]
    again = SnapshotWriter(str(tmp_path / "snaps"), limit=3)  # a restart: the old files count too
    again.save(IMAGE, _event(10))
    names = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert [n[-12:-4] for n in names] == ["00000003", "00000004", "00000010"]
    assert again.written == 1 and first.written == 5


def test_a_failing_write_turns_snapshots_off_with_one_error(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="edge.snapshots")
    (tmp_path / "afile").write_text("")
    writer = SnapshotWriter(str(tmp_path / "afile" / "snaps"), limit=10)
    writer.save(IMAGE, _event(0))
    writer.save(IMAGE, _event(1))
    assert not writer.enabled and writer.written == 0
    assert len(caplog.records) == 1 and "snapshots are off until restart" in caplog.text
