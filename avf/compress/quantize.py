"""Precision stages on the exported ONNX graph, through ONNX Runtime's own quantization tools.

* ``int8``: static post-training quantization to explicit QDQ with symmetric per-channel INT8
  weights and symmetric INT8 activations -- the explicit-quantization form TensorRT 10/11 build
  strongly typed INT8 engines from (after folding the INT32 bias dequantization, see
  :mod:`avf.compress.tensorrt_check`), and
  which ONNX Runtime's CPU provider fuses into integer kernels.
* ``int8-dynamic``: weights-only INT8 (activations quantized on the fly), for CPUs.
* ``fp16``: weights and arithmetic in half precision, inputs and outputs kept float32.
* ``int4``: 4-bit weight-only matrices (ONNX Runtime's ``MatMulNBits`` contrib kernel), for CPUs:
  at batch 1 these models are bound by reading their weights, and this halves INT8's bytes.
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
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic", "int4")
INT4_BLOCK = 32


class ArrayCalibrationReader:
    """Feeds calibration batches to ONNX Runtime's calibrator (its ``CalibrationDataReader`` API).

    Every batch it hands out has the same number of rows. ONNX Runtime's histogram calibrators
    (percentile, entropy) stack each tensor's outputs from all runs with ``np.asarray``; a short
    last batch makes that list ragged and the calibrator fails with "setting an array element
    with a sequence ... inhomogeneous shape". So the rows are regrouped into equal batches: the
    largest size up to ``max_batch`` that divides the row count (1 at worst, still exact).
    """

    def __init__(self, batches: Iterator[tuple[np.ndarray, np.ndarray]], max_batch: int = 256):
        self._batches = iter(equal_batches(batches, max_batch))
        self.input_names: list[str] | None = None  # the graph's inputs (a single-modality model has one)

    def get_next(self):
        batch = next(self._batches, None)
        if batch is None:
            return None
        feeds = {"rgb": batch[0], "audio": batch[1]}
        return {name: feeds[name] for name in self.input_names} if self.input_names else feeds

    def rewind(self):  # pragma: no cover - ORT calls it only for some methods; batches are consumed once
        raise RuntimeError("calibration batches can be read once")


def equal_batch_size(rows: int, max_batch: int = 256) -> int:
    """The largest batch size <= ``max_batch`` that splits ``rows`` into equal batches."""
    if rows < 1:
        raise ValueError("calibration needs at least one video")
    return max(size for size in range(1, min(rows, max_batch) + 1) if rows % size == 0)


def equal_batches(batches: Iterator[tuple[np.ndarray, np.ndarray]], max_batch: int = 256):
    """Regroup (rgb, audio) batches of any sizes into batches of one size (see ArrayCalibrationReader)."""
    parts = list(batches)
    if not parts:
        raise ValueError("calibration needs at least one video")
    rgb = np.concatenate([np.asarray(p[0], np.float32) for p in parts])
    audio = np.concatenate([np.asarray(p[1], np.float32) for p in parts])
    size = equal_batch_size(len(rgb), max_batch)
    for start in range(0, len(rgb), size):
        yield rgb[start:start + size], audio[start:start + size]


def quantize_int8_static(fp32_path: str | Path, out_path: str | Path, calibration: Iterator[tuple[np.ndarray, np.ndarray]],
                         method: str = "percentile", exclude=(), only=None) -> Path:
    """Static QDQ INT8: symmetric per-channel weights, symmetric activations, ``method`` ranges.

    ``exclude`` names nodes kept in float (mixed precision: the most sensitive layers); ``only``
    quantizes just the named nodes (per-layer sensitivity is measured that way).

    Weights use 7 of their 8 bits (``reduce_range``). On x86 CPUs without VNNI (AVX2 or AVX-512
    only) ONNX Runtime turns the INT8 activations into UINT8 and multiplies with ``vpmaddubsw``,
    whose 16-bit pair sums saturate with full-range weights: measured on an AMD EPYC (AVX2), the
    Attend-Fusion INT8 artifact of tests/test_compress.py lost 3.7% of GAP (largest probability
    error 0.11) with 8-bit weights, and 0.01% (0.009) with 7-bit ones; the same graph evaluated
    without the integer kernels was exact to 0.007 either way. The Q/DQ nodes stay INT8 with zero
    zero-points, so TensorRT reads them as before.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {method!r}")
    out_path = Path(out_path)
    exclude, only = list(exclude), None if only is None else list(only)
    missing = [name for name in exclude + (only or []) if name not in quantizable_nodes(fp32_path)]
    if missing:
        from avf.errors import InputError

        raise InputError(fp32_path, f"no quantizable Gemm/MatMul node named {', '.join(missing)} "
                                    f"(has {', '.join(quantizable_nodes(fp32_path))})")
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
                reader = ArrayCalibrationReader(calibration)
                reader.input_names = _input_names(prepared)
                quantize_static(str(prepared), str(tmp), reader, quant_format=QuantFormat.QDQ,
                                per_channel=True, reduce_range=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calibrate, op_types_to_quantize=["Gemm", "MatMul"],
                                nodes_to_exclude=exclude, nodes_to_quantize=only,
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                               "CalibPercentile": 99.999, "CalibMovingAverage": False})
        finally:
            os.chdir(cwd)
        keep_logits_float(tmp)
    return out_path


