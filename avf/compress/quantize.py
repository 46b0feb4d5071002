"""Precision builders on the exported ONNX model, through ONNX Runtime's own quantization tools.

Each builder takes the FP32 model in memory (an ``onnx.ModelProto``) and :class:`BuildInputs`, and returns
the model to keep; it may change or empty the model it was given (ONNX Runtime's preprocessing moves its
weights out), so the caller passes it on and never reuses it. Where ONNX Runtime only works on files,
those files live in ``BuildInputs.workdir`` (avf-compress: a folder inside the artifact's temporary
folder) and nothing else is written. :mod:`avf.compress.precisions` names which builder makes which
precision.

* ``int8``: static post-training quantization to explicit QDQ with symmetric per-channel INT8
  weights and symmetric INT8 activations -- the explicit-quantization form TensorRT 10/11 build
  strongly typed INT8 engines from (after folding the INT32 bias dequantization, see
  :mod:`avf.compress.tensorrt_check`), and
  which ONNX Runtime's CPU provider fuses into integer kernels.
* ``int8-dynamic``: weights-only INT8 (activations quantized on the fly), for CPUs.
* ``fp16``: weights and arithmetic in half precision, inputs and outputs kept float32.
* ``int4``: 4-bit weight-only matrices (ONNX Runtime's ``MatMulNBits`` contrib kernel), for CPUs:
  at batch 1 these models are bound by reading their weights, and this halves INT8's bytes.

The ``quantize_*``/``convert_fp16`` functions are the same builders from one ONNX file to another, for
callers holding files (tune's per-layer sensitivity, tests).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avf.atomic import atomic_file

CALIBRATION_METHODS = ("entropy", "percentile", "minmax")
#: MatMulNBits block sizes (weights per scale along the input axis): larger blocks read fewer scales and lose more.
INT4_BLOCKS = (32, 64, 128, 256)
INT4_BLOCK = 32
#: MatMulNBits accuracy levels ONNX Runtime's CPU kernels implement: 1 float32 arithmetic, 4 INT8 arithmetic
#: (activations quantized per block on the fly). 2 (fp16) and 3 (bf16) fall back to 1 on x86 float inputs
#: (ONNX Runtime takes the nearest more accurate level it has; measured identical outputs with 1.32), so not offered.
INT4_ACCURACY_LEVELS = (1, 4)
INT4_ACCURACY = 4


@dataclass
class BuildInputs:
    """What a precision builder may use besides the model."""

    #: A scratch folder for the files ONNX Runtime's quantizers read and write (they take paths only).
    workdir: Path
    #: (rgb, audio) batches, for the builders that calibrate activation ranges.
    calibration: Iterable[tuple[np.ndarray, np.ndarray]] | None = None
    calib_method: str = "percentile"
    #: Nodes kept in float (INT8 mixed precision: the most quantization-sensitive layers).
    exclude: Sequence[str] = ()
    #: Quantize just these nodes (per-layer sensitivity is measured that way); None: all of them.
    only: Sequence[str] | None = None
    #: int4: MatMulNBits block size and accuracy level.
    block_size: int = INT4_BLOCK
    accuracy_level: int = INT4_ACCURACY


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


def keep_fp32(model, inputs: BuildInputs):
    """FP32: the exported model as it is."""
    return model


def to_fp16(model, inputs: BuildInputs):
    """Half-precision weights and arithmetic; float32 inputs/outputs so callers need not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(model, keep_io_types=True)
    sort_topologically(model.graph)  # the converter appends its input casts after their users
    onnx.checker.check_model(model)
    return model


