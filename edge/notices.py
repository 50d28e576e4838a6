"""Problems a step before the daemon found, repeated where the daemon's user looks.

The SD-card image reads its settings file (emotion-edge.txt on the FAT partition) before the daemon starts
(systemd/image/emotion_edge_settings.py). A bad value there is not applied, and the one place that says so,
that step's journal, is not where anyone looks: so it leaves one line a problem in NOTICES_PATH, and the
daemon logs them at start, adds the first to its systemd status, prints them with --check-config and shows
them on the preview page. The file is in /run: every boot starts without it, and the step writes it anew.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

NOTICES_PATH = Path("/run/emotion-edge-settings/notices")
MAX_NOTICES = 20  # one line each: more than that is one file gone wrong, not twenty problems
MAX_LENGTH = 400


def read_notices(path: Path | None = None) -> list[str]:
    """The notices, or [] when there are none (no file is the normal case). Never raises."""
    try:
        with open(path or NOTICES_PATH, "rb") as handle:
            data = handle.read(MAX_NOTICES * (MAX_LENGTH + 1))
    except OSError:
        return []
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return [
        line if len(line) <= MAX_LENGTH else line[: MAX_LENGTH - 3] + "..." for line in lines[:MAX_NOTICES]
    ]


def status_suffix(notices: list[str]) -> str:
    """For systemd's one-line STATUS=: the first notice, and how many more there are."""
    if not notices:
        return ""
    more = f" (+{len(notices) - 1} more: journalctl -u emotion-edge-settings)" if len(notices) > 1 else ""
    return f"; settings: {notices[0]}{more}"
