"""Compare the daemon's events from an emulated Pi (arm64) run with the x86 run of the same commit.

    python tools/pi_compare.py x86.jsonl arm64.jsonl --score-step 0.00390625

Events are paired in order (both runs read the same source with `--policy every`). A pair matches when it
is the same frame (`frame_index`, `file`, `frame_size`), with the same faces in the same order (same track
id and emotion), every box coordinate within `--box-tol` pixels, and every score and confidence within one
int8 output step (`--score-step`, the classifier's output scale; the published scores are rounded to 4
decimals, which adds up to 0.00005 per side). Prints one line per mismatch and a summary; exit 0 when all
match, 1 when not, 2 on unreadable input. Standard library only, so any Python can run it.
"""

from __future__ import annotations

import argparse
import json
import sys

# The published scores are rounded to 4 decimals: two roundings apart at most 1e-4.
ROUNDING = 1e-4
FRAME_KEYS = ("frame_index", "file", "frame_size")


def read_events(path: str) -> list[dict]:
    events = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON event ({exc.msg})") from None
    return events


def compare_faces(where: str, ref: dict, got: dict, box_tol: int, score_tol: float) -> list[str]:
    problems = []
    for key in ("track_id", "emotion"):
        if ref.get(key) != got.get(key):
            problems.append(f"{where}: {key} {ref.get(key)!r} != {got.get(key)!r}")
    ref_box, got_box = ref.get("box", []), got.get("box", [])
    if len(ref_box) != len(got_box) or any(
        abs(a - b) > box_tol for a, b in zip(ref_box, got_box, strict=True)
    ):
        problems.append(f"{where}: box {ref_box} vs {got_box} (tolerance {box_tol} px)")
    ref_scores = dict(ref.get("scores") or {}, confidence=ref.get("confidence", 0.0))
    got_scores = dict(got.get("scores") or {}, confidence=got.get("confidence", 0.0))
    if ref_scores.keys() != got_scores.keys():
        problems.append(f"{where}: score labels {sorted(ref_scores)} != {sorted(got_scores)}")
        return problems
    for label, value in ref_scores.items():
        if abs(value - got_scores[label]) > score_tol:
            problems.append(f"{where}: {label} {value} vs {got_scores[label]} (tolerance {score_tol:.5f})")
    return problems


def compare_events(
    ref: list[dict], got: list[dict], box_tol: int = 1, score_step: float = 1 / 256
) -> list[str]:
    """Every difference beyond the tolerances, as readable lines; empty when the runs agree."""
    score_tol = score_step + ROUNDING
    problems = []
    if len(ref) != len(got):
        problems.append(f"{len(ref)} events on x86, {len(got)} on arm64")
    for number, (a, b) in enumerate(zip(ref, got, strict=False), 1):
        where = f"event {number} (frame {a.get('frame_index')})"
        for key in FRAME_KEYS:
            if a.get(key) != b.get(key):
                problems.append(f"{where}: {key} {a.get(key)!r} != {b.get(key)!r}")
        faces_a, faces_b = a.get("faces", []), b.get("faces", [])
        if len(faces_a) != len(faces_b):
            problems.append(f"{where}: {len(faces_a)} faces on x86, {len(faces_b)} on arm64")
            continue
        for index, (fa, fb) in enumerate(zip(faces_a, faces_b, strict=True)):
            problems += compare_faces(f"{where} face {index}", fa, fb, box_tol, score_tol)
    return problems


def summary(ref: list[dict]) -> str:
    faces = sum(len(event.get("faces", [])) for event in ref)
    first = next((f for event in ref for f in event.get("faces", [])), None)
    example = f", first face {first['emotion']} {first['confidence']:.4f}" if first else ""
    return f"{len(ref)} events, {faces} faces{example}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("x86")
    parser.add_argument("arm64")
    parser.add_argument("--box-tol", type=int, default=1, help="pixels (default 1)")
    parser.add_argument(
        "--score-step", type=float, default=1 / 256, help="one int8 output step (default 1/256)"
    )
    args = parser.parse_args(argv)
    try:
        ref, got = read_events(args.x86), read_events(args.arm64)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not ref:
        print(f"error: {args.x86} holds no events: nothing to compare", file=sys.stderr)
        return 2
    problems = compare_events(ref, got, args.box_tol, args.score_step)
    for line in problems[:50]:
        print(line)
    verdict = "match" if not problems else f"{len(problems)} differences"
    print(f"{verdict}: {summary(ref)} (boxes within {args.box_tol} px, scores within {args.score_step:.5f})")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
