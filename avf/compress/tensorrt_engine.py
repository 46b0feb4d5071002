"""TensorRT engines built from the artifact's ONNX (the ``tensorrt`` extra, on an NVIDIA GPU).

Targets TensorRT 10.x and 11.x (``tensorrt>=10.0,<12``). Networks are **strongly typed**
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): every tensor's precision comes from the ONNX
graph itself -- FP16 from the FP16 artifact's types, INT8 from its Q/DQ nodes -- and no
precision builder flag is set. That is the only mode TensorRT 11 has (it removed
``BuilderFlag.FP16``/``INT8`` and weak typing; the flag is accepted and ignored there) and the
opt-in mode of TensorRT 10. TF32 is cleared where the flag exists, so FP32 layers really run in
FP32 (TensorRT enables TF32 by default on Ampere and later).

TensorRT is given :func:`avf.compress.tensorrt_check.tensorrt_graph` of the artifact (INT32 bias
dequantization folded to float initializers), after the same compatibility check avf-compress
reports. One optimisation profile covers the batch range. Where TensorRT or a GPU is missing,
:func:`unavailable_reason` says why and nothing is built.
"""

from __future__ import annotations

from pathlib import Path

from avf.atomic import atomic_file

SUPPORTED_MAJORS = (10, 11)


def unavailable_reason() -> str | None:
    """None when an engine can be built here, else a one-line reason."""
    try:
        import tensorrt
    except ImportError:
        return "TensorRT is not installed (pip install 'avf[tensorrt]' on a machine with an NVIDIA GPU)"
    major = _major(getattr(tensorrt, "__version__", "0"))
    if major not in SUPPORTED_MAJORS:
        return f"TensorRT {tensorrt.__version__} is installed; avf builds with TensorRT 10.x or 11.x"
    try:
        import torch
    except ImportError:
        return "PyTorch is needed to find the CUDA device"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def network_flags(trt) -> int:
    """Creation flags: strongly typed (required for explicit precision on 10.x, the only mode on 11.x)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def configure(config, trt, workspace_gib: float = 2.0) -> dict:
    """Builder settings for a strongly typed network; returns what was set, for the report.

    No precision flag is set (TensorRT 10 rejects them on strongly typed networks; 11 has none).
    TF32 is cleared when the flag exists, so a layer typed FP32 computes in FP32.
    """
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        config.clear_flag(tf32)
    return {"typing": "strong (precision from the ONNX types and Q/DQ nodes)",
            "tf32": "cleared" if tf32 is not None else "no TF32 flag in this TensorRT",
            "workspace_gib": workspace_gib}


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str,
                 min_batch: int = 1, opt_batch: int = 8, max_batch: int = 64, workspace_gib: float = 2.0) -> dict:
    """Parse ``onnx_path`` (as :func:`tensorrt_graph` gives it), build a serialized engine; returns build facts."""
    import onnx
    import tensorrt as trt

    from avf.compress.tensorrt_check import check_model, tensorrt_graph

    model, rewrites = tensorrt_graph(onnx.load(str(onnx_path)))
    problems = check_model(model)
    if problems:
        raise RuntimeError(f"{onnx_path} is not TensorRT-compatible: {'; '.join(problems)}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    settings = configure(config, trt, workspace_gib)
    profile = builder.create_optimization_profile()
    for name, shapes in profile_shapes(network, min_batch, opt_batch, max_batch).items():
        profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path = Path(engine_path)
    with atomic_file(engine_path) as tmp:
        tmp.write_bytes(serialized)
    import torch

    device = torch.cuda.current_device()
    return {"built": True, "file": engine_path.name, "tensorrt": trt.__version__, "precision": precision,
            "builder": settings, "graph_rewrites": rewrites,
            "batch_profile": {"min": min_batch, "opt": opt_batch, "max": max_batch},
            "device": torch.cuda.get_device_name(device),
            "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device)))}


def profile_shapes(network, min_batch: int, opt_batch: int, max_batch: int) -> dict[str, tuple]:
    """(min, opt, max) shapes per network input: the batch axis over the range, the rest as declared."""
    shapes = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        rest = tuple(tensor.shape)[1:]
        if any(d < 0 for d in rest):
            raise RuntimeError(f"input {tensor.name!r} has a dynamic axis besides the batch: {tuple(tensor.shape)}")
        shapes[tensor.name] = tuple((batch, *rest) for batch in (min_batch, opt_batch, max_batch))
    return shapes
