"""The two flows behind `emotion-convert`: convert a Keras model, and evaluate one model or a pair.

Order matters for the user: everything cheap (paths, output folder, contract, data, labels) is checked
before TensorFlow is imported or a model is converted, and nothing is written until the converted graph
passed its int8 check and its verification ran; then the .tflite and its contract are written atomically.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from convert.evaluate import (
    compare,
    evaluate,
    evaluate_views,
    format_summary,
    keras_predictor,
    load_predictor,
    tflite_predictor,
)
from convert.graph_check import inspect_tflite, require_full_integer
from convert.model_io import (
    check_labels_match,
    check_model_matches_contract,
    contract_for,
    face_model_shape,
    has_contract,
    load_keras_model,
    require_tensorflow,
    resolve_eval_path,
    resolve_keras_path,
    to_model_order,
)
from convert.quantize import METADATA_NAME, convert_model, embed_metadata
from edge.files import write_bytes_atomic, write_text_atomic
from edge.model_contract import ModelContract, save_contract, sidecar_path
from train.data import Dataset, load_dataset, stratified_sample
from train.metrics import format_report

CALIBRATION_SEED = 1337


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def check_output_path(path: str | os.PathLike, suffix: str, what: str) -> Path:
    """Fail now, not after a minute of conversion, if the output cannot be written."""
    out = Path(path)
    if out.suffix != suffix:
        raise ConvertError(f"{what} {out} must end in {suffix}")
    if out.is_dir():
        raise ConvertError(f"{what} {out} is a folder; give a file name ending in {suffix}")
    parent = out.parent
    if not parent.is_dir():
        raise ConvertError(f"cannot write {what} {out}: folder {parent} does not exist")
    # A real probe: os.access says yes to root even on a read-only mount.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConvertError(
            f"cannot write {what} {out}: folder {parent} is not writable ({exc.strerror})"
        ) from None
    return out


def choose_eval_split(dataset: Dataset, requested: str | None, advice: str = "name one with --split") -> str:
    """The split asked for, else test, else val; ConvertError (ending in `advice`: what this command takes
    to fix it) when there is none."""
    if requested:
        if requested not in dataset.splits:
            raise ConvertError(
                f"{dataset.source} has no '{requested}' split (available: {', '.join(sorted(dataset.splits))})"
            )
        return requested
    for name in ("test", "val"):
        if name in dataset.splits and len(dataset.splits[name]):
            return name
    raise ConvertError(
        f"{dataset.source} has no test or val split (available: {', '.join(sorted(dataset.splits))}); "
        + advice
    )


def _faces(dataset: Dataset, split: str) -> np.ndarray:
    return dataset.splits[split].images[..., np.newaxis]


# ------------------------------------------------------------------------------------------------ convert


def run_convert(args) -> int:
    keras_path = resolve_keras_path(args.model)
    out = check_output_path(args.out, ".tflite", "output")
    # x.keras and x.tflite share x.json: the int8 contract would replace the training contract and its metrics.
    if has_contract(keras_path) and sidecar_path(out).resolve() == sidecar_path(keras_path).resolve():
        raise ConvertError(
            f"output {out} would overwrite the Keras model's own contract {sidecar_path(keras_path)}; "
            "choose another file name"
        )
    if args.samples <= 0:
        raise ConvertError(f"--samples must be positive, got {args.samples}")
    require_tensorflow()
    model, contract, dataset = _load_checked_inputs(keras_path, args.data, args.cache_dir)

    extra = {"mode": args.mode, "source_model": str(keras_path)}
    calibration = None
    if args.mode == "int8":
        split = "train" if "train" in dataset.splits else sorted(dataset.splits)[0]
        calibration = stratified_sample(dataset.splits[split], args.samples, CALIBRATION_SEED).images
        print(
            f"calibrating on {len(calibration)} '{split}' faces (class-stratified, seed {CALIBRATION_SEED})"
        )
        extra.update(
            calibration_samples=len(calibration), calibration_split=split, calibration_seed=CALIBRATION_SEED
        )
    tflite, route = convert_model(model, args.mode, calibration, args.allow_float_fallback)
    extra.update(converter=route, source_extra=contract.extra)
    tflite = _embed_contract(tflite, replace(contract, extra=dict(extra)))

    with tempfile.TemporaryDirectory(prefix="emotion-convert-") as staging:
        # Checked and verified where the daemon would load it from: a .tflite with its sidecar.
        staged = Path(staging) / out.name
        write_bytes_atomic(staged, tflite)
        save_contract(staged, replace(contract, extra=dict(extra)))
        extra.update(_check_graph(staged, args.mode, args.allow_float_fallback))
        if not args.no_verify:
            extra["verification"] = _verify(model, keras_path, contract, staged, dataset)

    _publish(out, tflite, replace(contract, extra=extra))
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB) and {sidecar_path(out)}")
    return 0


def _load_checked_inputs(keras_path: Path, data: str, cache_dir: str | None):
    """(Keras model, its contract, the data set) once labels and shapes agree. The contract and data are
    checked before the model is loaded: both are cheap, the model needs TensorFlow."""
    model = None
    contract = contract_for(keras_path) if has_contract(keras_path) else None
    if contract is None:  # a bare .keras: its input size comes from the model, its labels from the data
        model = load_keras_model(keras_path)
        size, _ = face_model_shape(model, keras_path)
    else:
        size = contract.input_size
    dataset = load_dataset(data, size=size, cache_dir=cache_dir)
    if contract is None:
        warn(
            f"{sidecar_path(keras_path)} is missing: taking the labels from the data in its order "
            f"{dataset.labels}; this is only right if the model was trained on that order"
        )
        contract = ModelContract(labels=list(dataset.labels), input_height=size[0], input_width=size[1])
    check_labels_match(contract.labels, dataset.labels, str(keras_path), f"data {data}")
    if model is None:
        model = load_keras_model(keras_path)
    size, classes = face_model_shape(model, keras_path)
    check_model_matches_contract(keras_path, size, classes, contract)
    return model, contract, dataset


def _embed_contract(tflite: bytes, contract: ModelContract) -> bytes:
    try:
        # No sha256 here: the Keras model's would be wrong, and the file's own cannot be inside the file.
        payload = json.dumps(replace(contract, sha256=None).validate("converted model contract").to_dict(),
                             sort_keys=True).encode()  # fmt: skip
        return embed_metadata(tflite, METADATA_NAME, payload)
    except Exception as exc:  # the embedded copy is a convenience; the sidecar is what the daemon reads
        warn(f"could not embed the contract into the .tflite metadata ({exc}); the sidecar JSON still has it")
        return tflite


def _check_graph(staged: Path, mode: str, allow_float_fallback: bool) -> dict:
    """Read the converted file back through the daemon's interpreter; for int8, refuse float islands."""
    report = inspect_tflite(staged)
    print(report.summary(list_float_ops=mode == "int8"))
    facts: dict = {"full_integer": report.full_integer}
    if mode != "int8":
        return facts
    for problem in require_full_integer(report, allow_float_fallback):
        warn(f"kept despite --allow-float-fallback: {problem}")
    scale, zero_point = report.input_quantization
    if report.input_is_raw_pixels():
        print(f"int8 input: scale {scale:g}, zero point {zero_point} (the int8 value is pixel - 128)")
    else:
        warn(
            f"int8 input scale {scale:g}, zero point {zero_point}, not 1 / -128: the calibration faces "
            "do not span 0..255; the classifier still quantizes correctly from these parameters"
        )
    facts["input_quantization"] = {"scale": scale, "zero_point": zero_point}
    return facts


