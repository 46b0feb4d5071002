"""Deployment manifests: everything the fleet needs to run, trust and re-check an artifact.

The manifest is a validated pydantic model (its JSON Schema is exported to
``docs/manifest.schema.json``); ``verify`` re-hashes every file it lists.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from avf import __version__
from avf.atomic import create_file
from avf.compress.report import REPORT_FILE
from avf.data.vocabulary import file_sha256
from avf.deploy.artifact import open_artifact
from avf.documents import read_document
from avf.deploy.bench_record import check_bench_of
from avf.deploy.check import check_record_of, find_checks, read_check
from avf.deploy.plan import predict_on_profile
from avf.deploy.profiles import DeviceProfile
from avf.errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _inside(path: str) -> str:
    """A path in a manifest is relative to the manifest and stays below its folder."""
    if not path or Path(path).is_absolute() or "\\" in path or ".." in Path(path).parts:
        raise ValueError(f"{path!r} must be a relative path below the manifest's folder (no absolute or '..' paths)")
    return path


class FileEntry(_Strict):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _name_inside(cls, value: str) -> str:
        return _inside(value)


class Tensor(_Strict):
    name: str
    dtype: Literal["float32"]
    shape: list[str | int]


class Accuracy(_Strict):
    evaluated: bool
    data: str | None = None
    reference: dict[str, float] | None = None
    compressed: dict[str, float] | None = None
    gap_retention: float | None = None
    min_retention: float | None = None


class Figure(_Strict):
    """A performance figure: measured (with its source) or predicted, never unlabelled."""

    status: Literal["measured", "predicted", "not available"]
    value: float | None = None
    unit: str
    source: str


class CheckEntry(_Strict):
    """An ``avf-deploy check`` of this artifact's deployed form (check.json, hashed as it was read)."""

    #: The check file's name as given (or found in the artifact folder) and its sha256 when the manifest was made.
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    backend: str
    #: Where it ran: the runner's device (cpu, cuda) and the machine's name (GPU, else CPU; and the host).
    device: str
    machine: str
    videos: int
    data_content_sha256: str
    gap_retention: float | None
    min_retention: float
    passed: bool
    reference_source: Literal["report", "checkpoint"]
    created: str


class Decision(_Strict):
    deployable: bool
    #: False when avf-compress never scored the artifact on held-out data: then it is not deployable.
    accuracy_checked: bool
    reasons: list[str]
    #: Problems accepted by an option (``--allow-unchecked``): deployable, but said.
    warnings: list[str] = []


class DeploymentManifest(_Strict):
    #: 3 added ``checks`` and ``decision.warnings``; a version-2 manifest still reads (and verifies).
    manifest_version: Literal[2, 3] = 3
    created: str
    avf_version: str
    #: The artifact folder, relative to the manifest's own folder (the two ship together).
    artifact_dir: str
    files: list[FileEntry] = Field(min_length=1)
    checkpoint_sha256: str
    data_sha256: dict[str, dict[str, str | None]]
    model: str
    parameters: int
    num_classes: int
    vocabulary_sha256: str | None
    inputs: list[Tensor]
    outputs: list[Tensor]
    preprocessing: str
    precision: str
    backend: str
    runtime: dict[str, str | None]
    accuracy: Accuracy
    #: avf-deploy check records of the deployed form on held-out data (GPU/Jetson profiles need one that passes on
    #: the profile's preferred backend).
    checks: list[CheckEntry] = []
    latency_p50: Figure
    latency_p99: Figure
    memory: Figure
    energy_per_inference: Figure
    profile: str
    budgets: dict[str, float]
    prediction: dict
    decision: Decision

    @field_validator("artifact_dir")
    @classmethod
    def _artifact_inside(cls, value: str) -> str:
        return value if value == "." else _inside(value)



