"""``avf-deploy check``: score the deployed form itself on held-out data, against the FP32 reference.

The retention gate of avf-compress scores ``model.onnx`` in ONNX Runtime on the CPU; the engine a
device runs (a TensorRT plan, ONNX Runtime's CUDA/TensorRT providers, a Torch-TensorRT program) is
another program. A check runs it through its own backend's runner and the one scoring loop
(:func:`avf.runtime.scoring.score`), and compares it with the FP32 reference on the same videos.

It is two parts, so that the first can run on another machine:

* :func:`measure_check` runs where the engine runs (this machine, or a device reached over SSH): it
  opens the artifact (every file re-hashed), loads the data, scores the backend's runner and returns
  plain JSON data: the metrics, the runner's facts, the machine's conditions and the data's identity.
* :func:`check` runs on the workstation: the reference figures (report.json's own, when its retention
  was measured on the same videos, by ``content_sha256``; otherwise the checkpoint report.json names,
  its sha256 verified, scored here by the PyTorch runner on the same data), the retention ratios,
  the verdict against the artifact's ``min_retention``; it returns a :class:`CheckRecord`.

:func:`run_check` is the command: both parts and the record written through :mod:`avf.atomic`.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from avf import __version__
from avf.atomic import check_output, create_file
from avf.compress.report import MODEL_FILE, REPORT_FILE, ArtifactReport
from avf.documents import read_mapping, validate
from avf.errors import InputError
from avf.runtime import registry
from avf.runtime.runner import RunnerFacts, RunOptions, Target

FORMAT = "avf-check"
MEASUREMENT_FORMAT = "avf-check-measurement"
#: The metrics a check compares (as the retention gate does: avf.compress.retention.COMPARED).
COMPARED = ("gap", "map", "f1", "hit_at_one", "perr")
#: The bar when report.json records none (CompressOptions.min_retention's default).
DEFAULT_MIN_RETENTION = 0.99
CHECK_GLOB = "check-*.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Scores(BaseModel):
    """The official metrics of one model on the data (precision, recall, num_videos kept beside them)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    gap: float = Field(ge=0, le=1)
    map: float = Field(ge=0, le=1)
    f1: float = Field(ge=0, le=1)
    hit_at_one: float = Field(ge=0, le=1)
    perr: float = Field(ge=0, le=1)


class DataIdentity(_Strict):
    """Which videos were scored: the files and their sha256, and the hash of exactly what scoring saw."""

    description: str
    videos: int = Field(ge=1)
    files: int = Field(ge=0)
    sha256: dict[str, str | None]
    #: :meth:`avf.train.data.TrainingData.content_sha256`: the same on every machine that loads the same videos.
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Reference(_Strict):
    """Where the FP32 reference figures came from."""

    source: Literal["report", "checkpoint"]
    #: In words: which report/checkpoint, and why this source.
    detail: str
    checkpoint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: The runner that scored the reference here (source ``checkpoint``); report.json's runtime otherwise.
    runner: RunnerFacts | None = None
    method: str


class CheckRecord(_Strict):
    """check.json: the deployed form of an artifact scored on held-out data, against the FP32 reference."""

    format: Literal["avf-check"] = FORMAT
    version: Literal[1] = 1
    created: str
    avf_version: str
    #: The artifact folder as given where the check ran, and the model.onnx it checked (what a reader matches).
    artifact: str
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    model: str
    precision: str
    #: The --backend it ran on (the registry's name) and the runner's facts (device, providers, versions).
    backend: str
    runner: RunnerFacts
    #: Where it was measured: host, machine, CPU, GPU, runtime versions (avf.deploy.bench.conditions + host).
    conditions: dict[str, JsonValue]
    data: DataIdentity
    videos: int = Field(ge=1)
    deployed: Scores
    reference: Scores
    reference_source: Reference
    #: deployed / reference per metric; None where the reference is 0.
    retention: dict[str, float | None]
    min_retention: float = Field(ge=0)
    passed: bool
    reason: str
    method: str
    batch_size: int = Field(ge=1)
    #: Wall-clock seconds of the deployed form's scoring loop (data loading excluded).
    seconds: float = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> CheckRecord:
        if self.videos != self.data.videos:
            raise ValueError(f"videos {self.videos} differs from data.videos {self.data.videos}")
        gap = self.retention.get("gap")
        if self.passed != (gap is not None and gap >= self.min_retention):
            raise ValueError(f"passed is {self.passed}, but GAP retention {gap} against min_retention "
                             f"{self.min_retention} says otherwise")
        return self


# ----------------------------------------------------------------------------- on the device