def _verify(model, keras_path: Path, contract: ModelContract, staged: Path, dataset: Dataset) -> dict:
    """Float vs converted accuracy on the held-out split, so the user sees at once what quantization cost."""
    try:
        # emotion-convert itself has no --split: the check runs on the held-out faces --data holds.
        split = choose_eval_split(
            dataset, None, "give --data held-out faces (a test/ or val/ folder) to check the conversion"
        )
    except ConvertError as exc:
        warn(f"verification skipped: {exc}")
        return {"skipped": str(exc)}
    faces = _faces(dataset, split)
    targets = to_model_order(dataset.splits[split].labels, dataset.labels, contract.labels)
    reference = keras_predictor(keras_path, contract, model)
    converted = tflite_predictor(staged, num_threads=1)
    first, first_probs = evaluate(reference, faces, targets, timing_runs=0)
    second, second_probs = evaluate(converted, faces, targets, timing_runs=0)
    pair = compare(first, first_probs, second, second_probs, converted.labels)
    print(f"\nverification on '{split}' ({len(faces)} faces):")
    print(format_summary([first, second], pair["agreement"]))
    return {
        "split": split,
        "faces": len(faces),
        "float_accuracy": first["accuracy"],
        "accuracy": second["accuracy"],
        "macro_f1": second["macro_f1"],
        "agreement": pair["agreement"],
    }


