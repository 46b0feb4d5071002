"""ONNX export with the deployment contract: inputs ``rgb`` and ``audio``, output ``probabilities``.

The exported graph includes the sigmoid, so every runtime (ONNX Runtime, TensorRT, Triton)
returns probabilities directly; the batch axis is dynamic and named ``batch``.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from avf.atomic import atomic_file

INPUT_NAMES, OUTPUT_NAMES = ["rgb", "audio"], ["probabilities"]
OPSET = 17


class WithProbabilities(nn.Module):
    """``forward(rgb, audio) -> sigmoid(logits)``: the function a deployed model computes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, rgb: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(rgb, audio))


def require_onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ImportError("ONNX export and runtime need the 'onnx' extra: pip install 'avf[onnx]'") from exc
    return onnx


def export_model(model: nn.Module, rgb_dim: int, audio_dim: int, metadata: dict[str, str | int]):
    """``model`` (returning logits) as an FP32 ``onnx.ModelProto`` with probabilities out, in memory."""
    onnx = require_onnx()
    wrapped = WithProbabilities(model).eval()
    example = (torch.zeros(2, rgb_dim), torch.zeros(2, audio_dim))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, example, buffer, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                          dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES},
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    keep_both_inputs(proto, {"rgb": rgb_dim, "audio": audio_dim})
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: nn.Module, path: str | Path, rgb_dim: int, audio_dim: int, metadata: dict[str, str | int]) -> Path:
    """:func:`export_model` written to ``path``, atomically."""
    return save_model(export_model(model, rgb_dim, audio_dim, metadata), path)


def save_model(proto, path: str | Path) -> Path:
    """Write an ONNX model whole (weights inside the file, as every avf artifact keeps them), atomically."""
    onnx = require_onnx()
    path = Path(path)
    with atomic_file(path, suffix=".tmp.onnx") as tmp:
        onnx.save(proto, str(tmp))
    return path


def keep_both_inputs(proto, dims: dict[str, int]) -> None:
    """Single-modality models ignore one input, and the exporter drops it; put it back (unused), so
    every artifact takes ``rgb`` and ``audio`` and every runtime and tool feeds them the same way."""
    from onnx import TensorProto, helper

    present = {value.name for value in proto.graph.input}
    for position, name in enumerate(INPUT_NAMES):
        if name not in present:
            proto.graph.input.insert(position, helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", dims[name]]))


def set_metadata(proto, metadata: dict) -> None:
    """Replace the model's metadata_props with ``metadata`` (values stored as strings / JSON)."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


def read_metadata(path: str | Path) -> dict[str, str]:
    onnx = require_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}


def write_metadata(path: str | Path, metadata: dict) -> None:
    """Replace the metadata of the ONNX file at ``path`` (a quantizer run on files drops it), atomically."""
    onnx = require_onnx()
    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    save_model(proto, path)