def measure_check(artifact_dir: str | Path, data: str | Path, backend: str = "auto", batch_size: int = 512,
                  threads: int | None = None, device: str = "cpu",
                  progress: Callable[[int], None] | None = None) -> dict:
    """Score the artifact's deployed form (``backend``'s runner) on ``data``; plain JSON data.

    Returns ``{"format": "avf-check-measurement", "version": 1, "artifact", "onnx_sha256", "backend",
    "runner" (RunnerFacts as JSON), "conditions" (host, machine, CPU/GPU, versions, time), "data"
    (DataIdentity as JSON), "metrics" (:func:`avf.runtime.scoring.score`: gap, map, hit_at_one, perr,
    f1, precision, recall, num_videos), "batch_size", "seconds", "method"}``. Needs no PyTorch for
    artifact backends (the device side of ``--target``).
    """
    from avf.data.vocabulary import check_same_vocabulary
    from avf.deploy.artifact import open_artifact
    from avf.deploy.bench import conditions
    from avf.runtime.scoring import score
    from avf.threads import default_threads
    from avf.train.data import load_training_data

    artifact_dir = Path(artifact_dir)
    chosen = _backend(artifact_dir, backend)
    if batch_size < 1:
        raise InputError(None, f"--batch-size {batch_size}: must be >= 1")
    report = open_artifact(artifact_dir, deploying=False)  # every file re-hashed; a rejected one may be checked
    labelled = _load_data(data, report, load_training_data, check_same_vocabulary)
    threads = threads or default_threads()
    runner = chosen.open(Target("artifact", artifact_dir, report=report), RunOptions(chosen.name, device, threads))
    facts: RunnerFacts = runner.facts
    _same_sizes(artifact_dir, report, facts, data, labelled)
    start = time.perf_counter()
    metrics = score(runner, labelled, batch_size, progress=progress)
    seconds = time.perf_counter() - start
    return {"format": MEASUREMENT_FORMAT, "version": 1, "artifact": str(artifact_dir.resolve()),
            "onnx_sha256": report.model_file.sha256, "backend": facts.backend,
            "runner": facts.model_dump(mode="json"),
            "conditions": {"host": socket.gethostname(), **conditions(threads, facts.device)},
            "data": identity(labelled), "metrics": metrics, "batch_size": batch_size, "seconds": seconds,
            "method": f"avf.runtime.scoring.score: the {facts.backend} runner over every video in batches of "
                      f"{batch_size}, official YouTube-8M metrics (avf.metrics.EvaluationAccumulator, top 20, "
                      f"F1 at 0.5)"}


def identity(labelled) -> dict:
    """The data's identity as a check and report.json record it (sources_summary + content_sha256)."""
    return {**labelled.sources_summary(), "content_sha256": labelled.content_sha256()}


def _backend(artifact_dir: Path, name: str) -> registry.Backend:
    if name == "auto":
        return registry.default("artifact")
    chosen = registry.BY_NAME.get(name)
    if chosen is None:
        raise InputError(None, f"--backend {name!r}: unknown (choose from auto, {', '.join(registry.names('artifact'))})")
    if chosen.runs != "artifact":
        raise InputError(artifact_dir, f"--backend {name}: runs checkpoints; a check scores an artifact's deployed "
                                       f"form (choose from {', '.join(registry.names('artifact'))})")
    return chosen


def _load_data(data, report: ArtifactReport, load_training_data, check_same_vocabulary):
    try:
        labelled = load_training_data(data, report.num_classes)
    except InputError as exc:
        if "classes" not in exc.problem:
            raise
        raise InputError(exc.path, f"{exc.problem} (the artifact has {report.num_classes} classes)", exc.offset) from None
    check_same_vocabulary(report.vocabulary_sha256, "the artifact's report.json", labelled.vocabulary_sha256, data)
    return labelled


def _same_sizes(artifact_dir: Path, report: ArtifactReport, facts: RunnerFacts, data, labelled) -> None:
    widths = {"rgb": labelled.rgb.shape[1], "audio": labelled.audio.shape[1]}
    if {k: facts.inputs.get(k) for k in widths} != widths:
        raise InputError(data, f"data has {widths['rgb']}+{widths['audio']} features, the artifact expects "
                               f"{facts.inputs.get('rgb')}+{facts.inputs.get('audio')}")
    if facts.num_classes != report.num_classes:
        raise InputError(artifact_dir, f"the {facts.backend} runner gives {facts.num_classes} classes, report.json "
                                       f"says {report.num_classes}")


# ----------------------------------------------------------------------------- on the workstation