def _publish(out: Path, tflite: bytes, contract: ModelContract) -> None:
    """Model and contract are both written next to `out` under temporary names, then renamed into place: a
    full disk or a permission problem leaves a previous model and its contract as they were, as a pair."""
    staged = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    try:
        try:
            write_bytes_atomic(staged, tflite)
            save_contract(staged, contract)
        except OSError as exc:
            raise ConvertError(f"cannot write {out} and {sidecar_path(out)}: {exc.strerror or exc}") from None
        os.replace(sidecar_path(staged), sidecar_path(out))
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
        sidecar_path(staged).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- evaluate


def _majority_labels(path: str, dataset: Dataset, split: str) -> np.ndarray:
    """FER+-style majority label per face of the split (data label order), -1 where there is none."""
    from train.softlabels import load_soft_labels, majority_labels

    soft = load_soft_labels(path, dataset.labels)
    majority = majority_labels(soft, dataset.splits[split].files)
    if not (majority >= 0).any():
        raise ConvertError(
            f"--soft-labels {path}: no face of split '{split}' has a row with a majority label"
        )
    return majority


def _small_face_sizes(spec: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise ConvertError(
            f"--small-faces {spec!r}: expected comma-separated pixel sizes, e.g. 24,32,40"
        ) from None
    if any(side < 4 for side in sizes):
        raise ConvertError(f"--small-faces {spec!r}: every size must be at least 4 px")
    return sizes


def run_evaluate(args) -> int:
    first_path, first_kind = resolve_eval_path(args.model)
    second = resolve_eval_path(args.compare) if args.compare else None
    json_out = check_output_path(args.json, ".json", "--json") if args.json else None
    for model_path in [first_path] + ([second[0]] if second else []):
        if json_out is not None and Path(json_out).resolve() == sidecar_path(model_path).resolve():
            raise ConvertError(
                f"--json {args.json} is the contract file of {model_path} (its labels and input size, which "
                "the daemon reads); write the evaluation elsewhere, e.g. evaluation.json"
            )
    if args.timing_runs < 0:
        raise ConvertError(f"--timing-runs must be 0 or more, got {args.timing_runs}")

    predictors = [load_predictor(first_path, first_kind)]
    if second:
        predictors.append(load_predictor(*second))
        a, b = predictors
        check_labels_match(a.labels, b.labels, str(a.path), f"model {b.path}")
        if a.contract.input_size != b.contract.input_size:
            raise ConvertError(f"{a.path} and {b.path} take different input sizes; they cannot be compared")
    contract = predictors[0].contract
    dataset = load_dataset(args.data, size=contract.input_size, cache_dir=args.cache_dir)
    for predictor in predictors:
        check_labels_match(predictor.labels, dataset.labels, str(predictor.path), f"data {args.data}")
    split = choose_eval_split(dataset, args.split)
    faces = _faces(dataset, split)
    if len(faces) == 0:
        raise ConvertError(f"split '{split}' of {args.data} holds no images")

    majority = _majority_labels(args.soft_labels, dataset, split) if args.soft_labels else None
    sizes = _small_face_sizes(args.small_faces)
    results, probs = [], []
    for predictor in predictors:
        targets = to_model_order(dataset.splits[split].labels, dataset.labels, predictor.labels)
        result, p = evaluate(predictor, faces, targets, args.tta_flip, args.timing_runs)
        result["split"] = split
        ours = None
        if majority is not None:
            ours = np.where(
                majority >= 0, to_model_order(np.maximum(majority, 0), dataset.labels, predictor.labels), -1
            )
            result["majority_labels"] = args.soft_labels
        result.update(evaluate_views(predictor, faces, p, targets, ours, sizes))
        results.append(result)
        probs.append(p)
        name = Path(result["model"]).name
        print(format_report(result, f"{name} on '{split}' ({len(faces)} faces)"))
        if "majority" in result:
            title = f"{name} on '{split}', majority labels of {args.soft_labels} ({result['majority']['count']} faces)"
            print(format_report(result["majority"], title))

    output = dict(results[0])
    agreement = None
    if second:
        output["compare"] = compare(results[0], probs[0], results[1], probs[1], predictors[1].labels)
        agreement = output["compare"]["agreement"]
    print(format_summary(results, agreement))
    if json_out:
        try:
            write_text_atomic(json_out, json.dumps(output, indent=2) + "\n")
        except OSError as exc:
            raise ConvertError(f"cannot write {json_out}: {exc.strerror or exc}") from None
        print(f"wrote {json_out}")
    return 0
