"""TensorRT engines built from the artifact's ONNX (the ``tensorrt`` extra, on an NVIDIA GPU).

The ONNX graph is parsed by TensorRT's own parser; precision comes from the graph (explicit
Q/DQ for INT8) plus the builder flags, and one optimisation profile covers the batch range.
Where TensorRT or a GPU is missing, :func:`unavailable_reason` says why and nothing is built.
"""

from __future__ import annotations

from pathlib import Path

from avf.atomic import atomic_file


def unavailable_reason() -> str | None:
    """None when an engine can be built here, else a one-line reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'avf[tensorrt]' on a machine with an NVIDIA GPU)"
    try:
        import torch
    except ImportError:
        return "PyTorch is needed to find the CUDA device"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str,
                 min_batch: int = 1, opt_batch: int = 8, max_batch: int = 64, workspace_gib: float = 2.0) -> dict:
    """Parse ``onnx_path``, build a serialized engine for ``precision``; returns build facts."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # lets layers without Q/DQ run in half precision
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        features = tensor.shape[1]
        profile.set_shape(tensor.name, (min_batch, features), (opt_batch, features), (max_batch, features))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path = Path(engine_path)
    with atomic_file(engine_path) as tmp:
        tmp.write_bytes(serialized)
    import torch

    return {"built": True, "file": engine_path.name, "tensorrt": trt.__version__, "precision": precision,
            "batch_profile": {"min": min_batch, "opt": opt_batch, "max": max_batch},
            "device": torch.cuda.get_device_name(0),
            "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