def to_int8_static(model, inputs: BuildInputs):
    """Static QDQ INT8: symmetric per-channel weights, symmetric activations, ``inputs.calib_method`` ranges.

    ``inputs.exclude`` names nodes kept in float (mixed precision: the most sensitive layers);
    ``inputs.only`` quantizes just the named nodes (per-layer sensitivity is measured that way).

    Weights use 7 of their 8 bits (``reduce_range``). On x86 CPUs without VNNI (AVX2 or AVX-512
    only) ONNX Runtime turns the INT8 activations into UINT8 and multiplies with ``vpmaddubsw``,
    whose 16-bit pair sums saturate with full-range weights: measured on an AMD EPYC (AVX2), the
    Attend-Fusion INT8 artifact of tests/test_compress.py lost 3.7% of GAP (largest probability
    error 0.11) with 8-bit weights, and 0.01% (0.009) with 7-bit ones; the same graph evaluated
    without the integer kernels was exact to 0.007 either way. The Q/DQ nodes stay INT8 with zero
    zero-points, so TensorRT reads them as before.

    ONNX Runtime needs two files: the preprocessed model (the calibrator reads it) and the quantized one
    (the quantizer writes only to a path), both in ``inputs.workdir``; the result is read back once.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = inputs.calib_method
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {method!r}")
    if inputs.calibration is None:
        raise ValueError("static INT8 needs calibration batches")
    exclude, only = list(inputs.exclude), None if inputs.only is None else list(inputs.only)
    nodes = quantizable_nodes(model)
    missing = [name for name in exclude + (only or []) if name not in nodes]
    if missing:
        from avf.errors import InputError

        raise InputError(None, f"no quantizable Gemm/MatMul node named {', '.join(missing)} (has {', '.join(nodes)})")
    calibrate = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                 "minmax": CalibrationMethod.MinMax}[method]
    reader = ArrayCalibrationReader(iter(inputs.calibration))
    reader.input_names = graph_input_names(model)
    workdir = Path(inputs.workdir).resolve()  # absolute: the paths survive the chdir below
    source, prepared, quantized = workdir / "float.onnx", workdir / "prepared.onnx", workdir / "quantized.onnx"
    # From a file, not the ModelProto: ONNX Runtime 1.30's quant_pre_process moves an in-memory model's weights into
    # session initializers and leaves the proto pointing at a "foo.bin" that does not exist (it then fails to load).
    onnx.save(model, str(source))
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    cwd = os.getcwd()
    os.chdir(workdir)  # the calibrator writes its augmented model into the working directory
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints histogram chatter
            quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate, op_types_to_quantize=["Gemm", "MatMul"],
                            nodes_to_exclude=exclude, nodes_to_quantize=only,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibPercentile": 99.999, "CalibMovingAverage": False})
    finally:
        os.chdir(cwd)
    result = onnx.load(str(quantized))
    keep_logits_float(result)
    return result


def to_int8_dynamic(model, inputs: BuildInputs):
    """Weights-only INT8 (per-channel, symmetric); activations are quantized at run time.

    ONNX Runtime's quantizer writes only to a path: ``inputs.workdir``/quantized.onnx, read back once.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = Path(inputs.workdir) / "quantized.onnx"
    quantize_dynamic(model, str(quantized), weight_type=QuantType.QInt8, per_channel=True)
    return onnx.load(str(quantized))


