"""Is an ONNX artifact something TensorRT can build? Checked here, on the CPU, without TensorRT.

TensorRT itself (its ONNX parser, or Polygraphy's ``inspect capability``, which drives that
parser) is the final word, but it needs TensorRT and in practice a GPU, so it never runs in CI.
This module checks what can be known from the file alone, against NVIDIA's published rules:

* the opset of every node's domain: only the default ONNX domain, opset 9 to 24 (onnx-tensorrt's
  operator table for TensorRT 10.15, the oldest table naming the 10.x/11.x range we target);
* every operator against that table (supported at all, and the element type of its data input);
* Q/DQ: ``QuantizeLinear`` from FP32/FP16/BF16 to INT8 with zero points that are all zero;
  ``DequantizeLinear`` from INT8/FP8/FP4/INT4 only (so no INT32 bias DQ, NVIDIA/TensorRT#4542),
  zero points all zero, scales constant, finite and positive;
* I/O: float32 inputs ``(batch, features)`` and outputs ``(batch, classes)`` whose batch axis
  is dynamic and every other axis a fixed size, so one optimisation profile covers it;
* ``onnx.checker`` and strict shape inference pass.

:func:`tensorrt_graph` folds every INT32 bias ``DequantizeLinear`` into a float initializer (ONNX
Runtime's quantizer writes biases that way so its CPU kernels can fuse QGemm; TensorRT's parser
refuses them, NVIDIA/TensorRT#4542). avf-compress applies it to the file it ships: the INT8
artifact's ``model.onnx`` is the folded graph, which ``trtexec --onnx=model.onnx`` parses as it is,
and ``model.cpu.onnx`` beside it keeps the INT32 form for ONNX Runtime's CPU provider (measured 2.3x
faster at batch 1 on a paper-size Attend-Fusion, same probabilities to 6e-8). The check below is
made on the file as shipped: nothing is rewritten at check or build time, so an INT32
``DequantizeLinear`` is reported as incompatible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# onnx-tensorrt docs/operators.md at the TensorRT 10.15 GA release ("supports operators in the
# inclusive range of opset 9 to opset 24"), https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md
TABLE_SOURCE = "onnx-tensorrt docs/operators.md, TensorRT 10.15 GA"
OPSET_RANGE = (9, 24)
_F = ("FP32", "FP16", "BF16")
_FI = _F + ("INT32", "INT64")
_FIB = _FI + ("BOOL",)
SUPPORTED_TYPES: dict[str, tuple[str, ...]] = {
    **{op: _F for op in (
        "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Ceil", "Celu",
        "Clip", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "Dropout", "Einsum", "Elu", "Erf", "Exp", "Floor",
        "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "GRU", "HardSigmoid",
        "HardSwish", "Hardmax", "ImageScaler", "InstanceNormalization", "IsInf", "LayerNormalization", "LeakyRelu",
        "Log", "LogSoftmax", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "MaxPool",
        "MeanVarianceNormalization", "PRelu", "ParametricSoftplus", "RandomNormal", "RandomNormalLike",
        "RandomUniform", "RandomUniformLike", "Reciprocal", "Resize", "RMSNormalization", "RNN", "RotaryEmbedding",
        "Round", "ScaledTanh", "Scan", "Selu", "Sigmoid", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt",
        "Tan", "Tanh", "ThresholdedRelu", "Upsample", "QuantizeLinear")},
    **{op: _FI for op in (
        "Abs", "Add", "ArgMax", "ArgMin", "DepthToSpace", "Div", "Equal", "Greater", "GreaterOrEqual", "IsNaN",
        "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Pad", "Pow", "Range", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare", "Relu", "Scatter", "ScatterElements", "ScatterND", "Shrink", "Sign", "SpaceToDepth", "Sub",
        "Sum", "TopK")},
    **{op: _FIB for op in (
        "Concat", "Expand", "EyeLike", "Flatten", "Gather", "GatherElements", "GatherND", "Identity", "If", "Loop",
        "OneHot", "Reshape", "ReverseSequence", "Shape", "Size", "Slice", "Split", "Squeeze", "Tile", "Transpose",
        "Trilu", "Unsqueeze", "Where")},
    **{op: ("BOOL",) for op in ("And", "Not", "Or", "Xor")},
    "Cast": _FIB + ("UINT8",), "CastLike": _FIB + ("UINT8",),
    "Constant": _FIB + ("FP8", "FP4", "INT4"), "ConstantOfShape": _FIB + ("FP8", "FP4", "INT4"),
    "DequantizeLinear": ("INT8", "FP8", "FP4", "INT4"),
    "Mean": _FI + ("FP8",), "Gelu": _FI + ("INT8",), "Attention": _F + ("INT8", "FP8"),
    "BlackmanWindow": ("FP32", "FP16"), "HammingWindow": ("FP32", "FP16"), "HannWindow": ("FP32", "FP16"),
    "DeformConv": ("FP32", "FP16"), "GridSample": ("FP32", "FP16"), "Mish": ("FP32", "FP16"),
    "NonMaxSuppression": ("FP32", "FP16"), "NonZero": ("FP32", "FP16"), "RoiAlign": ("FP32", "FP16"),
    "STFT": ("FP32",), "TensorScatter": _F + ("INT32",),
}
# Listed as "N" in the table (the ones an exporter or quantizer can plausibly emit).
UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
    "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat",
    "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
})
# ONNX TensorProto element types by the table's names.
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE",
               16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 22: "INT4", 23: "FP4"}


def _type_name(elem_type: int) -> str:
    return _TYPE_NAMES.get(elem_type, f"type {elem_type}")


def tensorrt_graph(model):
    """A copy of ``model`` as avf gives it to TensorRT, and the list of rewrites made.

    Every ``DequantizeLinear`` of an INT32 initializer (a quantized bias) becomes a float
    initializer of the same value, ``(q - zero_point) * scale`` with the node's axis, in the
    dtype of its scale. Nothing else changes.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    folded = []
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
            continue
        if initializers[node.input[0]].data_type != onnx.TensorProto.INT32:
            continue
        if node.input[1] not in initializers:
            continue
        q = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(initializers[node.input[1]])
        zero = (numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
                if len(node.input) > 2 and node.input[2] in initializers else 0.0)
        axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and q.ndim > 0:
            shape = [1] * q.ndim
            shape[axis % q.ndim] = -1
            scale_b = scale.astype(np.float64).reshape(shape)
            zero_b = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
        else:
            scale_b, zero_b = scale.astype(np.float64), zero
        value = ((q - zero_b) * scale_b).astype(scale.dtype)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        graph.node.remove(node)
        folded.append(node.output[0])
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    rewrites = ([f"{len(folded)} INT32 bias DequantizeLinear folded into float initializers "
                 "(TensorRT's DequantizeLinear takes INT8/FP8/FP4/INT4 only)"] if folded else [])
    return model, rewrites


