"""``report.json``: the artifact's one typed record, from avf-compress to every command that reads it.

``compress()`` builds an :class:`ArtifactReport` and writes it; ``CompressionRejected`` carries it;
``open_artifact`` reads it back through this same model; plan, manifest, Triton, tune and the demo read
its attributes. The file's name and format tag are defined here only.

Readers need the fields they use, and only those: provenance that no command reads back (``created``,
``options``, ``versions``, ...) may be missing from a report, fields of a newer avf pass through, and
every field is written exactly as it was set (a report read and written again is the same document).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avf.atomic import json_file_says
from avf.compress.precisions import PrecisionName

REPORT_FILE, MODEL_FILE, ENGINE_FILE = "report.json", "model.onnx", "model.plan"
#: The INT8 artifact's ONNX Runtime CPU form (INT32 bias dequantization, which its fused QGemm kernels need);
#: model.onnx is the TensorRT-parsable form (see :mod:`avf.compress.tensorrt_check`).
CPU_MODEL_FILE = "model.cpu.onnx"
FORMAT = "avf-artifact"
#: --force replaces a folder only when it is an artifact avf-compress wrote.
is_artifact = json_file_says(REPORT_FILE, "format", FORMAT)


class ReportPart(BaseModel):
    """A part of report.json: typed fields, unknown ones kept."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, key: str) -> Any:
        """``part["key"]``: report.json was read as a plain dict before it had a model, and code (and tests) still
        written that way read the same values; new code reads attributes."""
        if key in type(self).model_fields:
            return getattr(self, key)
        try:
            return (self.__pydantic_extra__ or {})[key]
        except KeyError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


class FileRecord(ReportPart):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class CheckpointRecord(ReportPart):
    path: str | None = None
    sha256: str
    epoch: int | None = None
    metrics: dict[str, Any] | None = None


class ModelRecord(ReportPart):
    """The checkpoint's model settings (``name`` and the constructor's arguments)."""

    name: str


class FoldStage(ReportPart):
    stage: Literal["fold"]
    params_before: int
    params_after: int
    rewrites: list[str]
    max_logit_difference: float | None = None
    checked_on: str | None = None


class PruneStage(ReportPart):
    stage: Literal["prune"]
    ratio: float
    channels_removed: float
    params_before: int
    params_after: int
    hidden_widths: list[int]
    #: Set when the pruned model was distilled from the unpruned one (--finetune-epochs > 0).
    finetune_epochs: int | None = None
    finetune_lr: float | None = None
    finetune_losses: list[float] | None = None
    finetune_videos: int | None = None
    finetune_device: str | None = None  # where the distillation ran (cpu, or the GPU's name)


class Calibration(ReportPart):
    method: str
    videos: int
    data: dict[str, Any]


class PrecisionStage(ReportPart):
    stage: Literal["precision"]
    precision: PrecisionName
    method: str | None = None
    calibration: Calibration | None = None
    kept_float: list[str] | None = None
    #: int4: the MatMulNBits block size and accuracy level (absent from reports before they were options: 32, 4).
    block_size: int | None = None
    accuracy_level: int | None = None


Stage = Annotated[Union[FoldStage, PruneStage, PrecisionStage], Field(discriminator="stage")]


class TensorRTCheck(ReportPart):
    tensorrt_compatible: bool
    problems: list[str]
    rewrites_for_tensorrt: list[str] | None = None
    checked: str | None = None


class TensorRTBuild(ReportPart):
    """The engine avf-compress or ``avf-deploy build`` built (``file``), or why none was built (``reason``)."""

    built: bool
    reason: str | None = None
    file: str | None = None
    #: The TensorRT version that built the engine (an engine runs only with that version, on that GPU).
    tensorrt: str | None = None
    compute_capability: str | None = None
    #: The GPU it was built on (its CUDA device name) and what built it (avf-compress / avf-deploy build).
    device: str | None = None
    built_by: str | None = None
    #: The ONNX file TensorRT parsed, as shipped (no rewrite at build time).
    onnx: str | None = None