def check(artifact: str | Path, data: str | Path, backend: str, measured: dict, *, checkpoint: str | Path | None = None,
          threads: int | None = None, progress: Callable[[int], None] | None = None) -> CheckRecord:
    """The check record of ``measured`` (what :func:`measure_check` returned, here or on a device).

    The reference: report.json's retention figures when they were measured on the same videos (the data's
    ``content_sha256``), else the FP32 checkpoint (``checkpoint``, default the path report.json names; its
    sha256 must match report.json's) scored here with the PyTorch runner on ``data``, which must load to the
    same videos as on the device.
    """
    from avf.compress.retention import gate
    from avf.deploy.artifact import open_artifact

    artifact = Path(artifact)
    report = open_artifact(artifact, deploying=False)
    measured = _measurement(artifact, report, backend, measured)
    where = DataIdentity.model_validate(measured["data"])
    reference, source = _reference(artifact, report, data, where, measured, checkpoint, threads, progress)
    deployed = Scores.model_validate(measured["metrics"])
    ratios = {key: (getattr(deployed, key) / getattr(reference, key) if getattr(reference, key) else None)
              for key in COMPARED}
    min_retention = _min_retention(report)
    passed, reason = gate({"ratios": ratios, "reference": reference.model_dump(), "compressed": deployed.model_dump()},
                          min_retention)
    runner = RunnerFacts.model_validate(measured["runner"])
    return CheckRecord(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), avf_version=__version__,
        artifact=measured["artifact"], onnx_sha256=measured["onnx_sha256"], model=report.model.name,
        precision=report.precision, backend=measured["backend"], runner=runner, conditions=measured["conditions"],
        data=where, videos=where.videos, deployed=deployed, reference=reference, reference_source=source,
        retention=ratios, min_retention=min_retention, passed=passed,
        reason=f"{reason} ({runner.backend} on {runner.device}, {where.videos:,} videos)",
        method=measured["method"], batch_size=measured["batch_size"], seconds=measured["seconds"])


class _Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    format: Literal["avf-check-measurement"]
    version: Literal[1]
    artifact: str
    onnx_sha256: str
    backend: str
    runner: RunnerFacts
    conditions: dict[str, JsonValue]
    data: DataIdentity
    metrics: Scores
    batch_size: int = Field(ge=1)
    seconds: float = Field(ge=0)
    method: str


def _measurement(artifact: Path, report: ArtifactReport, backend: str, measured: dict) -> dict:
    """``measured`` checked as data that may have crossed a network: schema, the artifact, the backend."""
    validate(artifact, "a check measurement", measured, _Measurement)
    if measured["onnx_sha256"] != report.model_file.sha256:
        raise InputError(artifact, f"the measurement scored another model.onnx ({measured['artifact']}), not this "
                                   "artifact's")
    wanted = _backend(artifact, backend).name
    if measured["backend"] != wanted:
        raise InputError(artifact, f"the measurement ran on {measured['backend']}, not the asked --backend {wanted}")
    return measured


def _min_retention(report: ArtifactReport) -> float:
    if report.retention is not None and report.retention.min_retention is not None:
        return report.retention.min_retention
    recorded = (report.options or {}).get("min_retention")
    return float(recorded) if recorded is not None else DEFAULT_MIN_RETENTION


def _reference(artifact: Path, report: ArtifactReport, data, where: DataIdentity, measured: dict,
               checkpoint: str | Path | None, threads: int | None, progress) -> tuple[Scores, Reference]:
    retention = report.retention
    recorded = (retention.eval_data or {}).get("content_sha256") if retention is not None else None
    if recorded == where.content_sha256 and retention.videos == where.videos:
        return Scores.model_validate(retention.reference), Reference(
            source="report", checkpoint_sha256=report.checkpoint.sha256,
            detail=f"report.json's retention reference: measured by avf-compress on the same videos "
                   f"(content_sha256 {recorded[:12]}…, {where.videos:,} videos)",
            method=f"avf-compress retention gate: FP32 PyTorch reference, {retention.runtime or 'runtime unrecorded'} "
                   "for the artifact, avf.runtime.scoring in batches of 512")
    why = ("report.json has no retention figures" if retention is None
           else "report.json does not record the content hash of its evaluation data" if recorded is None
           else f"report.json's retention was measured on other videos "
                f"({(retention.eval_data or {}).get('description', 'undescribed')})")
    return _score_reference(artifact, report, data, where, measured, checkpoint, threads, progress, why)


