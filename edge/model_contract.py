"""The model contract: what a model expects and what its outputs mean, travelling with the model.

A sidecar JSON file sits next to every model this project writes (`model.keras` -> `model.json`,
`default.tflite` -> `default.json`). It holds the labels in output order, the input size and colour mode,
and the preprocessing parameters. The daemon finds it by itself, so it never needs a labels argument, and
labels are never mapped by position between stages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.align import Framing

FORMAT = "emotion-edge-model/1"
# Config files and contracts are a few KB. Anything far larger is a wrong path (`/dev/zero`, a video): read
# no more than this instead of running out of memory on it.
MAX_TEXT_BYTES = 1 << 20


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


def read_text_limited(path: str | os.PathLike, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A small UTF-8 text file, refusing (ValueError naming `what`) one larger than `limit` bytes, so an
    endless or huge file costs `limit` bytes of memory, not all of it. A pipe or device (`<(cat x)`, a FIFO)
    is read for at most PIPE_WAIT_S: a FIFO nobody writes to would otherwise hold the open for good. OSError
    and UnicodeDecodeError pass."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read(limit + 1)
        else:
            data = _read_waiting(fd, limit + 1, f"{what} {path}")
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{what} {path} is larger than {limit // 1024} KiB: not a {what}")
    return data.decode("utf-8")


PIPE_WAIT_S = 5.0


def _read_waiting(fd: int, size: int, what: str) -> bytes:
    """Up to `size` bytes from a non-blocking pipe or device, until its end; ValueError after PIPE_WAIT_S."""
    import select

    chunks: list[bytes] = []
    got = 0
    deadline = time.monotonic() + PIPE_WAIT_S
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ValueError(f"{what} is a pipe or device that did not finish within {PIPE_WAIT_S:g} s")
        if not poller.poll(remaining * 1000):
            continue
        try:
            chunk = os.read(fd, min(65536, size - got))
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# The shipped unit's ProtectHome=yes makes these unreachable for the service: say so when a path there fails.
_HIDDEN_BY_THE_UNIT = ("/home/", "/root/", "/run/user/")


def path_problem(path: str | os.PathLike, want: str = "file") -> str | None:
    """Why `path` cannot be used as a `want` ("file" or "folder"), in words that name it, or None when it
    can. Never raises: a name too long, a part of it that is a file, or a folder the user may not enter are
    reasons like a missing file, not tracebacks."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except NotADirectoryError:
        return f"{path} does not exist (a part of the path is a file, not a folder)"
    except PermissionError:
        hint = ""
        if str(path).startswith(_HIDDEN_BY_THE_UNIT):
            hint = (
                " (under systemd the service cannot see /home, /root or /run/user, ProtectHome=yes: "
                "use /etc/emotion-edge or /var/lib/emotion-edge)"
            )
        return f"{path} cannot be reached: permission denied{hint}"
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, ...; ValueError: a NUL in the path
        return f"{path} cannot be used: {getattr(exc, 'strerror', None) or exc}"
    if want == "folder":
        return None if stat.S_ISDIR(info.st_mode) else f"{path} is not a folder"
    if stat.S_ISDIR(info.st_mode):
        return f"{path} is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file (a device, a pipe or a socket)"
    return None


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


def not_utf8_hint(exc: UnicodeDecodeError) -> str:
    """What to tell someone whose editor saved a file as Latin-1 or Windows-1252 (or who named a binary)."""
    return f"{exc.object[exc.start : exc.start + 1]!r} cannot be decoded; save the file as UTF-8"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a file so a reader never sees half of it: temp file in the same folder, then rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask applies), so a
        # daemon running as its own user can read models and contracts written by another account.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
