"""Prove a converted .tflite is full-integer: read it back through the daemon's own interpreter.

The converter can silently keep float islands (a Quantize/Dequantize pair around an op it could not
quantize); on a Pi those run at float speed and break the "int8 end to end" promise. So after converting
we list every operator and the dtype of every tensor it touches, instead of trusting converter flags.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from convert.errors import ConvertError
from edge.interpreter import load_interpreter

# Integer tensors a full-integer graph legitimately holds besides int8: int32 biases and shape operands.
_INTEGER_DTYPES = {np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.int16)}
_PSEUDO_OPS = {"DELEGATE"}  # nodes the interpreter adds when it hands ops to XNNPACK: not graph ops


@dataclass
class GraphReport:
    input_dtypes: list[str]
    output_dtypes: list[str]
    input_quantization: tuple[float, int]  # (scale, zero point) of the first input
    output_quantization: tuple[float, int]
    op_counts: dict[str, int]
    float_ops: list[str] = field(default_factory=list)  # "DEQUANTIZE #7 (float32 output)", ...

    @property
    def full_integer(self) -> bool:
        io_int8 = all(d == "int8" for d in self.input_dtypes + self.output_dtypes)
        return io_int8 and not self.float_ops

    def input_is_raw_pixels(self, tolerance: float = 0.01) -> bool:
        """Rescaling(1/255) fed 0..255 should give scale 1, zero point -128: int8 value = pixel - 128."""
        scale, zero_point = self.input_quantization
        return abs(scale - 1.0) <= tolerance and zero_point == -128

    def summary(self, list_float_ops: bool = True) -> str:
        ops = ", ".join(f"{name} x{count}" for name, count in sorted(self.op_counts.items()))
        scale, zp = self.input_quantization
        lines = [
            f"inputs {self.input_dtypes} outputs {self.output_dtypes}; input scale {scale:g} zero point {zp}",
            f"ops: {ops}",
        ]
        if self.float_ops and list_float_ops:
            lines.append(f"float ops ({len(self.float_ops)}): " + _first(self.float_ops))
        elif self.float_ops:
            lines.append(f"{len(self.float_ops)} ops touch float tensors (expected outside int8 mode)")
        return "\n".join(lines)


def _first(items: list[str], limit: int = 6) -> str:
    """A float16 model touches floats in every op: name a few, count the rest."""
    shown = "; ".join(items[:limit])
    return shown + (f"; ... and {len(items) - limit} more" if len(items) > limit else "")


def _float_problem(op: dict, tensors: dict[int, dict]) -> str | None:
    """ "SIN #2 (float32 input, float32 output) at 'sequential/sine/Sin'" or None for an integer op."""
    touched = []
    for role, indices in (("input", op["inputs"]), ("output", op["outputs"])):
        for index in indices:
            if index < 0:  # an optional operand that is absent
                continue
            dtype = np.dtype(tensors[index]["dtype"])
            if dtype not in _INTEGER_DTYPES and dtype != np.dtype(np.bool_):
                touched.append(f"{dtype.name} {role}")
    if not touched:
        return None
    outputs = [i for i in op["outputs"] if i >= 0]
    # The output tensor's name carries the Keras layer path; fused names get long, so keep the first part.
    where = f" at '{tensors[outputs[0]]['name'].split(';')[0][:80]}'" if outputs else ""
    return f"{op['op_name']} #{op['index']} ({', '.join(dict.fromkeys(touched))}){where}"


def inspect_tflite(path: str | os.PathLike) -> GraphReport:
    interpreter, _ = load_interpreter(path, num_threads=1)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    op_counts: Counter[str] = Counter()
    float_ops = []
    for op in interpreter._get_ops_details():  # private but stable across tf.lite and ai-edge-litert
        for index in list(op["inputs"]) + list(op["outputs"]):
            if index >= 0 and index not in tensors:  # not listed by get_tensor_details: fetch it directly
                tensors[index] = interpreter._get_tensor_details(index, 0)
        if op["op_name"] not in _PSEUDO_OPS:
            op_counts[op["op_name"]] += 1
        problem = _float_problem(op, tensors)
        if problem:
            float_ops.append(problem)

    def quant(detail):
        scale, zero_point = detail["quantization"]
        return float(scale), int(zero_point)

    return GraphReport(
        input_dtypes=[np.dtype(d["dtype"]).name for d in inputs],
        output_dtypes=[np.dtype(d["dtype"]).name for d in outputs],
        input_quantization=quant(inputs[0]),
        output_quantization=quant(outputs[0]),
        op_counts=dict(op_counts),
        float_ops=float_ops,
    )


def require_full_integer(report: GraphReport, allow_float_fallback: bool) -> list[str]:
    """Raise unless the graph is int8 end to end; with the fallback allowed, return warnings instead."""
    problems = []
    for kind, dtypes in (("input", report.input_dtypes), ("output", report.output_dtypes)):
        problems += [f"{kind} tensor is {d}, not int8" for d in dtypes if d != "int8"]
    problems += [f"float op {name}" for name in report.float_ops]
    if problems and not allow_float_fallback:
        raise ConvertError(
            "the int8 model is not full-integer: "
            + _first(problems)
            + " (a layer did not quantize; use int8-friendly layers, or pass --allow-float-fallback)"
        )
    return problems