def to_int4(model, inputs: BuildInputs):
    """Every ``Gemm`` (transB=1, alpha=beta=1, constant weight) becomes ``MatMulNBits`` + ``Add``, in place.

    Weights are quantized per block of ``inputs.block_size`` along the input axis, symmetric 4-bit
    (scale = block max / 7, stored with ONNX Runtime's default zero point 8, two values per byte,
    low nibble first); the bias stays float. ``inputs.accuracy_level`` 4 lets the CPU kernel multiply
    in INT8 (activations quantized on the fly), 1 in float32. Written without onnxruntime's MatMulNBits
    quantizer, which needs the extra ``onnx-ir`` package and takes MatMul, not Gemm.
    """
    from onnx import helper, numpy_helper

    block_size, accuracy_level = inputs.block_size, inputs.accuracy_level
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
    _drop_unused_initializers(graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


# ----------------------------------------------------------------------------- the same, file to file


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    return _build_file(to_fp16, fp32_path, out_path)


def quantize_int8_static(fp32_path: str | Path, out_path: str | Path, calibration: Iterator[tuple[np.ndarray, np.ndarray]],
                         method: str = "percentile", exclude=(), only=None) -> Path:
    return _build_file(to_int8_static, fp32_path, out_path, calibration=calibration, calib_method=method,
                       exclude=exclude, only=only)


def quantize_int8_dynamic(fp32_path: str | Path, out_path: str | Path) -> Path:
    return _build_file(to_int8_dynamic, fp32_path, out_path)


def quantize_int4_weight_only(fp32_path: str | Path, out_path: str | Path, block_size: int = INT4_BLOCK,
                              accuracy_level: int = INT4_ACCURACY) -> Path:
    return _build_file(to_int4, fp32_path, out_path, block_size=block_size, accuracy_level=accuracy_level)


def int4_method(inputs: BuildInputs) -> str:
    """The report's words for an int4 build: the block size and accuracy level it was made with."""
    arithmetic = {1: "float32", 4: "INT8"}.get(inputs.accuracy_level, "ONNX Runtime's choice of")
    return (f"4-bit weight-only matrices (ONNX Runtime MatMulNBits, symmetric, blocks of {inputs.block_size}, "
            f"accuracy_level {inputs.accuracy_level}: {arithmetic} arithmetic), float biases and activations")


def _build_file(build: Callable, fp32_path: str | Path, out_path: str | Path, **inputs) -> Path:
    """``build`` from the ONNX file ``fp32_path`` to ``out_path`` (written atomically), scratch files beside it."""
    import onnx

    out_path = Path(out_path)
    model = onnx.load(str(fp32_path))
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quantize.") as workdir:
        built = build(model, BuildInputs(Path(workdir), **inputs))
    with atomic_file(out_path, suffix=".tmp.onnx") as tmp:
        onnx.save(built, str(tmp))
    return out_path


# ----------------------------------------------------------------------------- the files an artifact ships


@dataclass
class ShippedModels:
    """The ONNX files one built model becomes in an artifact."""

    #: model.onnx: parsable by TensorRT as it is (INT32 bias DequantizeLinear folded to float initializers).
    model: object
    #: model.cpu.onnx: the builder's own graph where it differs (ONNX Runtime's CPU kernels fuse its INT32
    #: bias into QGemm), else None.
    cpu_model: object | None
    rewrites: list[str]


def shipped_models(model) -> ShippedModels:
    """What avf-compress writes for a built model (it takes ``model`` over as model.cpu.onnx where one is kept).

    Decided by measurement (ONNX Runtime 1.32 CPU, batch 1, one thread, interleaved rounds; random-weight
    Attend-Fusion): the folded graph is what TensorRT parses, but ONNX Runtime's CPU provider then runs
    DequantizeLinear + float Gemm instead of fused QGemm -- 4.9 ms against 2.1 ms p50 at paper size (3862
    classes, width 2048), equal on a tiny model -- with the same probabilities (largest difference 6e-8).
    So every model with INT32 bias dequantization (static INT8) ships both files; other precisions one.
    """
    from avf.compress.tensorrt_check import tensorrt_graph

    folded, rewrites = tensorrt_graph(model)
    if not rewrites:
        return ShippedModels(model, None, [])
    return ShippedModels(folded, model, rewrites)


# ----------------------------------------------------------------------------- graph helpers


def quantizable_nodes(model) -> list[str]:
    """Names of the Gemm/MatMul nodes the INT8 quantizer works on, in graph order (of a model or an ONNX file)."""
    if isinstance(model, (str, Path)):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in ("Gemm", "MatMul")]


def graph_input_names(model) -> list[str]:
    """The inputs a caller feeds (a single-modality model may have one); initializers listed as inputs excluded."""
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def keep_logits_float(model) -> int:
    """Remove the Q/DQ pair between the last linear layer and the sigmoid, in place; returns pairs removed.

    Ranking thousands of classes needs finer logits than 8 bits: on real YouTube-8M data an INT8
    logit (step ~0.1 over +-15) alone cost 2-3% of GAP, while the INT8 matrix products before it
    cost nothing measurable. The classifier still multiplies in INT8; only its output stays float
    (ONNX Runtime's QGemm and TensorRT both produce float output from INT8 inputs).
    """
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
    _drop_unused_initializers(graph)
    return removed


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)


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
