"""``--backend tensorrt``: the serialized TensorRT engine (``model.plan``) avf-compress built into an artifact.

TensorRT 10/11's name-based API (the engine is strongly typed, see :mod:`avf.compress.tensorrt_engine`):
the engine's I/O tensors are found by name (rgb, audio, probabilities), shapes are set per call
within the engine's optimisation profile, and device buffers are PyTorch CUDA tensors, so no extra
CUDA binding library is needed. Measured latency includes the host-to-device copy of the request
and the copy of the probabilities back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avf.compress.tensorrt_engine import unavailable_reason
from avf.errors import InputError
from avf.runtime.runner import MODEL_FILE, RunnerBase, RunnerFacts, RunOptions, Target


class TensorRTPlanRunner(RunnerBase):
    """``run(rgb, audio) -> probabilities`` over a deserialized engine on the current CUDA device.

    ``onnx_path`` is the ONNX the engine was built from: its metadata names the precision and model.
    """

    def __init__(self, engine_path: str | Path, onnx_path: str | Path, backend: str = "tensorrt"):
        self.path = Path(engine_path)
        reason = unavailable_reason()
        if reason:
            raise InputError(self.path, f"cannot run a TensorRT engine here: {reason}")
        if not self.path.is_file():
            raise InputError(self.path, "no TensorRT engine here: run avf-compress on a machine with TensorRT "
                                        "and an NVIDIA GPU to build model.plan")
        import tensorrt as trt
        import torch

        self._torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise InputError(self.path, "TensorRT cannot deserialize this engine (built by another TensorRT "
                                        "version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if not inputs or not set(inputs) <= {"rgb", "audio"} or outputs != ["probabilities"]:
            raise InputError(self.path, f"expected inputs rgb and/or audio and output probabilities, found {', '.join(names)}")
        self.input_names = inputs  # a single-modality model's engine has one
        self.num_classes = self.engine.get_tensor_shape("probabilities")[1]
        self.min_batch, _, self.max_batch = (shape[0] for shape in self.engine.get_tensor_profile_shape(inputs[0], 0))
        self.output_dtype = {trt.float32: torch.float32, trt.float16: torch.float16}[
            self.engine.get_tensor_dtype("probabilities")]
        self.stream = torch.cuda.Stream()
        from avf.compress.export import read_metadata

        metadata = read_metadata(onnx_path)
        self.facts = RunnerFacts(
            backend=backend, device="cuda", precision=metadata.get("precision", "unknown"), model=metadata.get("model"),
            inputs={name: int(self.engine.get_tensor_shape(name)[1]) for name in ("rgb", "audio") if name in inputs},
            num_classes=int(self.num_classes),
            runtime={"tensorrt": trt.__version__, "batch_range": [int(self.min_batch), int(self.max_batch)]},
            versions={"tensorrt": trt.__version__, "torch": torch.__version__})

    def run(self, rgb: np.ndarray | None, audio: np.ndarray | None) -> np.ndarray:
        torch = self._torch
        batch = (rgb if rgb is not None else audio).shape[0]
        if not self.min_batch <= batch <= self.max_batch:
            raise InputError(self.path, f"batch {batch} is outside the engine's profile "
                                        f"({self.min_batch}..{self.max_batch}); rebuild it for larger batches")
        with torch.cuda.stream(self.stream):
            given = {"rgb": rgb, "audio": audio}
            tensors = {name: torch.from_numpy(np.ascontiguousarray(given[name], np.float32)).cuda(non_blocking=True)
                       for name in self.input_names}
            out = torch.empty((batch, self.num_classes), dtype=self.output_dtype, device="cuda")
            for name, tensor in tensors.items():
                self.context.set_input_shape(name, tuple(tensor.shape))
            for name, tensor in (*tensors.items(), ("probabilities", out)):
                self.context.set_tensor_address(name, tensor.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.path}: TensorRT execution failed")
            result = out.float().cpu()  # waits for the stream
        return result.numpy()


def open_runner(target: Target, options: RunOptions) -> RunnerBase:
    from avf.compress.pipeline import ENGINE_FILE

    return TensorRTPlanRunner(target.path / ENGINE_FILE, target.path / MODEL_FILE, options.backend)
