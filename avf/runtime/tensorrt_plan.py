"""``--backend tensorrt``: the serialized TensorRT engine (``model.plan``) built for this GPU by
``avf-deploy build`` (or avf-compress ``--backend tensorrt``).

TensorRT 10/11's name-based API (the engine is strongly typed, see :mod:`avf.compress.tensorrt_engine`):
the engine's I/O tensors are found by name (rgb, audio, probabilities), shapes are set per call
within the engine's optimisation profile. Device buffers and the stream come from NVIDIA's
``cuda-python`` (``cuda.bindings.runtime``: ``cudaMalloc``, ``cudaMemcpyAsync``), so a JetPack device
with TensorRT and CUDA but no PyTorch runs it; precision and model name come from report.json.
Measured latency includes the host-to-device copy of the request and the copy of the probabilities back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avf.compress.tensorrt_engine import cuda_runtime, unavailable_reason
from avf.errors import InputError
from avf.runtime.runner import RunnerBase, RunnerFacts, RunOptions, Target

CUDA_PYTHON = "pip install cuda-python (the CUDA major of your driver; it comes with 'avf[tensorrt]')"


def _check(result, what: str):
    """cuda-python's (error, *values) convention: the values, or RuntimeError naming the call."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"CUDA {what} failed: {error}")
    return values[0] if len(values) == 1 else values


class TensorRTPlanRunner(RunnerBase):
    """``run(rgb, audio) -> probabilities`` over a deserialized engine on the current CUDA device.

    ``report``: the artifact's checked report.json (an ArtifactReport or the same as a mapping): precision and model.
    """

    def __init__(self, engine_path: str | Path, report=None, backend: str = "tensorrt"):
        self.path = Path(engine_path)
        reason = unavailable_reason()
        if reason:
            raise InputError(self.path, f"cannot run a TensorRT engine here: {reason}")
        if not self.path.is_file():
            raise InputError(self.path, "no TensorRT engine here: run `avf-deploy build ARTIFACT` on this device "
                                        "(engines are tied to the GPU and TensorRT version) to build model.plan")
        self.cudart = cuda_runtime()
        if self.cudart is None:
            raise InputError(self.path, f"the TensorRT runner needs cuda-python for device buffers: {CUDA_PYTHON}")
        import tensorrt as trt

        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise InputError(self.path, "TensorRT cannot deserialize this engine (built by another TensorRT "
                                        "version or for another GPU? run `avf-deploy build` here)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if not inputs or not set(inputs) <= {"rgb", "audio"} or outputs != ["probabilities"]:
            raise InputError(self.path, f"expected inputs rgb and/or audio and output probabilities, found {', '.join(names)}")
        self.input_names = inputs  # a single-modality model's engine has one
        self.features = {name: int(self.engine.get_tensor_shape(name)[1]) for name in inputs}
        self.num_classes = int(self.engine.get_tensor_shape("probabilities")[1])
        self.min_batch, _, self.max_batch = (int(shape[0]) for shape in self.engine.get_tensor_profile_shape(inputs[0], 0))
        self.output_dtype = {trt.float32: np.float32, trt.float16: np.float16}[self.engine.get_tensor_dtype("probabilities")]
        self.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        # Buffers for the largest batch of the profile, allocated once; each call uses the first rows.
        self.buffers = {name: _check(self.cudart.cudaMalloc(self.max_batch * width * 4), "cudaMalloc")
                        for name, width in self.features.items()}
        out_bytes = self.max_batch * self.num_classes * np.dtype(self.output_dtype).itemsize
        self.buffers["probabilities"] = _check(self.cudart.cudaMalloc(out_bytes), "cudaMalloc")
        for name, pointer in self.buffers.items():
            self.context.set_tensor_address(name, int(pointer))
        report = report or {}
        stages = report.get("stages") or [{}]
        precision = (stages[-1] or {}).get("precision", "unknown")
        model = (report.get("model") or {}).get("name")
        self.facts = RunnerFacts(
            backend=backend, device="cuda", precision=precision, model=model, inputs=dict(self.features),
            num_classes=self.num_classes,
            runtime={"tensorrt": trt.__version__, "batch_range": [self.min_batch, self.max_batch]},
            versions={"tensorrt": trt.__version__})

    def run(self, rgb: np.ndarray | None, audio: np.ndarray | None) -> np.ndarray:
        cudart = self.cudart
        batch = (rgb if rgb is not None else audio).shape[0]
        if not self.min_batch <= batch <= self.max_batch:
            raise InputError(self.path, f"batch {batch} is outside the engine's profile "
                                        f"({self.min_batch}..{self.max_batch}); rebuild it for larger batches")
        given = {"rgb": rgb, "audio": audio}
        host = {name: np.ascontiguousarray(given[name], np.float32) for name in self.input_names}
        out = np.empty((batch, self.num_classes), self.output_dtype)
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in host.items():
            self.context.set_input_shape(name, array.shape)
            _check(cudart.cudaMemcpyAsync(self.buffers[name], array.ctypes.data, array.nbytes, to_device, self.stream),
                   "cudaMemcpyAsync")
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers["probabilities"], out.nbytes, to_host, self.stream),
               "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return out.astype(np.float32, copy=False)

    def __del__(self):
        cudart = getattr(self, "cudart", None)
        if cudart is None:
            return
        for pointer in getattr(self, "buffers", {}).values():
            cudart.cudaFree(pointer)
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)


def open_runner(target: Target, options: RunOptions) -> RunnerBase:
    from avf.compress.report import ENGINE_FILE

    return TensorRTPlanRunner(target.path / ENGINE_FILE, target.report, options.backend)
