"""What avf-bench and avf predict run: an avf-compress artifact (ONNX Runtime) or a checkpoint (PyTorch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from avf.errors import InputError


def load_target(target: Path, backend: str = "auto", threads: int | None = None, device: str = "cpu") -> tuple[Callable, dict]:
    """A ``run(rgb, audio) -> probabilities`` callable and facts about what runs (model, backend,
    precision, input sizes, class count)."""
    if target.is_dir():
        if backend not in ("auto", "onnxruntime"):
            raise InputError(target, f"an artifact runs on onnxruntime, not {backend}")
        from avf.compress.runtime import OnnxModel

        if not (target / "model.onnx").is_file():
            raise InputError(target, "not an avf-compress artifact (no model.onnx)")
        report = json.loads((target / "report.json").read_text()) if (target / "report.json").is_file() else {}
        model = OnnxModel(target / "model.onnx", threads=threads, device="cuda" if device == "cuda" else "cpu")
        facts = {"kind": "artifact", "backend": "onnxruntime", "providers": model.session.get_providers(),
                 "precision": model.metadata.get("precision", "unknown"), "model": model.metadata.get("model"),
                 "rgb_dim": model.rgb_dim, "audio_dim": model.audio_dim, "num_classes": model.num_classes,
                 "accepted": report.get("accepted")}
        return model, facts
    import torch

    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(target)
    model = model_from_checkpoint(payload, target).eval().to(device)
    if threads:
        torch.set_num_threads(threads)
    chosen = "pytorch" if backend in ("auto", "pytorch") else backend
    if chosen == "onnxruntime":
        raise InputError(target, "a checkpoint runs on pytorch or torch-compile; compress it for onnxruntime")
    forward = torch.compile(model) if chosen == "torch-compile" else model

    def run(rgb, audio):
        with torch.inference_mode():
            out = torch.sigmoid(forward(torch.from_numpy(rgb).to(device), torch.from_numpy(audio).to(device)))
            return out.cpu().numpy()

    config = payload["model"]
    facts = {"kind": "checkpoint", "backend": chosen, "precision": "fp32", "model": config["name"],
             "rgb_dim": config["rgb_dim"], "audio_dim": config["audio_dim"], "num_classes": payload["num_classes"],
             "device": device}
    return run, facts
