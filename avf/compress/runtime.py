"""Running an exported model through its own runtime (ONNX Runtime), the way it will be deployed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avf.errors import InputError


def ort_providers(device: str = "cpu") -> list[str]:
    """ONNX Runtime providers for ``device`` ('cpu', 'cuda', 'tensorrt'), best first, that exist here."""
    import onnxruntime as ort

    wanted = {"cpu": ["CPUExecutionProvider"],
              "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}[device]
    available = set(ort.get_available_providers())
    missing = [p for p in wanted[:-1] if p not in available]
    if missing:
        raise RuntimeError(f"ONNX Runtime here has no {', '.join(missing)} (install onnxruntime-gpu)")
    return wanted


class OnnxModel:
    """An ONNX Runtime session over ``rgb``/``audio`` -> ``probabilities``, run in batches."""

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "cpu"):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=ort_providers(device))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise InputError(self.path, f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"rgb", "audio"}:
            raise InputError(self.path, f"expected inputs rgb and audio, found {', '.join(inputs)}")
        self.rgb_dim, self.audio_dim = inputs["rgb"].shape[1], inputs["audio"].shape[1]
        self.num_classes = self.session.get_outputs()[0].shape[1]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"rgb": np.ascontiguousarray(rgb, np.float32),
                                                    "audio": np.ascontiguousarray(audio, np.float32)})[0]
