"""Self-describing checkpoints: enough to rebuild, evaluate and trace a model with nothing else.

A checkpoint holds the model's name and constructor settings, its weights, the class count and
vocabulary hash, the data it was trained on (paths and sha256), its metrics and the versions
of the tools; ``last.pt`` also holds the optimizer, scheduler and RNG states for ``--resume``.
Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import platform
from pathlib import Path

from avf import __version__
from avf.atomic import atomic_file
from avf.errors import InputError

CHECKPOINT_FORMAT = "avf-checkpoint"
CHECKPOINT_VERSION = 1


def versions() -> dict:
    import numpy
    import torch

    return {"avf": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def save_checkpoint(path: str | Path, payload: dict) -> None:
    import torch

    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "versions": versions(), **payload}
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint; every failure is one InputError naming the file."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if path.is_dir():
        what = "an avf-compress artifact" if (path / "report.json").is_file() else "a directory"
        raise InputError(path, f"is {what}, not a checkpoint file (.pt written by avf train)")
    if not path.exists():
        raise InputError(path, "checkpoint not found")
    if not path.is_file():
        raise InputError(path, "is not a regular file, not a checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise InputError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "not an avf checkpoint (no model description inside)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(path, f"checkpoint version {payload.get('version')} is not supported")
    for key in ("model", "state_dict", "num_classes"):
        if key not in payload:
            raise InputError(path, f"checkpoint lacks {key!r}")
    return payload


def model_from_checkpoint(payload: dict, path: str | Path = ""):
    """Rebuild the model and load its weights; a mismatch is refused with a clear message."""
    from avf.models import build_model

    try:
        model = build_model(**payload["model"])
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"checkpoint describes a model this avf cannot build ({exc})") from None
    state = payload["state_dict"]
    broken = [name for name, tensor in state.items()
              if getattr(tensor, "is_floating_point", lambda: False)() and not bool(tensor.isfinite().all())]
    if broken:
        raise InputError(path, f"checkpoint holds NaN/inf weights ({len(broken)} tensors, e.g. {broken[0]}): "
                         "the training that wrote it diverged")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(path, f"weights do not fit model {payload['model']['name']!r} "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model


def check_compatible(payload: dict, path: str | Path, model_config: dict, vocabulary_sha256: str | None) -> None:
    """Refuse to resume or fine-tune from a checkpoint of another model, class count or vocabulary."""
    saved = payload["model"]
    if saved["name"] != model_config["name"]:
        raise InputError(path, f"checkpoint is of model {saved['name']!r}, not {model_config['name']!r}")
    if payload["num_classes"] != model_config["num_classes"]:
        raise InputError(path, f"checkpoint has {payload['num_classes']} classes, the data has {model_config['num_classes']}")
    saved_vocab = payload.get("vocabulary_sha256")
    if saved_vocab and vocabulary_sha256 and saved_vocab != vocabulary_sha256:
        raise InputError(path, "checkpoint was trained against a different vocabulary.csv (sha256 differs)")
    differing = {k for k in saved if k in model_config and saved[k] != model_config[k]}
    if differing:
        raise InputError(path, f"checkpoint model settings differ: {', '.join(sorted(differing))}")
