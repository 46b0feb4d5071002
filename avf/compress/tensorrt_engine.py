"""TensorRT engines built from the artifact's ONNX (the ``tensorrt`` extra, on an NVIDIA GPU).

Targets TensorRT 10.x and 11.x (``tensorrt>=10.0,<12``). Networks are **strongly typed**
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): every tensor's precision comes from the ONNX
graph itself -- FP16 from the FP16 artifact's types, INT8 from its Q/DQ nodes -- and no
precision builder flag is set. That is the only mode TensorRT 11 has (it removed
``BuilderFlag.FP16``/``INT8`` and weak typing; the flag is accepted and ignored there) and the
opt-in mode of TensorRT 10. TF32 is cleared where the flag exists, so FP32 layers really run in
FP32 (TensorRT enables TF32 by default on Ampere and later).

TensorRT parses the artifact's ``model.onnx`` as shipped (avf-compress writes it TensorRT-parsable:
INT32 bias dequantization already folded, see :mod:`avf.compress.tensorrt_check`), after the same
compatibility check avf-compress reports; nothing is rewritten here, so what is built is what
``trtexec --onnx=model.onnx`` would parse. One optimisation profile covers the batch range, and a
timing cache (``IBuilderConfig.create_timing_cache`` / ``set_timing_cache``, serialized back after
the build) makes a rebuild on the same GPU and TensorRT version quick. Where TensorRT or a GPU is
missing, :func:`unavailable_reason` says why and nothing is built.

One build path: avf-compress ``--backend tensorrt`` (:func:`build_engine`) and ``avf-deploy build``
(:mod:`avf.deploy.build`) both call :func:`build_serialized`. The CUDA device is found through
NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``), or PyTorch where that is what is installed, so
a JetPack device without PyTorch can build.
"""

from __future__ import annotations

from pathlib import Path

from avf.atomic import atomic_file

SUPPORTED_MAJORS = (10, 11)
INSTALL = ("pip install 'avf[tensorrt]' on a machine with an NVIDIA GPU; on Jetson, TensorRT comes from JetPack "
           "(a venv made with --system-site-packages)")


def unavailable_reason() -> str | None:
    """None when an engine can be built (or run) here, else a one-line reason naming what to install."""
    try:
        import tensorrt
    except ImportError:
        return f"TensorRT is not installed ({INSTALL})"
    major = _major(getattr(tensorrt, "__version__", "0"))
    if major not in SUPPORTED_MAJORS:
        return f"TensorRT {tensorrt.__version__} is installed; avf builds with TensorRT 10.x or 11.x"
    _, reason = cuda_device()
    return reason


def cuda_device() -> tuple[dict | None, str | None]:
    """({"name", "compute_capability"} of the current CUDA device, None), or (None, why there is none).

    Through ``cuda-python`` (``cuda.bindings.runtime``; ``cuda.cudart`` in its older layout) where it is
    installed, else PyTorch's CUDA build.
    """
    cudart = cuda_runtime()
    if cudart is not None:
        error, count = cudart.cudaGetDeviceCount()[:2]
        if int(error) != 0 or count < 1:
            return None, "no CUDA GPU is visible"
        error, device = cudart.cudaGetDevice()[:2]
        error2, props = cudart.cudaGetDeviceProperties(device)[:2]
        if int(error) != 0 or int(error2) != 0:
            return None, f"CUDA device query failed ({error}, {error2})"
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"name": name, "compute_capability": f"{props.major}.{props.minor}"}, None
    try:
        import torch
    except ImportError:
        return None, "neither cuda-python nor PyTorch is installed to reach the CUDA device (pip install 'avf[tensorrt]')"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU is visible"
    device = torch.cuda.current_device()
    return {"name": torch.cuda.get_device_name(device),
            "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device)))}, None


def cuda_runtime():
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6), or None."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart
        return cudart
    except ImportError:
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
                 min_batch: int = 1, opt_batch: int = 8, max_batch: int = 64, workspace_gib: float = 2.0,
                 timing_cache: str | Path | None = None, built_by: str = "avf-compress") -> dict:
    """:func:`build_serialized`, written to ``engine_path`` atomically; returns the build facts."""
    serialized, facts = build_serialized(onnx_path, precision, min_batch, opt_batch, max_batch, workspace_gib,
                                         timing_cache, built_by)
    engine_path = Path(engine_path)
    with atomic_file(engine_path) as tmp:
        tmp.write_bytes(serialized)
    return {**facts, "file": engine_path.name}


def build_serialized(onnx_path: str | Path, precision: str, min_batch: int = 1, opt_batch: int = 8, max_batch: int = 64,
                     workspace_gib: float = 2.0, timing_cache: str | Path | None = None,
                     built_by: str = "avf-compress") -> tuple[bytes, dict]:
    """Parse ``onnx_path`` as it is (it must pass the compatibility check as shipped) and build a serialized,
    strongly typed engine on this machine's GPU; (the engine's bytes, plain JSON build facts).

    ``timing_cache``: a file read before the build (when it exists) and written back after it (atomically).
    """
    import tensorrt as trt

    from avf.compress.tensorrt_check import check_tensorrt_compatibility

    onnx_path = Path(onnx_path)
    check = check_tensorrt_compatibility(onnx_path)
    if not check["tensorrt_compatible"]:
        raise RuntimeError(f"{onnx_path} is not TensorRT-compatible as shipped: {'; '.join(check['problems'])}")
    device, reason = cuda_device()
    if device is None:
        raise RuntimeError(f"no engine built: {reason}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    settings = configure(config, trt, workspace_gib)
    cache_facts = attach_timing_cache(config, timing_cache)
    profile = builder.create_optimization_profile()
    for name, shapes in profile_shapes(network, min_batch, opt_batch, max_batch).items():
        profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    if timing_cache is not None:
        cache_facts.update(save_timing_cache(config, timing_cache))
    return bytes(serialized), {
        "built": True, "tensorrt": trt.__version__, "precision": precision, "onnx": onnx_path.name,
        "builder": settings, "graph_rewrites": [], "timing_cache": cache_facts,
        "batch_profile": {"min": min_batch, "opt": opt_batch, "max": max_batch},
        "device": device["name"], "compute_capability": device["compute_capability"], "built_by": built_by}


def attach_timing_cache(config, timing_cache: str | Path | None) -> dict:
    """A timing cache on ``config``: loaded from the file where it exists, else empty; returns what was done."""
    data = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        data = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: a cache of another GPU/version is refused
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
        return {"file": str(timing_cache), "loaded": False,
                "note": "the cache was made by another TensorRT version or GPU; started an empty one"}
    return {"file": None if timing_cache is None else str(timing_cache), "loaded": bool(data), "bytes_in": len(data)}


def save_timing_cache(config, timing_cache: str | Path) -> dict:
    """The config's timing cache after a build, written to ``timing_cache`` atomically."""
    serialized = bytes(config.get_timing_cache().serialize())
    with atomic_file(Path(timing_cache)) as tmp:
        tmp.write_bytes(serialized)
    return {"bytes_out": len(serialized)}


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
