"""Deployment manifests: everything the fleet needs to run, trust and re-check an artifact.

The manifest is a validated pydantic model (its JSON Schema is exported to
``docs/manifest.schema.json``); ``verify`` re-hashes every file it lists.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from avf import __version__
from avf.atomic import atomic_write_text
from avf.data.vocabulary import file_sha256
from avf.deploy.plan import predict_on_profile, read_artifact
from avf.deploy.profiles import DeviceProfile
from avf.errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Strict):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


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


class Decision(_Strict):
    deployable: bool
    reasons: list[str]


class DeploymentManifest(_Strict):
    manifest_version: Literal[1] = 1
    created: str
    avf_version: str
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
    latency_p50: Figure
    latency_p99: Figure
    memory: Figure
    energy_per_inference: Figure
    profile: str
    budgets: dict[str, float]
    prediction: dict
    decision: Decision


def build_manifest(artifact: str | Path, profile: DeviceProfile, bench: dict | None = None) -> DeploymentManifest:
    artifact = Path(artifact)
    report = read_artifact(artifact)
    if not report.get("accepted"):
        raise InputError(artifact, f"artifact was rejected by its retention gate ({report.get('reason')}); refusing to deploy it")
    files = []
    for name, entry in report["files"].items():
        path = artifact / name
        if not path.is_file():
            raise InputError(path, "listed in report.json but missing")
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise InputError(path, "sha256 differs from report.json (modified after avf-compress)")
        files.append(FileEntry(name=name, sha256=digest, bytes=path.stat().st_size))
    files.append(FileEntry(name="report.json", sha256=file_sha256(artifact / "report.json"),
                           bytes=(artifact / "report.json").stat().st_size))
    if bench is not None:
        _check_bench_matches(artifact, report, bench)
    prediction = predict_on_profile(report, profile)
    retention = report.get("retention")
    accuracy = Accuracy(evaluated=False)
    if retention:
        keys = ("gap", "map", "f1", "hit_at_one", "perr")
        accuracy = Accuracy(evaluated=True, data=retention.get("eval_data", {}).get("description"),
                            reference={k: retention["reference"][k] for k in keys},
                            compressed={k: retention["compressed"][k] for k in keys},
                            gap_retention=retention["ratios"]["gap"], min_retention=retention.get("min_retention"))
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
    if bench is None:
        reasons.append("no bench on the target: figures are predicted; run avf-bench on the device and pass --bench")
    io = report["io"]
    tensors = lambda items: [Tensor(name=k, dtype="float32", shape=v) for k, v in items.items()]  # noqa: E731
    tensorrt = report.get("tensorrt") or {}
    versions = report.get("versions", {})
    return DeploymentManifest(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), avf_version=__version__,
        artifact_dir=str(artifact.resolve()), files=files, checkpoint_sha256=report["checkpoint"]["sha256"],
        data_sha256={split: {Path(s["path"]).name: s.get("sha256") for s in sources}
                     for split, sources in (report.get("data") or {}).items() if sources},
        model=report["model"]["name"], parameters=report["parameters"], num_classes=report["num_classes"],
        vocabulary_sha256=report.get("vocabulary_sha256"), inputs=tensors(io["inputs"]), outputs=tensors(io["outputs"]),
        preprocessing=io["preprocessing"], precision=report["stages"][-1]["precision"],
        backend=(bench or {}).get("target_facts", {}).get("backend") or ("tensorrt" if tensorrt.get("built") else "onnxruntime"),
        runtime={"onnxruntime": versions.get("onnxruntime"), "onnx": versions.get("onnx"),
                 "tensorrt": tensorrt.get("tensorrt") if tensorrt.get("built") else None,
                 "tensorrt_status": None if tensorrt.get("built") else tensorrt.get("reason"),
                 "compute_capability": tensorrt.get("compute_capability") or profile.compute_capability,
                 "cuda": (bench or {}).get("conditions", {}).get("cuda")},
        accuracy=accuracy, latency_p50=latency_p50, latency_p99=latency_p99, memory=memory,
        energy_per_inference=energy, profile=profile.name,
        budgets={"latency_ms": budget_latency, "memory_mib": budget_memory}, prediction=prediction,
        decision=Decision(deployable=deployable, reasons=reasons))


def _check_bench_matches(artifact: Path, report: dict, bench: dict) -> None:
    """A bench of another model (or of the uncompressed checkpoint) must not pass as this artifact's."""
    facts = bench.get("target_facts", {})
    if facts.get("kind") != "artifact":
        raise InputError(artifact, f"the bench measured {bench.get('target')} (a {facts.get('kind')}), not this artifact")
    measured = facts.get("onnx_sha256")
    expected = report["files"].get("model.onnx", {}).get("sha256")
    if measured and expected and measured != expected:
        raise InputError(artifact, f"the bench measured another model.onnx ({bench.get('target')}), not this artifact's")


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


def write_manifest(manifest: DeploymentManifest, out: str | Path) -> None:
    atomic_write_text(out, manifest.model_dump_json(indent=2) + "\n")


def verify_manifest(path: str | Path) -> list[str]:
    """Problems found (empty when every listed file is present with the recorded sha256)."""
    path = Path(path)
    try:
        manifest = DeploymentManifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "manifest not found") from None
    except ValueError as exc:
        raise InputError(path, f"not a valid deployment manifest: {str(exc).splitlines()[0]}") from None
    folder = Path(manifest.artifact_dir)
    if not folder.is_dir():
        folder = path.parent / Path(manifest.artifact_dir).name
    problems = []
    for entry in manifest.files:
        file = folder / entry.name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file_sha256(file) != entry.sha256:
            problems.append(f"{file}: sha256 mismatch (expected {entry.sha256[:12]}…)")
    return problems


def export_schema(out: str | Path) -> None:
    Path(out).write_text(json.dumps(DeploymentManifest.model_json_schema(), indent=2) + "\n")
