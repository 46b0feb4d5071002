"""Precision stages on the exported ONNX graph, through ONNX Runtime's own quantization tools.

* ``int8``: static post-training quantization to explicit QDQ with symmetric per-channel INT8
  weights and symmetric INT8 activations -- the form TensorRT 10 builds INT8 engines from, and
  which ONNX Runtime's CPU provider fuses into integer kernels.
* ``int8-dynamic``: weights-only INT8 (activations quantized on the fly), for CPUs.
* ``fp16``: weights and arithmetic in half precision, inputs and outputs kept float32.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avf.atomic import atomic_file

CALIBRATION_METHODS = ("entropy", "percentile", "minmax")
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")


class ArrayCalibrationReader:
    """Feeds calibration batches to ONNX Runtime's calibrator (its ``CalibrationDataReader`` API)."""

    def __init__(self, batches: Iterator[tuple[np.ndarray, np.ndarray]]):
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"rgb": batch[0], "audio": batch[1]}

    def rewind(self):  # pragma: no cover - ORT calls it only for some methods; batches are consumed once
        raise RuntimeError("calibration batches can be read once")


def quantize_int8_static(fp32_path: str | Path, out_path: str | Path, calibration: Iterator[tuple[np.ndarray, np.ndarray]],
                         method: str = "percentile") -> Path:
    """Static QDQ INT8: symmetric per-channel weights, symmetric activations, ``method`` ranges."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {method!r}")
    out_path = Path(out_path)
    calibrate = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                 "minmax": CalibrationMethod.MinMax}[method]
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".calibration.") as workdir, \
            atomic_file(out_path, suffix=".tmp.onnx") as tmp:
        prepared = Path(workdir).resolve() / "prepared.onnx"  # absolute (tmp is too): both survive the chdir below
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        cwd = os.getcwd()
        os.chdir(workdir)  # the calibrator writes its augmented model into the working directory
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints histogram chatter
                quantize_static(str(prepared), str(tmp), ArrayCalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calibrate, op_types_to_quantize=["Gemm", "MatMul"],
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                               "CalibPercentile": 99.999, "CalibMovingAverage": False})
        finally:
            os.chdir(cwd)
        keep_logits_float(tmp)
    return out_path


def keep_logits_float(path: str | Path) -> int:
    """Remove the Q/DQ pair between the last linear layer and the sigmoid; returns pairs removed.

    Ranking thousands of classes needs finer logits than 8 bits: on real YouTube-8M data an INT8
    logit (step ~0.1 over +-15) alone cost 2-3% of GAP, while the INT8 matrix products before it
    cost nothing measurable. The classifier still multiplies in INT8; only its output stays float
    (ONNX Runtime's QGemm and TensorRT both produce float output from INT8 inputs).
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    removed = 0
    for sigmoid in [n for n in graph.node if n.op_type == "Sigmoid"]:
        dequantize = producers.get(sigmoid.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        sigmoid.input[0] = quantize.input[0]
        graph.node.remove(dequantize)
        graph.node.remove(quantize)
        removed += 1
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    onnx.save(model, str(path))
    return removed


def quantize_int8_dynamic(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Weights-only INT8 (per-channel, symmetric); activations are quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_file(out_path, suffix=".tmp.onnx") as tmp:
        quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    return Path(out_path)


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Half-precision weights and arithmetic; float32 inputs/outputs so callers need not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with atomic_file(out_path, suffix=".tmp.onnx") as tmp:
        onnx.save(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True), str(tmp))
    return Path(out_path)