def _score_reference(artifact: Path, report: ArtifactReport, data, where: DataIdentity, measured: dict,
                     checkpoint: str | Path | None, threads: int | None, progress, why: str) -> tuple[Scores, Reference]:
    from avf.data.vocabulary import check_same_vocabulary, file_sha256
    from avf.runtime.scoring import score
    from avf.train.checkpoint import load_checkpoint
    from avf.train.data import load_training_data

    path = Path(checkpoint) if checkpoint is not None else Path(report.checkpoint.path or "")
    if checkpoint is None and not report.checkpoint.path:
        raise InputError(artifact, f"{why}, and report.json names no checkpoint to score the FP32 reference from "
                                   "(pass --checkpoint)")
    if not path.is_file():
        raise InputError(path, f"{why}, so the FP32 reference is scored from the checkpoint report.json names; it "
                               "is not here (pass --checkpoint PATH to the same best.pt)")
    if file_sha256(path) != report.checkpoint.sha256:
        raise InputError(path, f"sha256 differs from the checkpoint report.json names ({report.checkpoint.sha256[:12]}…);"
                               " the reference must be the model this artifact was compressed from")
    labelled = _load_data(data, report, load_training_data, check_same_vocabulary)
    here = labelled.content_sha256()
    if here != where.content_sha256:
        raise InputError(data, f"loads to other videos here (content_sha256 {here[:12]}…) than where the check ran "
                               f"({where.content_sha256[:12]}…); give the same held-out data on both machines")
    payload = load_checkpoint(path)
    pytorch = registry.BY_NAME["pytorch"]
    runner = pytorch.open(Target("checkpoint", path, payload=payload), RunOptions("pytorch", "cpu", threads, "fp32"))
    batch_size = measured["batch_size"]
    metrics = score(runner, labelled, batch_size, progress=progress)
    return Scores.model_validate(metrics), Reference(
        source="checkpoint", checkpoint_sha256=report.checkpoint.sha256, runner=runner.facts,
        detail=f"{why}: scored here from the checkpoint {path} (sha256 matches report.json) on the same videos "
               f"(content_sha256 {here[:12]}…, {len(labelled):,} videos)",
        method=f"avf.runtime.scoring.score: the FP32 PyTorch runner on the CPU ({socket.gethostname()}) in batches of "
               f"{batch_size}")


# ----------------------------------------------------------------------------- the command


def default_check_path(artifact: str | Path, backend: str) -> Path:
    """ARTIFACT/check-BACKEND.json (``auto`` resolved to the backend it runs)."""
    return Path(artifact) / f"check-{_backend(Path(artifact), backend).name}.json"


def run_check(artifact: str | Path, data: str | Path, backend: str = "auto", out: str | Path | None = None,
              force: bool = False, batch_size: int = 512, threads: int | None = None, device: str = "cpu",
              checkpoint: str | Path | None = None, progress: Callable[[int], None] | None = None,
              target=None) -> tuple[CheckRecord, Path]:
    """``avf-deploy check``: measure here (or on ``target``, a RemoteDevice), check here, write check.json
    (atomically); (record, where written)."""
    out = Path(out) if out is not None else default_check_path(artifact, backend)
    inputs = [*artifact_inputs(artifact), checkpoint, *_data_files(data)]
    check_output(out, force=force, directory=False, inputs=inputs, what="check record")
    if target is None:
        measured = measure_check(artifact, data, backend, batch_size, threads, device, progress)
    else:
        from avf.remote.measure import measure_check_on

        measured = measure_check_on(target, Path(artifact), data, backend=backend, batch_size=batch_size,
                                    threads=threads, device_kind=device)
    record = check(artifact, data, backend, measured, checkpoint=checkpoint, threads=threads)
    write_check(record, out, force=force, inputs=inputs)
    return record, out


def artifact_inputs(artifact: str | Path) -> list[Path]:
    """The artifact folder and every file of it (report.json and the files it lists): an output may be written in
    the folder, never over one of them (not even with --force). An unreadable report is refused here."""
    from avf.deploy.artifact import read_artifact

    artifact = Path(artifact)
    report = read_artifact(artifact)
    return [artifact, artifact / REPORT_FILE, *(artifact / name for name in report.files)]


def _data_files(data) -> list[Path]:
    path = Path(str(data))
    return [path] if path.exists() else []


def write_check(record: CheckRecord, out: str | Path, force: bool = False, inputs=()) -> None:
    with create_file(out, force=force, inputs=inputs, what="check record") as tmp:
        tmp.write_text(record.model_dump_json(indent=2) + "\n")


# ----------------------------------------------------------------------------- reading one back


def read_check(path: str | Path) -> CheckRecord:
    """A check.json written by avf-deploy check, validated (format tag first, then every field)."""
    path = Path(path)
    what = "an avf-deploy check record"
    data = read_mapping(path, what)
    if data.get("format") != FORMAT:
        raise InputError(path, f"not {what} (format is {data.get('format')!r})")
    return validate(path, what, data, CheckRecord)


def check_record_of(path: str | Path, report: ArtifactReport, record: CheckRecord) -> None:
    """A check of another model.onnx must not pass as this artifact's."""
    if record.onnx_sha256 != report.files[MODEL_FILE].sha256:
        raise InputError(path, f"the check scored another model.onnx ({record.artifact}), not this artifact's")


def find_checks(artifact: str | Path) -> list[Path]:
    """ARTIFACT/check-*.json, in name order."""
    return sorted(Path(artifact).glob(CHECK_GLOB))
