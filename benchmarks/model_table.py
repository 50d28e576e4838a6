"""One markdown row per model from the JSON its evaluations wrote: the v3 comparison table of MODEL_CARD.md.

Each argument is a folder holding `evaluation.json` (`emotion-convert evaluate ... --soft-labels ... --json`;
with `--compare X.tflite` the int8 model's numbers are read from its `compare` part) and, when it exists,
`photos-held-out.json` (`python -m benchmarks.photo_accuracy --split held-out --json`):

    .venv/bin/python -m benchmarks.model_table docs/model/v3/shipped-v2 docs/model/v3/a1-fp-mix1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = (
    "model",
    "FER orig",
    "FER+ maj",
    "maj F1",
    "maj neutral R",
    "24/32/40 px (orig)",
    "32 px gap orig / maj",
    "photos e2e",
    "photos F1",
    "photos neutral R",
)


def int8_result(evaluation: dict) -> dict:
    """The int8 model's part: the compared .tflite when there is one, else the evaluated model itself."""
    second = evaluation.get("compare", {}).get("model")
    return second if second else evaluation


def row(folder: Path) -> list[str]:
    result = int8_result(json.loads((folder / "evaluation.json").read_text()))
    cells = [folder.name, f"{result['accuracy']:.1%}"]
    majority = result.get("majority")
    if majority:
        neutral = majority["per_class"]["neutral"]["recall"]
        cells += [f"{majority['accuracy']:.1%}", f"{majority['macro_f1']:.3f}", f"{neutral:.0%}"]
    else:
        cells += ["", "", ""]
    small = result.get("small_faces", {})
    sizes = [small[s]["original"]["accuracy"] for s in ("24", "32", "40") if s in small]
    cells.append(" / ".join(f"{a:.1%}" for a in sizes))
    gaps = []
    if "32" in small:
        gaps.append(f"{(small['32']['original']['accuracy'] - result['accuracy']) * 100:+.1f}")
        if majority and "majority" in small["32"]:
            gaps.append(f"{(small['32']['majority']['accuracy'] - majority['accuracy']) * 100:+.1f}")
    cells.append(" / ".join(gaps))
    photos = folder / "photos-held-out.json"
    if photos.is_file():
        best = json.loads(photos.read_text())["results"][0]
        neutral = best["per_class"]["neutral"]["recall"]
        cells += [f"{best['end_to_end']:.1%}", f"{best['macro_f1']:.3f}", f"{neutral:.0%}"]
    else:
        cells += ["", "", ""]
    return cells


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders with evaluation.json [and photos-held-out.json]")
    args = parser.parse_args(argv)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for folder in args.folders:
        try:
            print("| " + " | ".join(row(Path(folder))) + " |")
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            print(f"error: {folder}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
