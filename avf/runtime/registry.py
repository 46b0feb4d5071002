"""The backend table: every ``--backend`` name, what it runs, the module that runs it, what to install.

A backend is one module in ``avf/runtime/`` with ``open_runner(target, options) -> Runner`` and one
line below. No runtime is imported here (PyTorch, ONNX Runtime and TensorRT are imported when a
runner of theirs is opened), so the table is cheap to read and a missing runtime fails only its
backends. The first line of each kind is what ``--backend auto`` picks for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from avf.errors import InputError
from avf.runtime import pytorch_model
from avf.runtime.runner import Runner, RunOptions, Target, TargetKind


@dataclass(frozen=True)
class Backend:
    #: The ``--backend`` name.
    name: str
    #: The kind of target it runs: an avf-compress ``artifact`` folder or a training ``checkpoint``.
    runs: TargetKind
    #: The module in avf/runtime/ whose ``open_runner(target, options)`` builds its Runner.
    module: str
    #: What to install when its runtime is missing.
    install: str
    #: The precisions ``--precision`` may ask it for, default first; none: the artifact keeps its own.
    precisions: tuple[str, ...] = ()

    def open(self, target: Target, options: RunOptions) -> Runner:
        """The runner for ``target``; a runtime that is not installed is one InputError naming what to install."""
        try:
            return importlib.import_module(self.module).open_runner(target, options)
        except ModuleNotFoundError as exc:
            if (exc.name or "avf").split(".")[0] == "avf":
                raise
            raise InputError(target.path, f"--backend {self.name}: {exc.name} is not installed here "
                                          f"({self.install})") from exc


TORCH = "pip install torch (the build for your machine, see the README)"
BACKENDS: tuple[Backend, ...] = (
    Backend("onnxruntime", "artifact", "avf.runtime.onnxruntime_cpu", "pip install 'avf[onnx]'"),
    Backend("onnxruntime-cuda", "artifact", "avf.runtime.onnxruntime_gpu", "pip install onnxruntime-gpu"),
    Backend("onnxruntime-tensorrt", "artifact", "avf.runtime.onnxruntime_gpu", "pip install onnxruntime-gpu"),
    Backend("tensorrt", "artifact", "avf.runtime.tensorrt_plan", "pip install 'avf[tensorrt]'"),
    Backend("torch-tensorrt", "artifact", "avf.runtime.torch_tensorrt_program", "pip install 'avf[torch-tensorrt]'"),
    Backend("torch-aot", "artifact", "avf.runtime.torch_aot_program", TORCH),
    Backend("pytorch", "checkpoint", "avf.runtime.pytorch_model", TORCH, pytorch_model.PRECISIONS),
    Backend("torch-compile", "checkpoint", "avf.runtime.pytorch_model", TORCH, pytorch_model.PRECISIONS),
)
BY_NAME = {backend.name: backend for backend in BACKENDS}


def names(kind: TargetKind | None = None) -> tuple[str, ...]:
    """The backend names (of one kind of target), in table order."""
    return tuple(backend.name for backend in BACKENDS if kind in (None, backend.runs))


def default(kind: TargetKind) -> Backend:
    """What ``--backend auto`` runs a target of this kind on: the table's first line for it."""
    return next(backend for backend in BACKENDS if backend.runs == kind)
