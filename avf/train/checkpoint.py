"""Self-describing checkpoints: enough to rebuild, evaluate and trace a model with nothing else.

A checkpoint holds the model's name and constructor settings, its weights, the class count and
vocabulary hash, the data it was trained on (paths and sha256), its metrics and the versions
of the tools; ``last.pt`` also holds the optimizer, scheduler and RNG states for ``--resume``.
Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.

A checkpoint holds tensors and plain Python data only (checked when it is written) and is read
with ``torch.load(weights_only=True)``, so loading one never runs code, whoever made the file.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

from avf import __version__
from avf.atomic import atomic_file
from avf.data.vocabulary import check_same_vocabulary
from avf.documents import open_regular
from avf.errors import InputError

CHECKPOINT_FORMAT = "avf-checkpoint"
CHECKPOINT_VERSION = 1


def versions() -> dict:
    import numpy
    import torch

    return {"avf": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__,
            "python": platform.python_version()}


def plain(value, where: str = "payload"):
    """``value`` as tensors and plain Python data only (numpy scalars become int/float, str subclasses str).

    What a checkpoint holds must load with ``torch.load(weights_only=True)``, which rebuilds no other
    Python object; anything else is a bug in the caller, refused here when it is written, not
    discovered when the checkpoint is read.
    """
    import numbers

    import numpy
    import torch

    if value is None or isinstance(value, (bool, torch.Tensor)):
        return value
    if isinstance(value, dict):
        return {plain(k, where): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"checkpoint {where} holds a {type(value).__name__}, not a tensor or plain data")


def save_checkpoint(path: str | Path, payload: dict) -> None:
    import torch

    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "versions": versions(), **payload}
    payload = plain(payload)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        writer = _KeepsWriteError(fh)
        try:
            torch.save(payload, writer)
        except RuntimeError:  # torch reports a failed write ("PytorchStreamWriter failed ...") without the OS reason
            if writer.error is None:
                raise
            raise InputError(path, f"cannot write it: {writer.error.strerror or writer.error}") from None


class _KeepsWriteError:
    """A file for torch.save that keeps the first OSError of a write (a full disk, the file-size limit), which
    torch swallows and replaces by a RuntimeError that does not say why."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def load_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint; every failure is one InputError naming the file.

    Loaded with ``weights_only=True``: PyTorch's restricted unpickler rebuilds tensors and plain
    data only, so a file that would run code when unpickled (any other class, or a function such
    as os.system) is refused before any of it runs. The one class allowed beside them is
    ``TorchVersion`` (a str subclass, nothing to run): checkpoints avf wrote before :func:`plain`
    record the torch version with it.
    """
    import pickle
    import zipfile

    import torch
    from torch.torch_version import TorchVersion

    path = Path(path)
    if path.is_dir():
        what = "an avf-compress artifact" if (path / "report.json").is_file() else "a directory"
        raise InputError(path, f"is {what}, not a checkpoint file (.pt written by avf train)")
    if not path.exists():
        raise InputError(path, "checkpoint not found")
    with open_regular(path, "a checkpoint") as fh:
        try:
            with torch.serialization.safe_globals([TorchVersion]):
                payload = torch.load(fh, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" not in str(exc).lower():
                raise InputError(path, f"not a readable PyTorch checkpoint (UnpicklingError: {str(exc)[:120]})") from None
            found = re.search(r"GLOBAL (\S+?)[ ,]", str(exc))
            named = f" (first refused: {found.group(1)})" if found else ""
            raise InputError(path, f"holds Python objects other than tensors and plain data{named}; it was not "
                                   "loaded, so none of its code ran (avf checkpoints hold tensors and plain data only)"
                             ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
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


def check_compatible(payload: dict, path: str | Path, model_config: dict, vocabulary_sha256: str | None,
                     data_from: str | Path) -> None:
    """Refuse to resume or fine-tune from a checkpoint of another model, class count or vocabulary."""
    saved = payload["model"]
    if saved["name"] != model_config["name"]:
        raise InputError(path, f"checkpoint is of model {saved['name']!r}, not {model_config['name']!r}")
    if payload["num_classes"] != model_config["num_classes"]:
        raise InputError(path, f"checkpoint has {payload['num_classes']} classes, the data has {model_config['num_classes']}")
    check_same_vocabulary(payload.get("vocabulary_sha256"), path, vocabulary_sha256, data_from)
    differing = {k for k in saved if k in model_config and saved[k] != model_config[k]}
    if differing:
        raise InputError(path, f"checkpoint model settings differ: {', '.join(sorted(differing))}")
