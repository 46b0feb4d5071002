"""ONNX Runtime's GPU providers under their earlier names; they live in :mod:`avf.runtime.onnxruntime_gpu`."""

from avf.runtime.onnxruntime_gpu import OnnxRuntimeGpuRunner as GpuOnnxModel
from avf.runtime.onnxruntime_gpu import provider_chain, require_first_provider

__all__ = ["GpuOnnxModel", "provider_chain", "require_first_provider"]
