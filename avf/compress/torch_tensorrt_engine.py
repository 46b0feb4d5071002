"""Torch-TensorRT: compile the folded/pruned PyTorch model for NVIDIA GPUs (the ``torch-tensorrt`` extra).

A second route to TensorRT beside ONNX -> TensorRT (:mod:`avf.compress.tensorrt_engine`): the
model never leaves PyTorch. It goes through Torch-TensorRT's public AOT API,
``torch_tensorrt.compile(module, ir="dynamo", inputs=[Input(min/opt/max shapes)],
enabled_precisions={...})`` and ``torch_tensorrt.save(..., "model.ep", ...)`` (an ExportedProgram
that ``torch.export.load(path).module()`` runs again, in :mod:`avf.runtime.torch_tensorrt_program`),
with the batch range 1-8-64 of the ONNX engines. FP16 is ``enabled_precisions={torch.float16}``. INT8 follows Torch-TensorRT's documented
PTQ route: NVIDIA Model Optimizer's ``mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop)``
calibrated on the same videos the ONNX INT8 artifact is calibrated on, then compiled with
``enabled_precisions={torch.int8}``. Without the extra or a GPU, :func:`unavailable_reason` says so
and nothing is built.
"""

from __future__ import annotations

from pathlib import Path

from avf.errors import InputError

EXTRA = "pip install 'avf[torch-tensorrt]'"
ENGINE_FILE = "model.ep"
BATCHES = (1, 8, 64)


def unavailable_reason() -> str | None:
    """None when Torch-TensorRT can compile here, else one line naming what to install."""
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return f"Torch-TensorRT is not installed ({EXTRA} on a machine with an NVIDIA GPU)"
    except Exception as exc:  # a broken install (CUDA/TensorRT libraries missing) fails at import
        return f"Torch-TensorRT cannot be imported ({str(exc).splitlines()[0]}); reinstall with {EXTRA}"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (Torch-TensorRT compiles for NVIDIA GPUs)"
    return None


def compile_and_save(model, folder: Path, precision: str, rgb_dim: int, audio_dim: int, calibration=None) -> dict:
    """Compile ``model`` (logits out; the sigmoid is added) and write ``folder/model.ep``; returns build facts."""
    reason = unavailable_reason()
    if reason:
        raise InputError(None, f"--backend torch-tensorrt: {reason}")
    if precision not in ("fp32", "fp16", "int8"):
        raise InputError(None, f"--backend torch-tensorrt builds fp32, fp16 or int8, not {precision}")
    import copy

    import torch
    import torch_tensorrt

    from avf.compress.export import WithProbabilities

    module = WithProbabilities(copy.deepcopy(model)).eval().cuda()
    facts: dict = {"built": True, "file": ENGINE_FILE, "compiler": "torch-tensorrt", "ir": "dynamo",
                   "torch_tensorrt": torch_tensorrt.__version__, "precision": precision,
                   "batch_profile": dict(zip(("min", "opt", "max"), BATCHES))}
    enabled = {torch.float32}
    if precision == "fp16":
        enabled = {torch.float16}
    elif precision == "int8":
        if calibration is None:
            raise InputError(None, "--backend torch-tensorrt --int8 needs calibration data (--calib)")
        try:
            import modelopt.torch.quantization as mtq
        except ImportError:
            raise InputError(None, "Torch-TensorRT INT8 calibrates with NVIDIA Model Optimizer: "
                                   f"{EXTRA} (it installs nvidia-modelopt)") from None
        batches = [(torch.from_numpy(rgb).cuda(), torch.from_numpy(audio).cuda()) for rgb, audio in calibration]

        def forward_loop(quantized):
            with torch.no_grad():
                for rgb, audio in batches:
                    quantized(rgb, audio)

        mtq.quantize(module, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
        enabled = {torch.int8}
        facts["calibration"] = {"library": "modelopt", "config": "INT8_DEFAULT_CFG", "batches": len(batches)}
    inputs = [torch_tensorrt.Input(min_shape=(BATCHES[0], dim), opt_shape=(BATCHES[1], dim),
                                   max_shape=(BATCHES[2], dim), dtype=torch.float32)
              for dim in (rgb_dim, audio_dim)]
    example = [torch.zeros(BATCHES[1], rgb_dim, device="cuda"), torch.zeros(BATCHES[1], audio_dim, device="cuda")]
    compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=inputs, enabled_precisions=enabled)
    path = Path(folder) / ENGINE_FILE
    torch_tensorrt.save(compiled, str(path), inputs=example)
    facts["enabled_precisions"] = sorted(str(dtype) for dtype in enabled)
    facts["device"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return facts