def artifact_dir_for(artifact: Path, manifest_path: Path) -> str:
    """The artifact's path relative to the manifest's folder; the manifest must sit at or above it."""
    base = manifest_path.resolve().parent
    folder = artifact.resolve()
    if not folder.is_relative_to(base):
        raise InputError(manifest_path, f"a manifest ships with its artifact, so it must be written in {artifact} or a "
                                        f"folder above it (e.g. {artifact.parent / 'manifest.json'})")
    relative = folder.relative_to(base)
    return relative.as_posix() if relative.parts else "."


def build_manifest(artifact: str | Path, profile: DeviceProfile, bench: dict | None = None, *,
                   manifest_path: str | Path, checks: list[str | Path] | None = None,
                   allow_unchecked: bool = False) -> DeploymentManifest:
    """The manifest of ``artifact`` for ``profile``, to be written at ``manifest_path`` (its paths are relative to it).

    ``checks``: check.json files of this artifact (default: ARTIFACT/check-*.json). On a GPU or Jetson profile a
    manifest without a passing check on the profile's preferred backend is not deployable, unless
    ``allow_unchecked`` (then deployable, with the reason as a warning).
    """
    artifact = Path(artifact)
    report = open_artifact(artifact, deploying=True)
    check_entries = _checks(artifact, report, find_checks(artifact) if checks is None else [Path(c) for c in checks])
    artifact_dir = artifact_dir_for(artifact, Path(manifest_path))
    files = [FileEntry(name=name, sha256=entry.sha256, bytes=(artifact / name).stat().st_size)
             for name, entry in report.files.items()]
    files.append(FileEntry(name=REPORT_FILE, sha256=file_sha256(artifact / REPORT_FILE),
                           bytes=(artifact / REPORT_FILE).stat().st_size))
    if bench is not None:
        check_bench_of(artifact, report, bench)
    prediction = predict_on_profile(report, profile)
    retention = report.retention
    accuracy = Accuracy(evaluated=False)
    if retention is not None:
        keys = ("gap", "map", "f1", "hit_at_one", "perr")
        accuracy = Accuracy(evaluated=True, data=(retention.eval_data or {}).get("description"),
                            reference={k: retention.reference[k] for k in keys},
                            compressed={k: retention.compressed[k] for k in keys},
                            gap_retention=retention.ratios["gap"], min_retention=retention.min_retention)
    latency_p50, latency_p99, memory, energy = _performance(prediction, bench)
    reasons, deployable = [], True
    budget_latency, budget_memory = profile.budgets.latency_ms, profile.budgets.memory_mib
    for figure, budget, what, unit in ((latency_p99, budget_latency, "p99 latency", "ms"), (memory, budget_memory, "memory", "MiB")):
        if figure.value is None:
            deployable = False
            reasons.append(f"{what}: {figure.status}")
        elif figure.value > budget:
            deployable = False
            reasons.append(f"{what} {figure.value:.3f} {unit} ({figure.status}) exceeds the budget {budget:g} {unit}")
        else:
            reasons.append(f"{what} {figure.value:.3f} {unit} ({figure.status}) within the budget {budget:g} {unit}")
    if prediction["compute_precision"] not in profile.precisions:
        deployable = False
        reasons.append(f"{profile.display_name} does not support {prediction['compute_precision']}")
    if not accuracy.evaluated:
        deployable = False
        reasons.append("accuracy never checked: the artifact was compressed without evaluation data; re-run "
                       "avf-compress with --eval")
    warnings = []
    reasons += [f"note: {note}" for note in prediction.get("notes", [])]  # e.g. a TensorRT avf does not drive
    for reason, blocking in _check_reasons(profile, check_entries, report):
        if blocking and allow_unchecked:
            warnings.append(reason)
            reasons.append(f"warning (--allow-unchecked): {reason}")
        else:
            deployable = deployable and not blocking
            reasons.append(reason)
    if bench is None:
        reasons.append("no bench on the target: figures are predicted; run avf-bench on the device and pass --bench")
    io = report.io
    tensors = lambda items: [Tensor(name=k, dtype="float32", shape=v) for k, v in items.items()]  # noqa: E731
    tensorrt = report.tensorrt
    built = tensorrt is not None and tensorrt.built
    versions = report.versions or {}
    return DeploymentManifest(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), avf_version=__version__,
        artifact_dir=artifact_dir, files=files, checkpoint_sha256=report.checkpoint.sha256,
        data_sha256={split: {Path(s["path"]).name: s.get("sha256") for s in sources}
                     for split, sources in (report.data or {}).items() if sources},
        model=report.model.name, parameters=report.parameters, num_classes=report.num_classes,
        vocabulary_sha256=report.vocabulary_sha256, inputs=tensors(io.inputs), outputs=tensors(io.outputs),
        preprocessing=io.preprocessing, precision=report.precision,
        backend=(bench or {}).get("target_facts", {}).get("backend") or ("tensorrt" if built else "onnxruntime"),
        runtime={"onnxruntime": versions.get("onnxruntime"), "onnx": versions.get("onnx"),
                 **({"torch": report.torch_aot.torch, "torch_aot_device": report.torch_aot.device}
                    if report.torch_aot is not None and report.torch_aot.built else {}),
                 "tensorrt": tensorrt.tensorrt if built else None,
                 "tensorrt_status": None if built or tensorrt is None else tensorrt.reason,
                 "compute_capability": (tensorrt.compute_capability if tensorrt is not None else None)
                 or profile.compute_capability,
                 "cuda": (bench or {}).get("conditions", {}).get("cuda")},
        accuracy=accuracy, checks=check_entries, latency_p50=latency_p50, latency_p99=latency_p99, memory=memory,
        energy_per_inference=energy, profile=profile.name,
        budgets={"latency_ms": budget_latency, "memory_mib": budget_memory}, prediction=prediction,
        decision=Decision(deployable=deployable, accuracy_checked=accuracy.evaluated, reasons=reasons,
                          warnings=warnings))