class TorchAotBuild(ReportPart):
    """The AOTInductor package (``model.pt2``) avf-compress or ``avf-deploy build`` compiled, and for what."""

    built: bool
    file: str | None = None
    #: ``cpu`` or ``cuda``: a package runs on the device kind it was compiled for, with the PyTorch that compiled it.
    device: str | None = None
    device_name: str | None = None
    precision: str | None = None
    torch: str | None = None
    #: The compressed model as weights (model.pt), from which the package is compiled again on another machine.
    weights: str | None = None
    built_by: str | None = None


class CpuModel(ReportPart):
    """Why the artifact carries a second ONNX for ONNX Runtime on the CPU, and how close the two are."""

    file: str
    reason: str
    #: Largest |p(model.onnx) - p(model.cpu.onnx)| in ONNX Runtime CPU on ``checked_on``.
    max_probability_difference: float | None = None
    checked_on: str | None = None


class IO(ReportPart):
    inputs: dict[str, list[str | int]]
    outputs: dict[str, list[str | int]]
    dtype: str
    preprocessing: str


Metrics = dict[str, int | float | None]


class Retention(ReportPart):
    """The compressed model against the FP32 reference on held-out videos (the gate's evidence)."""

    videos: int
    reference: Metrics
    compressed: Metrics
    #: compressed / reference per metric; None where the reference is 0.
    ratios: dict[str, float | None]
    max_probability_difference: float
    eval_data: dict[str, Any] | None = None
    runtime: str | None = None
    min_retention: float | None = None
    #: The GAP ratio's one-sided lower confidence bound ({confidence, lower, resamples, method}); None in older reports.
    gap_bound: dict[str, Any] | None = None

    @property
    def agreement(self) -> tuple[str, float] | None:
        """(``topK_agreement``, its value): the share of the top-K classes both models rank (K depends on the classes)."""
        for key, value in (self.__pydantic_extra__ or {}).items():
            if re.fullmatch(r"top\d+_agreement", key):
                return key, value
        return None


class ArtifactReport(ReportPart):
    format: Literal[FORMAT]  # type: ignore[valid-type]
    version: int = 1
    created: str | None = None
    checkpoint: CheckpointRecord
    model: ModelRecord
    num_classes: int = Field(ge=1)
    vocabulary_sha256: str | None = None
    #: The checkpoint's data sources per split ({"train": [{"path", "sha256"}, ...], ...}).
    data: dict[str, Any] | None = None
    #: The CompressOptions the artifact was made with, as JSON.
    options: dict[str, Any] | None = None
    stages: list[Stage] = Field(min_length=1)
    tensorrt_check: TensorRTCheck | None = None
    tensorrt_compatible: bool | None = None
    tensorrt: TensorRTBuild | None = None
    #: Set for --backend torch-aot: the compiled PyTorch package.
    torch_aot: TorchAotBuild | None = None
    #: Set when ONNX Runtime's CPU provider runs another file than model.onnx (the INT8 artifact's model.cpu.onnx).
    cpu_model: CpuModel | None = None
    files: dict[str, FileRecord]
    io: IO
    parameters: int = Field(ge=0)
    #: None when no evaluation data was given (the artifact is then not deployable).
    retention: Retention | None = None
    accepted: bool
    reason: str
    versions: dict[str, str] | None = None

    @property
    def precision(self) -> str:
        """The artifact's precision (its last stage's; :func:`avf.deploy.artifact.read_artifact` checks there is one)."""
        return self.stages[-1].precision

    @property
    def model_file(self) -> FileRecord:
        return self.files[MODEL_FILE]

    @property
    def cpu_model_name(self) -> str:
        """The file ONNX Runtime's CPU provider runs: model.cpu.onnx where the artifact lists one, else model.onnx."""
        return cpu_model_name(self.files)

    def to_json(self) -> str:
        """report.json's text: every field as it was set, no other."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True, fallback=_plain), indent=2) + "\n"


def cpu_model_name(files) -> str:
    """:attr:`ArtifactReport.cpu_model_name` of a report's ``files`` (a report read as a plain mapping works too)."""
    return CPU_MODEL_FILE if CPU_MODEL_FILE in files else MODEL_FILE


def write_report(report: ArtifactReport, folder: Path) -> Path:
    """report.json in ``folder`` (the artifact's temporary folder, renamed into place as a whole)."""
    path = folder / REPORT_FILE
    path.write_text(report.to_json())
    return path


def _plain(value: Any) -> Any:
    """Numpy scalars and paths in the untyped parts (checkpoint metrics, data sources) as JSON values."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
