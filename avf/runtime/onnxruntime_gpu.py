"""``--backend onnxruntime-cuda`` / ``onnxruntime-tensorrt``: ONNX Runtime's CUDA and TensorRT execution
providers, configured and checked.

Two things the plain CPU session (:mod:`avf.runtime.onnxruntime_cpu`) does not need:

* **Provider options.** The TensorRT provider gets INT8 enabled for Q/DQ artifacts (explicit
  quantization; no calibration table), FP16 for FP16 artifacts, one optimisation profile over the
  batch range (``trt_profile_min/opt/max_shapes``; without it every new batch size rebuilds the
  engine), and an engine and timing cache on disk (without it each session rebuilds during the
  warm-up). It is given the artifact's TensorRT graph (INT32 bias dequantization folded, see
  :mod:`avf.compress.tensorrt_check`), written once into that cache.
* **No silent fallback.** ONNX Runtime falls back to the next provider when one cannot load
  (missing CUDA/cuDNN/TensorRT libraries), so a session asked for TensorRT can run on CUDA or
  the CPU. After the session is created, the first provider it reports must be the one asked for.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from avf.atomic import atomic_file
from avf.errors import InputError
from avf.runtime.onnxruntime_cpu import open_session
from avf.runtime.runner import MODEL_FILE, RunnerBase, RunnerFacts, RunOptions, Target

PROVIDER = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
#: Which provider each backend name of this module asks for.
BACKEND_DEVICE = {"onnxruntime-cuda": "cuda", "onnxruntime-tensorrt": "tensorrt"}
BATCH_PROFILE = (1, 8, 64)


def cache_root() -> Path:
    """Where engines built by ONNX Runtime's TensorRT provider are kept (``AVF_CACHE`` or ~/.cache/avf)."""
    base = os.environ.get("AVF_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "avf")
    return Path(base) / "ort-tensorrt"


def shape_string(dims: dict[str, int], batch: int) -> str:
    """``rgb:8x1024,audio:8x128``: the TensorRT provider's profile shape syntax."""
    return ",".join(f"{name}:{batch}x{features}" for name, features in dims.items())


def provider_chain(device: str, precision: str, dims: dict[str, int], cache_dir: Path | None = None,
                   device_id: int = 0, batch_profile: tuple[int, int, int] = BATCH_PROFILE) -> list:
    """``providers=`` for ``InferenceSession``: (name, options) pairs, the one asked for first."""
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if device == "cuda":
        return [cuda, "CPUExecutionProvider"]
    if device != "tensorrt":
        raise ValueError(f"device must be cuda or tensorrt, not {device!r}")
    low, opt, high = batch_profile
    options = {
        "device_id": device_id,
        "trt_int8_enable": precision == "int8",  # explicit Q/DQ: scales come from the graph
        "trt_fp16_enable": precision == "fp16",
        "trt_profile_min_shapes": shape_string(dims, low),
        "trt_profile_opt_shapes": shape_string(dims, opt),
        "trt_profile_max_shapes": shape_string(dims, high),
    }
    if cache_dir is not None:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir),
                       trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir))
    return [("TensorrtExecutionProvider", options), cuda, "CPUExecutionProvider"]


def require_first_provider(session, wanted: str, path, backend: str) -> None:
    """Refuse a session whose first provider is not ``wanted`` (ONNX Runtime fell back silently)."""
    providers = list(session.get_providers())
    if not providers or providers[0] != wanted:
        got = providers[0] if providers else "no provider"
        raise InputError(path, f"--backend {backend}: ONNX Runtime could not start {wanted} and fell back to {got} "
                               "(its CUDA/cuDNN/TensorRT libraries are missing or do not match onnxruntime-gpu); "
                               "refusing to measure another provider under this name")


def _graph_for_tensorrt(path: Path, cache_dir: Path) -> Path:
    """The artifact's TensorRT graph, written once into the cache (engines are cached beside it)."""
    import onnx

    from avf.compress.tensorrt_check import tensorrt_graph

    target = cache_dir / "model.tensorrt.onnx"
    if not target.is_file():
        model, _ = tensorrt_graph(onnx.load(str(path)))
        with atomic_file(target, suffix=".tmp.onnx") as tmp:  # a second process sees the whole file or none
            onnx.save(model, str(tmp))
    return target


class OnnxRuntimeGpuRunner(RunnerBase):
    """``run(rgb, audio) -> probabilities`` on ONNX Runtime's CUDA or TensorRT provider, checked."""

    def __init__(self, path: str | Path, device: str, backend: str, threads: int | None = None, device_id: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        wanted = PROVIDER[device]
        available = set(ort.get_available_providers())
        missing = [p for p in ([wanted, "CUDAExecutionProvider"] if device == "tensorrt" else [wanted])
                   if p not in available]
        if missing:
            raise InputError(self.path, f"--backend {backend}: ONNX Runtime here has no {', '.join(missing)} "
                                        "(install onnxruntime-gpu)")
        import onnx

        proto = onnx.load(str(self.path), load_external_data=False)
        metadata = {entry.key: entry.value for entry in proto.metadata_props}
        dims = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in proto.graph.input}
        model_file, cache_dir = self.path, None
        if device == "tensorrt":
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
            cache_dir = cache_root() / digest
            cache_dir.mkdir(parents=True, exist_ok=True)
            model_file = _graph_for_tensorrt(self.path, cache_dir)
        chain = provider_chain(device, metadata.get("precision", "fp32"), dims, cache_dir, device_id)
        self.session = open_session(self.path, threads, chain, model_file)
        require_first_provider(self.session, wanted, self.path, backend)
        self.cache_dir = cache_dir
        self.metadata = metadata
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = list(inputs)
        self.facts = RunnerFacts(
            backend=backend, device="cuda", precision=metadata.get("precision", "unknown"), model=metadata.get("model"),
            inputs={name: inputs[name].shape[1] for name in ("rgb", "audio") if name in inputs},
            num_classes=self.session.get_outputs()[0].shape[1],
            runtime={"providers": self.session.get_providers(), "provider_options": chain[0][1]},
            versions={"onnxruntime": ort.__version__})

    def run(self, rgb: np.ndarray | None, audio: np.ndarray | None) -> np.ndarray:
        feeds = {"rgb": rgb, "audio": audio}
        return self.session.run(["probabilities"], {name: np.ascontiguousarray(feeds[name], np.float32)
                                                    for name in self.input_names})[0]


def open_runner(target: Target, options: RunOptions) -> RunnerBase:
    return OnnxRuntimeGpuRunner(target.path / MODEL_FILE, BACKEND_DEVICE[options.backend], options.backend,
                                threads=options.threads)