#: What the manifest says of a GPU or Jetson profile whose preferred backend no passing check covers.
CPU_ONLY = "retention measured on ONNX Runtime CPU only"


def _checks(artifact: Path, report, paths: list[Path]) -> list[CheckEntry]:
    """Each check file read, validated and matched to this artifact's model.onnx."""
    entries = []
    for path in paths:
        record = read_check(path)
        check_record_of(path, report, record)
        conditions = record.conditions
        machine = conditions.get("gpu") or conditions.get("cpu") or "unknown machine"
        if conditions.get("host"):
            machine = f"{machine} on {conditions['host']}"
        entries.append(CheckEntry(
            file=str(path), sha256=file_sha256(path), backend=record.backend, device=record.runner.device,
            machine=str(machine), videos=record.videos, data_content_sha256=record.data.content_sha256,
            gap_retention=record.retention.get("gap"), min_retention=record.min_retention, passed=record.passed,
            reference_source=record.reference_source.source, created=record.created))
    return entries


def _check_reasons(profile: DeviceProfile, checks: list[CheckEntry], report=None) -> list[tuple[str, bool]]:
    """(reason, whether it blocks deployment) for the checks against the profile.

    A failed check on the profile's preferred backend blocks on every profile. A GPU or Jetson profile
    also needs a passing check on its preferred backend: the retention gate scored model.onnx on ONNX
    Runtime's CPU provider, not the engine the device runs. A CPU profile is covered by that gate. An
    artifact whose engine is a CUDA torch-aot package is deployed as that package: its gate already scored
    the package itself on the GPU, and a check covers it on the torch-aot backend.
    """
    wanted = profile.preferred_backend
    package = getattr(report, "torch_aot", None)
    if profile.kind != "cpu" and package is not None and package.built and package.device == "cuda":
        wanted = "torch-aot"
        if report.retention is not None and report.accepted:
            return [(f"retention gate scored the deployed package itself ({report.retention.runtime})", False)]
    reasons = []
    for entry in checks:
        ratio = "undefined" if entry.gap_retention is None else f"{entry.gap_retention:.4f}"
        verdict = "passed" if entry.passed else "FAILED"
        blocking = not entry.passed and entry.backend == wanted
        reasons.append((f"check on {entry.backend} ({entry.device}, {entry.machine}): GAP retention {ratio} vs "
                        f"{entry.min_retention:g} on {entry.videos:,} videos, {verdict} ({entry.file})", blocking))
    if profile.kind != "cpu" and not any(entry.passed and entry.backend == wanted for entry in checks):
        reasons.append((f"{CPU_ONLY}: no passing avf-deploy check on {wanted} ({profile.display_name}'s preferred "
                        f"backend); run avf-deploy check ARTIFACT --data HELDOUT --backend {wanted} on the device and "
                        "pass --check, or --allow-unchecked", True))
    return reasons


