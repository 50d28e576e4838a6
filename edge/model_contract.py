"""The model contract: what a model expects and what its outputs mean, travelling with the model.

A sidecar JSON file sits next to every model this project writes (`model.keras` -> `model.json`,
`default.tflite` -> `default.json`). It holds the labels in output order, the input size and colour mode,
and the preprocessing parameters. The daemon finds it by itself, so it never needs a labels argument, and
labels are never mapped by position between stages.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.align import Framing
from edge.files import file_sha256, not_utf8_hint, read_text_limited, write_text_atomic

FORMAT = "emotion-edge-model/1"


class ContractError(ValueError):
    """The contract is missing or malformed; the message names the file and the problem."""


@dataclass
class ModelContract:
    labels: list[str]
    input_height: int = 48
    input_width: int = 48
    color: str = "gray"  # the only mode the preprocessing contract produces today
    crop_margin: float = 0.0  # fraction of the face box added on each side before resizing
    # How to cut a face from its eyes (edge/align.py: eye_distance, eye_y, align), used when the detector finds
    # eyes; None (contracts written before it existed) = the box + crop_margin for every detector.
    framing: dict[str, Any] | None = None
    arch: str = ""
    # The model file's SHA-256 (hex), written by save_contract: a damaged or swapped copy (400 flipped bytes
    # still load and give plausible scores) is refused. None (contracts written before it): not checked.
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # provenance, metrics: informational only

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.input_height, self.input_width)

    def validate(self, source: str = "model contract") -> ModelContract:
        if not isinstance(self.labels, list) or len(self.labels) < 2:
            raise ContractError(f"{source}: 'labels' must list at least two class names")
        if not all(isinstance(x, str) and x for x in self.labels):
            raise ContractError(f"{source}: every label must be a non-empty string")
        if len(set(self.labels)) != len(self.labels):
            raise ContractError(f"{source}: labels repeat: {self.labels}")
        for key in ("input_height", "input_width"):
            value = getattr(self, key)
            if not isinstance(value, int) or not 8 <= value <= 512:
                raise ContractError(f"{source}: '{key}' must be an integer in 8..512, got {value!r}")
        if self.color != "gray":
            raise ContractError(f"{source}: colour mode {self.color!r} is not supported (only 'gray')")
        # bool is an int in Python: `"crop_margin": true` is a mistake, not a margin of 1.0.
        margin = self.crop_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin <= 1.0:
            raise ContractError(f"{source}: 'crop_margin' must be a number in 0..1, got {self.crop_margin!r}")
        if self.framing is not None:
            try:
                Framing.from_dict(self.framing, f"{source}: 'framing'")
            except ValueError as exc:
                raise ContractError(str(exc)) from None
        if self.sha256 is not None and not (
            isinstance(self.sha256, str) and re.fullmatch(r"[0-9a-f]{64}", self.sha256)
        ):
            raise ContractError(
                f"{source}: 'sha256' must be 64 lower-case hex digits, got {self.sha256!r:.80}"
            )
        return self

    @property
    def face_framing(self) -> Framing | None:
        """The eye framing as an object, or None when faces are cut by their box alone."""
        return None if self.framing is None else Framing.from_dict(self.framing)

    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT, **asdict(self)}
        if data["sha256"] is None:  # as contracts without a checksum always looked
            del data["sha256"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model contract") -> ModelContract:
        if not isinstance(data, dict):
            raise ContractError(f"{source}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise ContractError(f"{source}: format is {data.get('format')!r}, expected {FORMAT!r}")
        known = {
            "labels",
            "input_height",
            "input_width",
            "color",
            "crop_margin",
            "framing",
            "arch",
            "sha256",
            "extra",
        }
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            raise ContractError(f"{source}: unknown key(s) {unknown}")
        if "labels" not in data:
            raise ContractError(f"{source}: 'labels' is missing")
        return cls(**{k: v for k, v in data.items() if k in known}).validate(source)


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """`dir/name.tflite` or `dir/name.keras` -> `dir/name.json`."""
    return Path(model_path).with_suffix(".json")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


def load_contract(model_path: str | os.PathLike) -> ModelContract:
    path = sidecar_path(model_path)
    try:
        text = read_text_limited(path, "model contract")
    except FileNotFoundError:
        raise ContractError(
            f"{path} is missing: a model needs its contract file (labels, input size) next to it"
        ) from None
    except OSError as exc:
        raise ContractError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path} is not UTF-8 text (byte {exc.start}): {not_utf8_hint(exc)}") from None
    except ValueError as exc:  # larger than a contract can be (after UnicodeDecodeError, a ValueError too)
        raise ContractError(str(exc)) from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_object)
    except RecursionError:
        raise ContractError(f"{path} is not a model contract: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError, and so is a repeated key
        raise ContractError(f"{path} is not valid JSON: {exc}") from None
    return ModelContract.from_dict(data, source=str(path))


def check_model_file(model_path: str | os.PathLike, contract: ModelContract) -> bool:
    """Compare the model file with the checksum its contract carries: True when it matches, False when the
    contract carries none (nothing is checked), ContractError when it differs."""
    if contract.sha256 is None:
        return False
    try:
        actual = file_sha256(model_path)
    except OSError as exc:
        raise ContractError(f"cannot read {model_path}: {exc.strerror or exc}") from None
    if actual != contract.sha256:
        raise ContractError(
            f"{model_path} does not match its contract {sidecar_path(model_path)}: its sha256 is {actual[:16]}..., "
            f"the contract says {contract.sha256[:16]}...; the model file is damaged or not the one the contract "
            "was written for: copy the model and its .json again"
        )
    return True


def save_contract(model_path: str | os.PathLike, contract: ModelContract) -> Path:
    """Write the contract beside the model, with the model file's sha256 when the file is there (a contract
    written before its model carries none)."""
    path = sidecar_path(model_path)
    digest = file_sha256(model_path) if os.path.isfile(model_path) else None
    contract = replace(contract, sha256=digest)
    write_text_atomic(path, json.dumps(contract.validate(str(path)).to_dict(), indent=2) + "\n")
    return path
