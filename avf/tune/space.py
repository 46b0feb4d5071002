"""The search space for one device profile on this machine: precisions, prune ratios, candidate names.

A precision is searched only when the profile computes in it and this machine can build it;
every other one is listed with the reason, so the output says what was not tried and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avf.compress.precisions import DEFAULT, PRECISIONS
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

    @property
    def id(self) -> str:
        name = f"r{round(self.ratio * 100):02d}-{self.precision}"
        if self.calib_method:
            name += f"-{self.calib_method}"
        if self.keep_float:
            name += f"-keep{len(self.keep_float)}"
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


def precisions_for(profile: DeviceProfile) -> tuple[list[str], dict[str, str]]:
    """(precisions to search, in search order; {precision: why it is not searched})."""
    searched, skipped = [], {}
    supports = set(profile.precisions)
    gpu = profile.kind != "cpu"
    for precision in search_order():
        spec = PRECISIONS[precision]
        if spec.compute not in supports:
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

    status = {"onnxruntime": "used: every candidate is an ONNX artifact, scored in ONNX Runtime (CPU)"}
    if profile.kind != "cpu":
        for name, reason in (("tensorrt", tensorrt_reason()), ("torch-tensorrt", torch_tensorrt_reason())):
            status[name] = f"not used: {reason}" if reason else \
                "available here, but this machine is not the profile's device: costs stay predicted"
    return status
