"""What several benchmarks share: where the repository and the photo dev set are, the `--detector` spec
they all take, and the command line each prints with its figures."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import yaml

from edge.config import DetectorConfig, validate_layer

REPO = Path(__file__).resolve().parent.parent
DEV_PHOTOS = REPO.parent / "shared" / "data" / "photos"  # the photo dev set (<label>/ folders), see ../shared


def parse_detector(spec: str) -> DetectorConfig:
    """'haar' or 'haar:scale_factor=1.1,min_neighbors=4' -> a DetectorConfig, checked as the daemon's config is."""
    kind, _, overrides = spec.partition(":")
    layer = {"type": kind}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        layer[key.strip()] = yaml.safe_load(value)  # "1.1" -> 1.1, "3" -> 3, as in the YAML config
    checked = validate_layer(layer, f" (from --detector {spec})", DetectorConfig, "detector.")
    return replace(DetectorConfig(), **checked)


def command_line(argv: list[str] | None = None) -> str:
    """The command that produced a benchmark's figures, as it is typed: `python -m benchmarks.NAME ARGS`."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec is not None else Path(sys.argv[0]).name
    args = sys.argv[1:] if argv is None else argv
    return " ".join([Path(sys.executable).name, "-m", module, *args])
