"""Compiled PyTorch engines: ``torch.export`` then AOTInductor, one ``model.pt2`` package per device.

The engine a user without TensorRT ships: the compressed model (folded, pruned, in its precision) is
exported once with a dynamic batch axis and compiled ahead of time by Inductor into a package
(``torch._inductor.aoti_compile_and_package``) that ``torch._inductor.aoti_load_package`` runs again
without avf's model code, on the CPU (C++ kernels, OpenMP) or on CUDA (Triton kernels, cuBLAS), where
:mod:`avf.runtime.torch_aot_program` can also replay it from CUDA graphs.

A package is tied to the device kind and the PyTorch version that compiled it, so the artifact also
keeps the compressed model itself as weights (``model.pt``: tensors and plain data, loaded
weights-only) from which ``avf-deploy build --backend torch-aot`` compiles the package again on the
machine that runs it, as it builds a TensorRT engine there.

Precisions: fp32, fp16 and bf16 (weights and arithmetic; probabilities returned in float32),
``int8-dynamic``: weight-only INT8 (per-output-channel symmetric scales), activations in float, and
``fp8``: every matrix product in FP8 (e4m3) through ``torch._scaled_mm``, weights with one scale per output
channel, activations scaled per row at run time, the rest in bfloat16. ``_scaled_mm`` is PyTorch's FP8
kernel on Ada and Hopper GPUs (compute capability 8.9+, where FP8 tensor cores double the FP16 rate) and
has a CPU implementation, so the same package is built, scored and benched on a CPU.
"""

from __future__ import annotations

import copy
import shutil
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from avf.errors import InputError

PROGRAM_FILE = "model.pt2"
WEIGHTS_FILE = "model.pt"
#: The registry precisions this backend compiles (the model's arithmetic in the package).
PRECISIONS = ("fp32", "fp16", "bf16", "int8-dynamic", "fp8")
#: FP8 GEMMs on NVIDIA GPUs need compute capability 8.9 (Ada) or later.
FP8_CAPABILITY = (8, 9)
#: The batch axis of the exported program: any batch in 1..MAX_BATCH runs without recompiling.
MAX_BATCH = 4096
WEIGHTS_FORMAT = "avf-compressed-model"


def unavailable_reason(device: str, precision: str = "fp32") -> str | None:
    """None when this machine can compile a ``precision`` package for ``device``, else one line saying what is
    missing."""
    inductor = getattr(torch, "_inductor", None)
    if inductor is None or not hasattr(torch._inductor, "aoti_compile_and_package"):
        return f"PyTorch {torch.__version__} has no AOTInductor packaging (torch >= 2.6 has it)"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch here (a CUDA package is compiled on a machine with the GPU)"
    if device == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++ or clang++) on PATH: AOTInductor compiles the CPU package with it"
    if precision == "fp8":
        return fp8_unavailable_reason(device)
    return None


def fp8_unavailable_reason(device: str) -> str | None:
    """None when ``torch._scaled_mm`` runs FP8 here on ``device`` (tried on a small product), else why not."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"PyTorch {torch.__version__} has no FP8 (float8_e4m3fn and torch._scaled_mm)"
    if device == "cuda" and torch.cuda.get_device_capability() < FP8_CAPABILITY:
        name, capability = torch.cuda.get_device_name(), ".".join(map(str, torch.cuda.get_device_capability()))
        return (f"{name} (compute capability {capability}) has no FP8 matrix kernels: they need "
                f"{'.'.join(map(str, FP8_CAPABILITY))} or later (Ada, Hopper)")
    try:
        a = torch.ones(16, 16, device=device).to(torch.float8_e4m3fn)
        one = torch.ones(16, 1, device=device), torch.ones(1, 16, device=device)
        torch._scaled_mm(a, a.t(), scale_a=one[0], scale_b=one[1], out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError) as exc:
        return f"torch._scaled_mm cannot run FP8 on {device} here ({str(exc).splitlines()[0][:200]})"
    return None


def resolve_device(device: str) -> str:
    """``auto`` -> cuda where PyTorch sees a GPU, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def float_dtype(precision: str) -> torch.dtype:
    """The floating type the package computes in: fp16 or bf16 as named, float32 otherwise (int8-dynamic's
    activations included)."""
    from avf.runtime.pytorch_model import PRECISIONS as FLOATS, torch_dtype

    if precision == "fp8":
        return torch.bfloat16  # what is not a matrix product (norms, softmax, gates), and the products' outputs
    return torch_dtype(precision) if precision in FLOATS else torch.float32


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    from avf.deploy.bench import cpu_name

    return cpu_name()