def quantizable_nodes(path: str | Path) -> list[str]:
    """Names of the Gemm/MatMul nodes the INT8 quantizer works on, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in ("Gemm", "MatMul")]


def _input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


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


def quantize_int4_weight_only(fp32_path: str | Path, out_path: str | Path, block_size: int = INT4_BLOCK,
                              accuracy_level: int = 4) -> Path:
    """Every ``Gemm`` (transB=1, alpha=beta=1, constant weight) becomes ``MatMulNBits`` + ``Add``.

    Weights are quantized per block of ``block_size`` along the input axis, symmetric 4-bit
    (scale = block max / 7, stored with ONNX Runtime's default zero point 8, two values per byte,
    low nibble first); the bias stays float. ``accuracy_level=4`` lets the CPU kernel multiply
    in INT8 (activations quantized on the fly). Written without onnxruntime's MatMulNBits
    quantizer, which needs the extra ``onnx-ir`` package and takes MatMul, not Gemm.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not (node.op_type == "Gemm" and attrs.get("transA", 0) == 0 and attrs.get("transB", 0) == 1
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and node.input[1] in initializers):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        packed, scales = pack_int4(weight, block_size)
        n, k = weight.shape
        packed_name, scales_name = node.input[1] + ".int4", node.input[1] + ".int4_scales"
        graph.initializer.extend([numpy_helper.from_array(packed, packed_name),
                                  numpy_helper.from_array(scales, scales_name)])
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + ".int4_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMulNBits", [node.input[0], packed_name, scales_name], [product],
                                      name=node.name, domain="com.microsoft", K=k, N=n, bits=4,
                                      block_size=block_size, accuracy_level=accuracy_level))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + ".bias"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with atomic_file(out_path, suffix=".tmp.onnx") as tmp:
        onnx.save(model, str(tmp))
    return Path(out_path)


def pack_int4(weight: np.ndarray, block_size: int = INT4_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(B uint8 [N, blocks, block_size/2], scales float32 [N * blocks]) in MatMulNBits' layout."""
    n, k = weight.shape
    blocks = -(-k // block_size)
    padded = np.pad(weight, ((0, 0), (0, blocks * block_size - k))).reshape(n, blocks, block_size)
    largest = np.abs(padded).max(axis=2)
    scales = np.where(largest > 0, largest / 7.0, 1.0).astype(np.float32)
    codes = (np.clip(np.rint(padded / scales[..., None]), -8, 7) + 8).astype(np.uint8)
    packed = (codes[..., 0::2] & 0x0F) | ((codes[..., 1::2] & 0x0F) << 4)
    return packed.astype(np.uint8), scales.reshape(-1)


def unpack_int4(packed: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The float weights MatMulNBits computes with (for tests and error bounds)."""
    n, blocks, half = packed.shape
    codes = np.empty((n, blocks, half * 2), np.float32)
    codes[..., 0::2], codes[..., 1::2] = packed & 0x0F, packed >> 4
    return ((codes - 8) * scales.reshape(n, blocks, 1)).reshape(n, -1)[:, :k]


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Half-precision weights and arithmetic; float32 inputs/outputs so callers need not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with atomic_file(out_path, suffix=".tmp.onnx") as tmp:
        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        sort_topologically(model.graph)  # the converter appends its input casts after their users
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return Path(out_path)


def sort_topologically(graph) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (ONNX requires it).

    onnxruntime's float16 converter with ``keep_io_types`` appends the Cast nodes of the graph
    inputs at the end, which ``onnx.checker`` rejects ("Nodes in a graph must be topologically
    sorted"); ONNX Runtime and TensorRT happen to sort it themselves, other consumers need not.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or an undefined input among {[n.name for n in pending][:5]}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