def check_model(model) -> list[str]:
    """Every reason TensorRT would refuse ``model`` (an onnx ModelProto), or an empty list."""
    import onnx
    from onnx import numpy_helper

    problems: list[str] = []
    try:
        onnx.checker.check_model(model)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        return [f"ONNX checker or shape inference failed: {str(exc).splitlines()[0]}"]
    graph = inferred.graph

    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    used_domains = {node.domain or "ai.onnx" for node in graph.node}
    for domain in sorted(used_domains - {"ai.onnx"}):
        ops = sorted({n.op_type for n in graph.node if (n.domain or "ai.onnx") == domain})
        problems.append(f"operators from domain {domain!r} ({', '.join(ops)}): TensorRT parses the default ONNX domain only")
    opset = opsets.get("ai.onnx")
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset}: TensorRT 10/11 parse opset {OPSET_RANGE[0]} to {OPSET_RANGE[1]}")

    initializers = {init.name: init for init in graph.initializer}
    types = {init.name: init.data_type for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for node in graph.node:
        if (node.domain or "ai.onnx") != "ai.onnx":
            continue
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.op_type in UNSUPPORTED or node.op_type not in SUPPORTED_TYPES:
            problems.append(f"{where}: operator not supported by TensorRT's ONNX parser ({TABLE_SOURCE})")
            continue
        if (node.op_type == "DequantizeLinear" and node.input[0] in types
                and types[node.input[0]] == onnx.TensorProto.INT32):
            problems.append(f"{where}: INT32 DequantizeLinear (a quantized bias as ONNX Runtime writes it); "
                            "TensorRT's DequantizeLinear takes INT8/FP8/FP4/INT4 only -- fold it into a float "
                            "initializer (avf.compress.tensorrt_check.tensorrt_graph; avf-compress ships it folded)")
            continue
        if node.input and node.input[0] and node.input[0] in types:
            got = _type_name(types[node.input[0]])
            if got not in SUPPORTED_TYPES[node.op_type]:
                problems.append(f"{where}: input type {got} not supported (TensorRT takes "
                                f"{', '.join(SUPPORTED_TYPES[node.op_type])})")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _check_qdq(node, where, initializers, numpy_helper)

    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            if tensor.elem_type != onnx.TensorProto.FLOAT:
                problems.append(f"{kind} {value.name!r} is {_type_name(tensor.elem_type)}, expected FP32")
            dims = list(tensor.shape.dim)
            if len(dims) != 2:
                problems.append(f"{kind} {value.name!r} has rank {len(dims)}, expected (batch, features)")
                continue
            if dims[0].HasField("dim_value"):
                problems.append(f"{kind} {value.name!r}: batch axis fixed at {dims[0].dim_value}, expected dynamic")
            if not (dims[1].HasField("dim_value") and dims[1].dim_value > 0):
                problems.append(f"{kind} {value.name!r}: feature axis is not a fixed size "
                                "(TensorRT's optimisation profile needs it)")
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.DOUBLE:
            problems.append(f"initializer {init.name!r} is DOUBLE (TensorRT casts it down, clamping)")
    return problems


def _check_qdq(node, where: str, initializers: dict, numpy_helper) -> list[str]:
    problems = []
    scale_name = node.input[1] if len(node.input) > 1 else ""
    if scale_name not in initializers:
        problems.append(f"{where}: scale {scale_name!r} is not a constant initializer")
    else:
        scale = numpy_helper.to_array(initializers[scale_name]).astype(np.float64)
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            problems.append(f"{where}: scale is not finite and positive")
    if len(node.input) > 2 and node.input[2]:
        zero_name = node.input[2]
        if zero_name not in initializers:
            problems.append(f"{where}: zero point {zero_name!r} is not a constant initializer")
        else:
            zero = initializers[zero_name]
            if np.any(numpy_helper.to_array(zero) != 0):
                problems.append(f"{where}: zero point is not zero (TensorRT quantization is symmetric)")
            if node.op_type == "QuantizeLinear" and _type_name(zero.data_type) not in ("INT8", "FP8", "FP4", "INT4"):
                problems.append(f"{where}: quantizes to {_type_name(zero.data_type)} (TensorRT: INT8/FP8/FP4/INT4)")
    elif node.op_type == "QuantizeLinear":
        problems.append(f"{where}: no zero point, so it quantizes to UINT8 (TensorRT: INT8/FP8/FP4/INT4)")
    return problems


def check_tensorrt_compatibility(model) -> dict:
    """The report entry for an ONNX model as shipped (a file, or the ``ModelProto`` avf-compress writes as
    model.onnx): ``tensorrt_compatible`` and, when false, what is not.

    Nothing is rewritten first: what is checked is what ``trtexec --onnx`` (or avf-deploy build) parses.
    """
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    problems = check_model(model)
    return {"tensorrt_compatible": not problems, "problems": problems,
            "checked": f"the file as shipped (no rewrite): opset, operators and input types against {TABLE_SOURCE} "
                       f"(opset {OPSET_RANGE[0]}-{OPSET_RANGE[1]}), Q/DQ types (no INT32 DequantizeLinear), scales "
                       "and zero points, float32 I/O with a dynamic batch axis and fixed feature axes, onnx.checker "
                       "and strict shape inference; checked without TensorRT, whose parser has the final word"}
