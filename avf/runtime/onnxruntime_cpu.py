"""``--backend onnxruntime``: an artifact's ``model.onnx`` in ONNX Runtime on the CPU, the way it is deployed.

It is also what the retention gate and ``avf tune`` score an artifact with. Asked for ``--device
cuda``, this backend runs ONNX Runtime's CUDA provider instead (:mod:`avf.runtime.onnxruntime_gpu`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avf.errors import InputError
from avf.runtime.runner import MODEL_FILE, RunnerBase, RunnerFacts, RunOptions, Target


def open_session(path: Path, threads: int | None, providers: list, model_file: Path | None = None):
    """An ONNX Runtime session over ``model_file`` (default ``path``), fully optimised, quiet, on ``threads``;
    a model it cannot load is one InputError naming ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_file or path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InputError(path, f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc


class OnnxRuntimeCpuRunner(RunnerBase):
    """An ONNX Runtime CPU session over ``rgb``/``audio`` -> ``probabilities``."""

    def __init__(self, path: str | Path, threads: int | None = None, backend: str = "onnxruntime"):
        import onnxruntime as ort

        self.path = Path(path)
        self.session = open_session(self.path, threads, ["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"rgb", "audio"}:
            raise InputError(self.path, f"expected inputs rgb and audio, found {', '.join(inputs)}")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.facts = RunnerFacts(
            backend=backend, device="cpu", precision=self.metadata.get("precision", "unknown"),
            model=self.metadata.get("model"), inputs={name: inputs[name].shape[1] for name in ("rgb", "audio")},
            num_classes=self.session.get_outputs()[0].shape[1], runtime={"providers": self.session.get_providers()},
            versions={"onnxruntime": ort.__version__})

    def run(self, rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"rgb": np.ascontiguousarray(rgb, np.float32),
                                                    "audio": np.ascontiguousarray(audio, np.float32)})[0]


def open_runner(target: Target, options: RunOptions) -> RunnerBase:
    if options.device == "cuda":  # --backend onnxruntime --device cuda: ONNX Runtime's CUDA provider, checked
        from avf.runtime.onnxruntime_gpu import OnnxRuntimeGpuRunner

        return OnnxRuntimeGpuRunner(target.path / MODEL_FILE, "cuda", options.backend, threads=options.threads)
    from avf.compress.report import cpu_model_name

    # An INT8 artifact's model.onnx is TensorRT-parsable; its CPU-optimal form (fused QGemm) is model.cpu.onnx,
    # listed and hashed in report.json like every file (open_artifact verified it).
    name = cpu_model_name(target.report["files"]) if target.report is not None else MODEL_FILE
    return OnnxRuntimeCpuRunner(target.path / name, threads=options.threads, backend=options.backend)
