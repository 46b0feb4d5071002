"""The one way every command opens an avf-compress artifact: report checked, files re-hashed.

``avf-bench``, ``avf predict``, ``avf-deploy plan``, ``manifest`` and ``triton`` all go through
:func:`open_artifact`, so a tampered ``model.onnx`` or a hand-edited ``report.json`` is refused
the same way everywhere, and the deployment commands refuse a rejected artifact.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from avf.data.vocabulary import file_sha256
from avf.documents import parse_mapping, read_text, validate
from avf.errors import InputError

REPORT = "report.json"


class _FileRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class _Stage(BaseModel):
    model_config = ConfigDict(extra="allow")
    stage: str


class _ModelRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _Report(BaseModel):
    """The parts of report.json the deployment commands rely on (the rest passes through)."""

    model_config = ConfigDict(extra="allow")
    format: str
    model: _ModelRecord
    num_classes: int = Field(ge=1)
    parameters: int = Field(ge=0)
    files: dict[str, _FileRecord]
    stages: list[_Stage] = Field(min_length=1)
    io: dict
    accepted: bool
    reason: str


def read_artifact(artifact: str | Path) -> dict:
    """report.json of an artifact directory, checked for the fields the toolkit reads."""
    artifact = Path(artifact)
    report_path = artifact / REPORT
    if artifact.is_file():
        raise InputError(artifact, "is a file; an avf-compress artifact is a directory (with model.onnx and report.json)")
    if not artifact.exists():
        raise InputError(artifact, "artifact not found")
    if not report_path.is_file():
        raise InputError(artifact, "not an avf-compress artifact (no report.json)")
    what = "an avf-compress report"
    report = parse_mapping(report_path, what, read_text(report_path, what))
    if report.get("format") != "avf-artifact":
        raise InputError(report_path, f"not {what} (format is {report.get('format')!r})")
    validate(report_path, what, report, _Report)
    if "model.onnx" not in report["files"]:
        raise InputError(report_path, "corrupt report: lists no model.onnx")
    if "precision" not in report["stages"][-1]:
        raise InputError(report_path, "corrupt report: the last stage names no precision")
    return report


def verify_files(artifact: Path, report: dict) -> None:
    """Every file report.json lists is present with its recorded sha256."""
    for name, entry in report["files"].items():
        path = artifact / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(artifact / REPORT, f"corrupt report: file name {name!r} points outside the artifact")
        if not path.is_file():
            raise InputError(path, "listed in report.json but missing")
        if file_sha256(path) != entry["sha256"]:
            raise InputError(path, "sha256 differs from report.json (modified after avf-compress)")


def open_artifact(artifact: str | Path, *, deploying: bool) -> dict:
    """The checked report of an artifact whose files match it; ``deploying`` also refuses a rejected one."""
    artifact = Path(artifact)
    report = read_artifact(artifact)
    verify_files(artifact, report)
    if deploying and not report["accepted"]:
        raise InputError(artifact, f"artifact was rejected by its retention gate ({report['reason']}); refusing to "
                                   "deploy it")
    return report
