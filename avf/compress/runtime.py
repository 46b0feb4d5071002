"""The ONNX Runtime CPU runner under its earlier name; it lives in :mod:`avf.runtime.onnxruntime_cpu`."""

from avf.runtime.onnxruntime_cpu import OnnxRuntimeCpuRunner as OnnxModel

__all__ = ["OnnxModel"]
