"""What avf-bench and avf predict run: an avf-compress artifact or a checkpoint, on one backend.

Artifacts run on ONNX Runtime (CPU, CUDA or TensorRT execution provider) or, when avf-compress
built one, as a TensorRT engine. Checkpoints run on PyTorch, eager or torch.compile, in
FP32/FP16/BF16, on CUDA optionally from CUDA graphs. So the reference and the compressed model
are measured through the same harness.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from avf.errors import InputError

ARTIFACT_BACKENDS = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt", "torch-tensorrt")
CHECKPOINT_BACKENDS = ("pytorch", "torch-compile")
BACKENDS = ("auto", *ARTIFACT_BACKENDS, *CHECKPOINT_BACKENDS)
ORT_DEVICE = {"onnxruntime": None, "onnxruntime-cuda": "cuda", "onnxruntime-tensorrt": "tensorrt"}


def load_target(target: Path, backend: str = "auto", threads: int | None = None, device: str = "cpu",
                precision: str | None = None, cuda_graphs: bool = False) -> tuple[Callable, dict]:
    """A ``run(rgb, audio) -> probabilities`` callable and facts about what runs (model, backend,
    precision, input sizes, class count and vocabulary hash, device).

    ``precision`` applies to checkpoints (fp32 by default); an artifact's precision is the
    one avf-compress gave it. ``cuda_graphs`` applies to checkpoints on CUDA.
    """
    if backend not in BACKENDS:
        raise InputError(target, f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if target.is_dir():
        return _load_artifact(target, backend, threads, device, precision, cuda_graphs)
    return _load_checkpoint(target, backend, threads, device, precision, cuda_graphs)


def _load_artifact(target: Path, backend: str, threads, device: str, precision, cuda_graphs: bool):
    if backend in CHECKPOINT_BACKENDS:
        raise InputError(target, f"an artifact runs on {', '.join(ARTIFACT_BACKENDS)}, not {backend}")
    if precision or cuda_graphs:
        raise InputError(target, "--precision and --cuda-graphs apply to checkpoints; an artifact keeps the "
                                 "precision avf-compress gave it")
    from avf.deploy.artifact import open_artifact

    report = open_artifact(target, deploying=False)  # report checked, every file re-hashed
    backend = "onnxruntime" if backend == "auto" else backend
    if backend == "tensorrt":
        from avf.compress.pipeline import ENGINE_FILE
        from avf.deploy.tensorrt_runner import TensorRTModel

        model = TensorRTModel(target / ENGINE_FILE)
        import tensorrt

        runtime = {"tensorrt": tensorrt.__version__, "batch_range": [model.min_batch, model.max_batch]}
        device = "cuda"
    elif backend == "torch-tensorrt":  # the model.ep avf-compress --backend torch-tensorrt compiled
        from avf.compress.torch_tensorrt_engine import ENGINE_FILE as PROGRAM_FILE
        from avf.compress.torch_tensorrt_engine import TorchTensorRTModel

        model = TorchTensorRTModel(target / PROGRAM_FILE)
        import torch_tensorrt

        model.rgb_dim, model.audio_dim = report["io"]["inputs"]["rgb"][1], report["io"]["inputs"]["audio"][1]
        model.num_classes = report["num_classes"]
        runtime = {"torch_tensorrt": torch_tensorrt.__version__}
        device = "cuda"
    else:
        ort_device = ORT_DEVICE[backend] or ("cuda" if device == "cuda" else "cpu")
        if ort_device == "cpu":
            from avf.compress.runtime import OnnxModel

            model = OnnxModel(target / "model.onnx", threads=threads, device="cpu")
            runtime = {"providers": model.session.get_providers()}
        else:  # configured provider options; refused when ONNX Runtime falls back to another provider
            from avf.compress.ort_gpu import GpuOnnxModel

            model = GpuOnnxModel(target / "model.onnx", ort_device, backend, threads=threads)
            runtime = {"providers": model.session.get_providers(), "provider_options": model.provider_options}
        device = "cpu" if ort_device == "cpu" else "cuda"
    if hasattr(model, "metadata"):
        metadata = model.metadata
    else:
        from avf.compress.export import read_metadata

        metadata = read_metadata(target / "model.onnx")
    # The manifest checks a bench against its artifact by this hash (paths differ across machines);
    # open_artifact has just verified the file against it.
    facts = {"kind": "artifact", "onnx_sha256": report["files"]["model.onnx"]["sha256"], "backend": backend, **runtime, "precision": metadata.get("precision", "unknown"),
             "model": metadata.get("model"), "rgb_dim": model.rgb_dim, "audio_dim": model.audio_dim,
             "num_classes": model.num_classes, "vocabulary_sha256": report.get("vocabulary_sha256") or None,
             "accepted": report.get("accepted"), "device": device}
    return model, facts


def _load_checkpoint(target: Path, backend: str, threads, device: str, precision, cuda_graphs: bool):
    if backend in ARTIFACT_BACKENDS:
        raise InputError(target, f"a checkpoint runs on pytorch or torch-compile; compress it for {backend}")
    import torch

    from avf.deploy.torch_runner import PRECISIONS, torch_runner
    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint

    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise InputError(target, f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    payload = load_checkpoint(target)
    model = model_from_checkpoint(payload, target)
    if threads:
        torch.set_num_threads(threads)
    chosen = "pytorch" if backend == "auto" else backend
    run = torch_runner(model, device, precision, compile_model=chosen == "torch-compile", cuda_graphs=cuda_graphs,
                       source=target)
    config = payload["model"]
    facts = {"kind": "checkpoint", "backend": chosen, "precision": precision, "cuda_graphs": cuda_graphs,
             "model": config["name"], "rgb_dim": config["rgb_dim"], "audio_dim": config["audio_dim"],
             "num_classes": payload["num_classes"], "vocabulary_sha256": payload.get("vocabulary_sha256"),
             "device": device}
    return run, facts
