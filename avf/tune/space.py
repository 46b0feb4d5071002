"""The search space for one device profile on this machine: precisions, prune ratios, candidate names.

A precision is searched only when the profile computes in it and this machine can build it;
every other one is listed with the reason, so the output says what was not tried and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avf.compress.precisions import DEFAULT, PRECISIONS
from avf.compress.quantize import INT4_ACCURACY, INT4_BLOCK
from avf.deploy.profiles import DeviceProfile

#: int8 static calibration methods, the default first (the others are tried where it falls short).
CALIBRATIONS = ("percentile", "entropy", "minmax")
MAX_RATIO = 0.9


@dataclass(frozen=True)
class Setting:
    """One candidate: what avf-compress is asked to build."""

    ratio: float  # 0 = fold only
    precision: str  # a name of avf.compress.precisions.PRECISIONS
    calib_method: str | None = None  # int8 only
    keep_float: tuple[str, ...] = field(default_factory=tuple)  # int8 mixed precision: layers kept float
    int4_block: int = INT4_BLOCK  # int4 only: MatMulNBits block size
    int4_accuracy_level: int = INT4_ACCURACY  # int4 only: MatMulNBits arithmetic (4 INT8, 1 float32)

    @property
    def id(self) -> str:
        """Unique and stable: a part is added only where it differs from the default, so the ids (and the
        sealed records named by them) of earlier searches stay valid."""
        name = f"r{round(self.ratio * 100):02d}-{self.precision}"
        if self.calib_method:
            name += f"-{self.calib_method}"
        if self.keep_float:
            name += f"-keep{len(self.keep_float)}"
        if self.int4_block != INT4_BLOCK:
            name += f"-b{self.int4_block}"
        if self.int4_accuracy_level != INT4_ACCURACY:
            name += f"-l{self.int4_accuracy_level}"
        return name


def ratio_grid(step: float) -> list[float]:
    """0, step, 2 step, ... up to 0.9: the ratios bisection chooses among."""
    count = int(np.floor(MAX_RATIO / step + 1e-9))
    return [round(i * step, 4) for i in range(count + 1)]


def search_order() -> list[str]:
    """Every precision of the registry, in the order the search builds them: FP32 first (its boundary bounds
    every other precision's), then those that calibrate (their calibration and mixed-precision variants follow
    at their edge), then the rest in registry order."""
    return sorted(PRECISIONS, key=lambda name: (name != DEFAULT, not PRECISIONS[name].calibrates))


def precisions_for(profile: DeviceProfile, backend: str = "onnxruntime") -> tuple[list[str], dict[str, str]]:
    """(precisions to search, in search order; {precision: why it is not searched}); candidates are built with
    ``backend`` (avf-compress --backend)."""
    searched, skipped = [], {}
    supports = set(profile.precisions)
    gpu = profile.kind != "cpu"
    for precision in search_order():
        spec = PRECISIONS[precision]
        if not spec.built_by(backend):
            skipped[precision] = f"built by --backend {' or '.join(spec.backends)} only; the candidates are {backend}"
        elif spec.compute not in supports:
            skipped[precision] = f"{profile.name} lists no {spec.compute} ({', '.join(profile.precisions)})"
        elif spec.cpu_only and gpu:
            skipped[precision] = (f"weights-only {precision} is an ONNX Runtime CPU format; {profile.name} deploys "
                                  f"with {profile.preferred_backend}")
        else:
            searched.append(precision)
    return searched, skipped


def backends_for(profile: DeviceProfile) -> dict[str, str]:
    """Compile paths considered for the profile, each with its status on this machine."""
    from avf.compress.tensorrt_engine import unavailable_reason as tensorrt_reason
    from avf.compress.torch_tensorrt_engine import unavailable_reason as torch_tensorrt_reason

    from avf.tune.cost import local_build, local_gpu

    status = {"onnxruntime": "used: every candidate is an ONNX artifact, scored in ONNX Runtime (CPU)"}
    if build := local_build(profile):
        status = {"onnxruntime": "not used: this machine has the profile's GPU",
                  build["backend"]: f"used: every candidate is compiled and scored on {local_gpu(profile)}"}
    if profile.kind != "cpu" and not build:
        for name, reason in (("tensorrt", tensorrt_reason()), ("torch-tensorrt", torch_tensorrt_reason())):
            status[name] = f"not used: {reason}" if reason else \
                "available here, but this machine is not the profile's device: costs stay predicted"
    return status
