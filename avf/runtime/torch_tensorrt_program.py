"""``--backend torch-tensorrt``: the ``model.ep`` program ``avf-compress --backend torch-tensorrt`` compiled.

It is an ExportedProgram whose TensorRT engines Torch-TensorRT's runtime ops execute; loading it
needs the ``torch-tensorrt`` extra and a CUDA GPU, and :func:`unavailable_reason` says which is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avf.compress.torch_tensorrt_engine import ENGINE_FILE as PROGRAM_FILE
from avf.compress.torch_tensorrt_engine import unavailable_reason
from avf.errors import InputError
from avf.runtime.runner import MODEL_FILE, RunnerBase, RunnerFacts, RunOptions, Target


class TorchTensorRTProgramRunner(RunnerBase):
    """Runs a saved ``model.ep`` on the GPU: numpy in, probabilities out.

    The program does not record its I/O sizes in a form read here, so ``inputs`` and ``num_classes``
    come from the artifact's report, and precision and model name from the ONNX it was compiled beside.
    """

    def __init__(self, path: str | Path, onnx_path: str | Path, inputs: dict[str, int], num_classes: int,
                 backend: str = "torch-tensorrt"):
        path = Path(path)
        reason = unavailable_reason()
        if reason:
            raise InputError(path, f"--backend torch-tensorrt: {reason}")
        if not path.is_file():
            raise InputError(path, "no Torch-TensorRT program: compress with --backend torch-tensorrt")
        import torch
        import torch_tensorrt  # (registers the TensorRT runtime ops the program calls)

        self.torch = torch
        self.module = torch.export.load(str(path)).module()
        from avf.compress.export import read_metadata

        metadata = read_metadata(onnx_path)
        self.facts = RunnerFacts(
            backend=backend, device="cuda", precision=metadata.get("precision", "unknown"), model=metadata.get("model"),
            inputs=inputs, num_classes=num_classes, runtime={"torch_tensorrt": torch_tensorrt.__version__},
            versions={"torch": torch.__version__, "torch_tensorrt": torch_tensorrt.__version__})

    def run(self, rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            out = self.module(torch.from_numpy(rgb).cuda(), torch.from_numpy(audio).cuda())
        return out.float().cpu().numpy()


def open_runner(target: Target, options: RunOptions) -> RunnerBase:
    io = target.report["io"]["inputs"]
    return TorchTensorRTProgramRunner(target.path / PROGRAM_FILE, target.path / MODEL_FILE,
                                      {name: io[name][1] for name in ("rgb", "audio")}, target.report["num_classes"],
                                      options.backend)
