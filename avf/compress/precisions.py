"""The precisions avf-compress builds: one line each, read by every stage that depends on one.

``CompressOptions`` takes its choice of precision from here, ``avf-compress`` its ``--fp16``/``--int8``/...
flags, ``avf tune`` its search space and ``avf-deploy plan`` its roofline's arithmetic, so a new precision
is one line in :data:`PRECISIONS` (plus its builder in :mod:`avf.compress.quantize`), not an edit in each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from avf.compress import quantize


@dataclass(frozen=True)
class Precision:
    """What avf needs to know of one precision."""

    #: The name: ``CompressOptions.precision``, the report's precision stage, the artifact folder's suffix.
    name: str
    #: The avf-compress flag that selects it (None: the default, selected by no flag).
    flag: str | None
    #: The flag's help.
    help: str
    #: ``build(model: onnx.ModelProto, inputs: quantize.BuildInputs) -> onnx.ModelProto``, from the FP32 export.
    build: Callable
    #: The arithmetic the artifact runs in: what a device profile must list to run it (and the roofline's peak).
    compute: str
    #: An ONNX Runtime CPU weight format: no TensorRT engine is built from it, no GPU profile is searched with it.
    cpu_only: bool
    #: Needs calibration data (static activation ranges) and, to check them, evaluation data.
    calibrates: bool
    #: What the report's precision stage says was done (None: nothing to say); a function of the builder's
    #: ``BuildInputs`` where the words depend on its parameters (int4's block size and accuracy level).
    method: str | Callable[[quantize.BuildInputs], str] | None
    #: The --backend values that build it (None: every one). A precision only a compiled engine has (bf16) ships
    #: its model.onnx in ``onnx``'s precision.
    backends: tuple[str, ...] | None = None
    #: The precision of the artifact's model.onnx (None: this one).
    onnx: str | None = None

    @property
    def onnx_precision(self) -> str:
        return self.onnx or self.name

    def built_by(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", flag=None, help="Float32 weights and arithmetic (the default).", build=quantize.keep_fp32,
              compute="fp32", cpu_only=False, calibrates=False, method=None),
    Precision("fp16", flag="--fp16", help="Half-precision weights and arithmetic.", build=quantize.to_fp16,
              compute="fp16", cpu_only=False, calibrates=False,
              method="float16 weights and arithmetic, float32 inputs/outputs (onnxruntime float16 converter)"),
    Precision("bf16", flag="--bf16", help="bfloat16 weights and arithmetic in the compiled engine (--backend torch-aot).",
              build=quantize.keep_fp32, compute="bf16", cpu_only=False, calibrates=False,
              method="bfloat16 weights and arithmetic in model.pt2, float32 inputs/outputs; model.onnx stays FP32 "
                     "(ONNX Runtime's CPU provider has no bfloat16 kernels)", backends=("torch-aot",), onnx="fp32"),
    Precision("fp8", flag="--fp8", help="FP8 (e4m3) matrix products in the compiled engine (--backend torch-aot): "
              "Ada/Hopper GPUs, or PyTorch's CPU kernel.", build=quantize.keep_fp32, compute="fp8", cpu_only=False,
              calibrates=False, method="every matrix product FP8 e4m3 in model.pt2 (torch._scaled_mm: per-output-"
              "channel weight scales, per-row activation scales at run time), the rest bfloat16; model.onnx stays "
              "FP32 (ONNX Runtime has no FP8 matrix kernels)", backends=("torch-aot",), onnx="fp32"),
    Precision("int8", flag="--int8", help="Static INT8 (QDQ: per-channel symmetric weights, symmetric activations).",
              build=quantize.to_int8_static, compute="int8", cpu_only=False, calibrates=True,
              method="static QDQ, per-channel symmetric INT8 weights, symmetric INT8 activations",
              backends=("onnxruntime", "tensorrt", "torch-tensorrt")),
    Precision("int8-dynamic", flag="--int8-dynamic", help="Weights-only INT8 for CPUs.",
              build=quantize.to_int8_dynamic, compute="int8", cpu_only=True, calibrates=False,
              method="weights-only INT8, per-channel symmetric; activations quantized at run time"),
    Precision("int4", flag="--int4", help="4-bit weight-only matrices (ONNX Runtime MatMulNBits) for CPUs.",
              build=quantize.to_int4, compute="int8",  # MatMulNBits accuracy_level 4 (the default): INT8 arithmetic
              cpu_only=True, calibrates=False, method=quantize.int4_method),
)}

DEFAULT = "fp32"
#: The precision names as a type (``CompressOptions.precision``, the report's precision stage).
PrecisionName = Literal[tuple(PRECISIONS)]  # type: ignore[valid-type]


def precision_named(name: str) -> Precision:
    return PRECISIONS[name]


def calibrating() -> list[str]:
    """The precisions that calibrate (their names, for messages such as "applies to int8 only")."""
    return [p.name for p in PRECISIONS.values() if p.calibrates]
