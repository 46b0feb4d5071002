"""The one contract every backend meets: ``run(rgb, audio) -> probabilities``, and facts as plain data.

A runner is what avf-bench times, what avf predict streams videos through, and what the retention
gate, ``avf tune`` and ``avf eval`` score (:mod:`avf.runtime.scoring`). Its facts are a pydantic
model of JSON types only and its results are float32 numpy arrays, so a runner living on another
machine can send both back as JSON and stand in for a local one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, JsonValue

TargetKind = Literal["artifact", "checkpoint"]
#: The ONNX model in every artifact; the artifact backends run it, or the engine built from it.
MODEL_FILE = "model.onnx"


class RunnerFacts(BaseModel):
    """What runs, as plain data: the same on this machine and, sent as JSON, from another."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The ``--backend`` name it was opened as (a registry line's name).
    backend: str
    #: Where it computes: ``cpu`` or ``cuda``.
    device: str
    #: The precision it runs in (an artifact's is the one avf-compress gave it; ``unknown`` if unrecorded).
    precision: str
    #: The model's name as the target records it (``attend_fusion``), when it does.
    model: str | None = None
    #: Feature width of each input it takes, by name (``rgb``, ``audio``); the batch axis is free.
    inputs: dict[str, int]
    num_classes: int
    #: How the runtime was set up, as avf-bench records it (providers and their options, engine batch range, ...).
    runtime: dict[str, JsonValue] = {}
    #: Versions of the libraries that compute the probabilities.
    versions: dict[str, str | None] = {}


@runtime_checkable
class Runner(Protocol):
    """``runner.run(rgb, audio)`` (or ``runner(rgb, audio)``) -> float32 probabilities, one row per video."""

    facts: RunnerFacts

    @property
    def inputs(self) -> dict[str, int]: ...

    def run(self, rgb: np.ndarray | None, audio: np.ndarray | None) -> np.ndarray: ...

    def __call__(self, rgb: np.ndarray | None, audio: np.ndarray | None) -> np.ndarray: ...


class RunnerBase(ABC):
    """What every runner shares, so a backend module writes only ``__init__`` (setting ``facts``) and ``run``."""

    facts: RunnerFacts

    @property
    def inputs(self) -> dict[str, int]:
        return dict(self.facts.inputs)

    @abstractmethod
    def run(self, rgb: np.ndarray | None, audio: np.ndarray | None) -> np.ndarray: ...

    def __call__(self, rgb: np.ndarray | None, audio: np.ndarray | None) -> np.ndarray:
        return self.run(rgb, audio)


@dataclass(frozen=True)
class Target:
    """What a runner is opened on: an artifact folder with its verified report, or a checkpoint with its payload."""

    kind: TargetKind
    path: Path
    #: ``report.json`` as :func:`avf.deploy.artifact.open_artifact` checked it (artifacts; read as a mapping).
    report: Any = None
    #: The checkpoint as :func:`avf.train.checkpoint.load_checkpoint` read it (checkpoints).
    payload: dict | None = None


@dataclass(frozen=True)
class RunOptions:
    """How the caller asked for the target to run; plain values, so they can be sent to another machine."""

    backend: str
    device: str = "cpu"
    threads: int | None = None
    #: A checkpoint's precision (one of its backend's ``precisions``); artifacts keep their own.
    precision: str | None = None
    cuda_graphs: bool = False