# ----------------------------------------------------------------------------- the compressed model as weights


def weights_payload(model: nn.Module, config: dict, num_classes: int, fold: bool, precision: str = "fp32") -> dict:
    """``model.pt``'s content: the compressed model's weights and what rebuilds its structure. Weights are kept in
    the engine's float precision where it is fp16 or bf16 (the package rounds them to it anyway: half the bytes
    to carry to the device), else float32 (fp8 included: every build quantizes from the float32 weights, so a
    package compiled again on the device equals the one the gate scored)."""
    dtype = torch.float32 if precision == "fp8" else float_dtype(precision)
    state = {name: tensor.detach().to(dtype if tensor.is_floating_point() else tensor.dtype).cpu().contiguous()
             for name, tensor in model.state_dict().items()}
    return {"format": WEIGHTS_FORMAT, "model": dict(config), "num_classes": int(num_classes), "fold": bool(fold),
            "state_dict": state}


def rebuild(payload: dict, path: str | Path = "") -> nn.Module:
    """The compressed model from ``model.pt``: the architecture built from its config (folded when it was), every
    parameter and buffer reshaped to the saved one (pruning changes widths only), then the weights loaded strictly."""
    from avf.models import build_model

    if payload.get("format") != WEIGHTS_FORMAT:
        raise InputError(path, f"not a compressed model written by avf-compress (format {payload.get('format')!r})")
    try:
        model = build_model(**payload["model"]).eval()
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(path, f"describes a model this avf cannot build ({exc})") from None
    if payload["fold"]:
        from avf.compress.fold import fold_model

        model = fold_model(model).model
    state = payload["state_dict"]
    for name, tensor in state.items():
        owner_name, _, attribute = name.rpartition(".")
        try:
            owner = model.get_submodule(owner_name)
        except AttributeError:
            raise InputError(path, f"weights do not fit model {payload['model'].get('name')!r} ({name})") from None
        current = getattr(owner, attribute, None)
        if not isinstance(current, torch.Tensor):
            raise InputError(path, f"weights do not fit model {payload['model'].get('name')!r} ({name})")
        if current.shape != tensor.shape:
            if attribute in owner._parameters:
                owner._parameters[attribute] = nn.Parameter(torch.empty(tensor.shape, dtype=current.dtype),
                                                            requires_grad=False)
            else:
                owner._buffers[attribute] = torch.empty(tensor.shape, dtype=current.dtype)
            if isinstance(owner, nn.Linear) and attribute == "weight":
                owner.out_features, owner.in_features = tensor.shape
    try:
        model.load_state_dict(state, strict=True)  # copied into the float32 parameters
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit model {payload['model'].get('name')!r}: "
                               f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def load_weights(path: str | Path) -> nn.Module:
    """``model.pt`` read weights-only (no code runs) and rebuilt."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot read the compressed model ({str(exc).splitlines()[0]})") from None
    if not isinstance(payload, dict):
        raise InputError(path, "not a compressed model written by avf-compress")
    return rebuild(payload, path)


# ----------------------------------------------------------------------------- precision and compilation


class Int8WeightOnlyLinear(nn.Module):
    """A Linear whose weight is stored INT8 with one symmetric scale per output channel; float activations."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(weight.shape[0])
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The pattern Inductor's weight-only-quantization passes look for (a cast of the INT8 weight into the
        # matrix product, then the per-channel scale); what it fuses it into is its choice per device.
        return nn.functional.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype) + self.bias.to(x.dtype)


#: The largest finite e4m3 value: each weight channel and input row is scaled so that its largest entry lands on it.
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max) if hasattr(torch, "float8_e4m3fn") else 448.0


