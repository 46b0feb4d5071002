"""Device profiles: what a target can do (memory, bandwidth, peak throughput per precision,
power modes) and what a deployment must meet there (latency and memory budgets).

Shipped profiles live in ``avf/profiles/*.yaml`` with their vendor sources in comments; a
user's own YAML file works anywhere a profile name does. Validation names the bad field.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avf.documents import read_document
from avf.errors import InputError

Precision = Literal["fp32", "tf32", "fp16", "bf16", "fp8", "int8"]


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    latency_ms: float = Field(gt=0, description="single-stream p99 latency budget per request")
    memory_mib: float = Field(gt=0, description="memory the deployed model may use")


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # an infinite TDP or budget is no profile

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    display_name: str
    kind: Literal["jetson", "dgpu", "cpu"]
    memory_gib: float = Field(gt=0)
    memory_bandwidth_gbs: float = Field(gt=0)
    peak_tflops: dict[Precision, float] = Field(description="dense peak per precision (TOPS for int8)")
    precisions: list[Precision] = Field(min_length=1)
    dla_cores: int = Field(0, ge=0)
    compute_capability: str | None = Field(None, pattern=r"^\d+\.\d+$")
    power_modes_w: dict[str, float] = Field(default_factory=dict, description="nvpmodel modes on Jetson")
    default_power_mode: str | None = None
    tdp_w: float | None = Field(None, gt=0)
    budgets: Budgets
    preferred_backend: Literal["tensorrt", "onnxruntime", "pytorch"]
    #: A part of the CUDA device name (``torch.cuda.get_device_name``) that identifies this GPU, e.g. "H200": on
    #: a machine whose GPU has it, avf tune measures the profile's costs instead of predicting them.
    cuda_name: str | None = None
    jetpack: str | None = None
    tensorrt: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        unknown = set(self.peak_tflops) - set(self.precisions)
        if unknown:
            raise ValueError(f"peak_tflops lists precisions not in precisions: {', '.join(sorted(unknown))}")
        missing = [p for p in self.precisions if p not in self.peak_tflops]
        if missing:
            raise ValueError(f"peak_tflops has no figure for {', '.join(missing)}")
        if any(value <= 0 for value in self.peak_tflops.values()):
            raise ValueError("peak_tflops values must be positive")
        if self.kind == "jetson":
            if not self.power_modes_w:
                raise ValueError("a jetson profile needs power_modes_w (nvpmodel modes and their watts)")
            if self.default_power_mode not in self.power_modes_w:
                raise ValueError(f"default_power_mode {self.default_power_mode!r} is not one of power_modes_w")
        elif self.tdp_w is None:
            raise ValueError(f"a {self.kind} profile needs tdp_w")
        if self.kind != "cpu" and self.compute_capability is None:
            raise ValueError("a GPU profile needs compute_capability")
        return self

    @property
    def power_w(self) -> float:
        """Board power for energy estimates: the default nvpmodel mode on Jetson, else TDP."""
        return self.power_modes_w[self.default_power_mode] if self.kind == "jetson" else float(self.tdp_w)


#: TensorRT majors avf's engine code drives (avf.compress.tensorrt_engine.SUPPORTED_MAJORS, kept free of its imports).
TENSORRT_MAJORS = (10, 11)


def tensorrt_note(profile: DeviceProfile) -> str | None:
    """A plain note when the profile's TensorRT is one avf cannot drive (e.g. Xavier NX: JetPack 5.1, TensorRT 8.5),
    else None. Said wherever the profile is used with a TensorRT backend or for a TensorRT build, instead of
    failing later on the device."""
    if not profile.tensorrt:
        return None
    try:
        major = int(str(profile.tensorrt).split(".")[0])
    except ValueError:
        return None
    if major in TENSORRT_MAJORS:
        return None
    jetpack = f" (JetPack {profile.jetpack})" if profile.jetpack else ""
    return (f"{profile.display_name} lists TensorRT {profile.tensorrt}{jetpack}; avf builds and runs TensorRT engines "
            f"with TensorRT {' and '.join(f'{m}.x' for m in TENSORRT_MAJORS)} only, so avf's TensorRT backend cannot "
            "be used there (no model.plan, no --backend tensorrt): run the artifact with onnxruntime, or use a "
            "JetPack that ships TensorRT 10")


def shipped_profile_paths() -> dict[str, Path]:
    folder = resources.files("avf.profiles")
    return {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir() if str(entry).endswith(".yaml")}


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name, or a YAML file; any problem is one InputError naming the field."""
    shipped = shipped_profile_paths()
    path = shipped.get(str(name_or_path)) or Path(name_or_path)
    if not path.exists():  # what exists is read (and refused there when it is a folder, a FIFO or a device)
        raise InputError(name_or_path, f"no such profile (shipped: {', '.join(sorted(shipped))}) and no such file")
    return read_document(path, "a device profile", DeviceProfile, language="yaml")[1]


def all_profiles() -> list[DeviceProfile]:
    return [load_profile(name) for name in sorted(shipped_profile_paths())]