def _performance(prediction: dict, bench: dict | None) -> tuple[Figure, Figure, Figure, Figure]:
    predicted = "avf-deploy plan roofline estimate for the profile (" + prediction["method"].split(";")[0] + ")"
    if bench is None or "single-stream" not in bench.get("scenarios", {}):
        return (Figure(status="predicted", value=prediction["latency_ms"], unit="ms", source=predicted),
                Figure(status="predicted", value=prediction["latency_ms"], unit="ms", source=predicted),
                Figure(status="predicted", value=prediction["memory_mib"], unit="MiB", source=predicted),
                Figure(status="predicted", value=prediction["energy_mj_per_inference"], unit="mJ",
                       source="board power x predicted latency (upper bound)"))
    single = bench["scenarios"]["single-stream"]
    where = f"avf-bench single-stream on {bench['conditions'].get('gpu') or bench['conditions'].get('cpu')}"
    memory = bench["memory"]
    on_device = memory.get("device", {})
    if on_device.get("measured") and on_device.get("model_device_mib") is not None:  # a GPU run: GPU memory
        memory_figure = Figure(status="measured", value=on_device["model_device_mib"], unit="MiB",
                               source="avf-bench: " + on_device["source"])
    else:
        memory_figure = Figure(status="measured", value=memory["model_rss_mib"], unit="MiB",
                               source="avf-bench: resident memory added by loading the model")
    energy = single["energy"]
    return (Figure(status="measured", value=single["p50_ms"], unit="ms", source=where),
            Figure(status="measured", value=single["p99_ms"], unit="ms", source=where),
            memory_figure,
            Figure(status="measured", value=energy["millijoules_per_inference"], unit="mJ", source=energy["source"])
            if energy["measured"] else Figure(status="not available", unit="mJ", source=energy["reason"]))


def write_manifest(manifest: DeploymentManifest, out: str | Path, force: bool = False, inputs=()) -> None:
    with create_file(out, force=force, inputs=inputs, what="manifest") as tmp:
        tmp.write_text(manifest.model_dump_json(indent=2) + "\n")


def read_manifest(path: str | Path) -> DeploymentManifest:
    return read_document(path, "a deployment manifest", DeploymentManifest)[1]


def verify_manifest(path: str | Path) -> list[str]:
    """Problems found (empty when every listed file is present, below the manifest, with its recorded sha256).

    Files are looked up relative to the manifest itself, never at the path where it was built, so
    a shipped copy is checked as shipped.
    """
    path = Path(path)
    manifest = read_manifest(path)
    base = path.resolve().parent
    folder = base / manifest.artifact_dir
    problems = []
    for entry in manifest.files:
        file = folder / entry.name
        if file.is_symlink():  # as open_artifact refuses it: a link can be re-pointed after hashing
            problems.append(f"{file}: is a symbolic link (to {os.readlink(file)}); an avf artifact holds regular "
                            "files only")
        elif not file.resolve().is_relative_to(base):
            problems.append(f"{file}: resolves outside the manifest's folder (a link?); refusing to trust it")
        elif not file.is_file():
            problems.append(f"{file}: missing")
        elif file_sha256(file) != entry.sha256:
            problems.append(f"{file}: sha256 mismatch (expected {entry.sha256[:12]}…)")
    return problems


def export_schema(out: str | Path) -> None:
    Path(out).write_text(json.dumps(DeploymentManifest.model_json_schema(), indent=2) + "\n")