class Fp8Linear(nn.Module):
    """A Linear computed in FP8 (e4m3) by ``torch._scaled_mm``: the weight with one scale per output channel,
    each input row scaled to e4m3's range at run time, bfloat16 out. Widths are padded to multiples of 16
    (the GPU kernel's rule) with zeros, which change no output."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        self.out_features, self.in_features = weight.shape
        self.pad_in = -self.in_features % 16
        weight = nn.functional.pad(weight, (0, self.pad_in, 0, -self.out_features % 16))
        scales = (weight.abs().amax(dim=1) / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        self.register_buffer("weight", (weight / scales[:, None]).to(torch.float8_e4m3fn))
        self.register_buffer("scales", scales[None, :].contiguous())  # (1, out): _scaled_mm's row-wise scale_b
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", bias.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        rows = x.reshape(-1, self.in_features).float()
        if self.pad_in:
            rows = nn.functional.pad(rows, (0, self.pad_in))
        row_scales = (rows.abs().amax(dim=1, keepdim=True) / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        quantized = (rows / row_scales).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(quantized, self.weight.t(), scale_a=row_scales, scale_b=self.scales,
                               out_dtype=torch.bfloat16)
        return (out[:, :self.out_features] + self.bias).reshape(*leading, self.out_features)


def _replace_linears(model: nn.Module, source: nn.Module, make) -> nn.Module:
    """Each nn.Linear of ``model`` replaced by ``make(the same Linear of source)`` (source: float32 weights)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            setattr(model, name, make(getattr(source, name)))
        else:
            _replace_linears(child, getattr(source, name), make)
    return model


class Engine(nn.Module):
    """What the package computes: float32 (rgb, audio) in, float32 probabilities out, the model in ``dtype``."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, rgb: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(rgb.to(self.dtype), audio.to(self.dtype))).float()


def engine_module(model: nn.Module, precision: str, device: str) -> Engine:
    """``model`` (left untouched) in ``precision`` on ``device``, wrapped to the deployed function."""
    if precision not in PRECISIONS:
        raise InputError(None, f"--backend torch-aot compiles {', '.join(PRECISIONS)}, not {precision} "
                               "(static INT8 and INT4 are ONNX formats: ONNX Runtime or TensorRT)")
    model = copy.deepcopy(model).eval().float()
    dtype = float_dtype(precision)
    if precision == "int8-dynamic":
        model = _replace_linears(model, model, Int8WeightOnlyLinear)
    elif precision == "fp8":  # quantized from the float32 weights; the rest of the model in bfloat16
        model = _replace_linears(copy.deepcopy(model).to(dtype), model, Fp8Linear)
    else:
        model = model.to(dtype)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return Engine(model, dtype).eval().to(device)


def compile_package(model: nn.Module, package: Path, precision: str, device: str, rgb_dim: int, audio_dim: int,
                    built_by: str = "avf-compress", source: str | Path | None = None) -> dict:
    """Export and compile ``model`` into the file ``package`` (a name ending .pt2) for ``device``; returns the build
    facts (``file`` is the artifact's name for it, model.pt2)."""
    reason = unavailable_reason(device, precision)
    if reason:
        raise InputError(source or package, f"--backend torch-aot ({device}, {precision}): {reason}")
    engine = engine_module(model, precision, device)
    started = time.monotonic()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = (torch.zeros(2, rgb_dim, device=device), torch.zeros(2, audio_dim, device=device))
    with warnings.catch_warnings():  # PyTorch's own deprecation chatter from its pytree internals
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with torch.no_grad():
                program = torch.export.export(engine, example, dynamic_shapes=({0: batch}, {0: batch}))
                path = torch._inductor.aoti_compile_and_package(program, package_path=str(package))
        except (RuntimeError, AssertionError, torch._dynamo.exc.TorchDynamoException) as exc:
            message = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise InputError(source or package, f"PyTorch {torch.__version__} could not compile the {precision} model for "
                                      f"{device}: {type(exc).__name__}: {message[:300]}") from None
    return {"built": True, "file": PROGRAM_FILE, "compiler": "torch.export + AOTInductor", "device": device,
            "device_name": device_name(device), "precision": precision, "torch": torch.__version__,
            "batch_range": [1, MAX_BATCH], "compile_seconds": round(time.monotonic() - started, 2),
            "built_by": built_by, "bytes": Path(path).stat().st_size}
