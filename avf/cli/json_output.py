"""``--json``: one JSON document on stdout (the command's result), everything human on stderr.

A command with ``--json`` prints exactly one JSON document on stdout and nothing else there: its tables,
status lines and notes go to stderr (:func:`human`), so ``avf bench A --json | python -m json.tool`` works.
Exit codes do not change (``avf deploy verify --json`` still exits 1 on a mismatch, after its JSON).

Every JSON form has a pydantic model, and its JSON Schema is ``Model.model_json_schema()``, committed as
``docs/schemas/<form>.schema.json`` by ``tools/write_schemas.py`` (as ``docs/manifest.schema.json`` is for the
manifest). Where the command prints a document it wrote, the model is that document's (``BenchRecord``,
``DeploymentManifest``, ``CheckRecord``, ``StoreManifest``); the ad-hoc results are modelled here. A new
``--json`` form adds one line to :func:`schemas` and re-runs the tool.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, RootModel
from rich.console import Console

from avf.deploy.bench_record import BenchRecord
from avf.deploy.profiles import DeviceProfile

#: The console of human output when stdout is the human's (no ``--json``).
_stdout = Console()


def json_option(form: str) -> Any:
    """The ``--json`` option of a command whose JSON form is ``form`` (a key of :func:`schemas`)."""
    return typer.Option(False, "--json", help=f"Print the result as one JSON document on stdout (schema: "
                                              f"docs/schemas/{form}.schema.json); tables and notes go to stderr.")


def human(as_json: bool) -> Console:
    """Where a command's human output goes: stdout, or stderr under ``--json`` (stdout then holds the JSON only)."""
    if as_json:
        from avf.cli.progress import stderr

        return stderr
    return _stdout


def emit(document: BaseModel | dict | list) -> None:
    """Print ``document`` as the command's one JSON document on stdout (a model as its own JSON, aliases and all;
    a mapping or list as it is, which for a document the command wrote is the file's content)."""
    if isinstance(document, BaseModel):
        text = document.model_dump_json(indent=2, by_alias=True)
    else:
        text = json.dumps(document, indent=2, allow_nan=False)
    typer.echo(text)


# ----------------------------------------------------------------------------- the ad-hoc results


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelRow(_Result):
    """One model of the zoo."""

    name: str
    #: Parameters counted on the built module (for the --classes and input sizes asked for).
    params: int = Field(ge=0)
    #: The paper's count for 4716 classes (None where the paper gives none).
    paper_params: int | None


class ModelsResult(RootModel[list[ModelRow]]):
    """``avf models --json``: every model of the registry."""


class ProfilesResult(RootModel[list[DeviceProfile] | DeviceProfile]):
    """``avf profiles --json``: every shipped profile (a list); ``avf profiles NAME``: that one profile."""


class FeatureStats(_Result):
    """Statistics over every feature value (empty when none was read)."""

    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    mean_l2_norm: float | None = None


class TopClass(_Result):
    index: int = Field(ge=0)
    name: str
    videos: int = Field(ge=0)


class LabelStats(_Result):
    occurrences: int = Field(ge=0)
    per_video_mean: float = Field(ge=0)
    per_video_min: int = Field(ge=0)
    per_video_max: int = Field(ge=0)
    videos_without_labels: int = Field(ge=0)
    classes_present: int = Field(ge=0)
    #: The share of all labels held by the most frequent 10% of the classes.
    top10pct_classes_share: float = Field(ge=0, le=1)
    top_classes: list[TopClass]


class FrameStats(_Result):
    total: int = Field(ge=0)
    min: int = Field(ge=0)
    mean: float = Field(ge=0)
    max: int = Field(ge=0)


class InspectResult(_Result):
    """``avf data inspect --json``: what is in TFRecords or a feature store (every record read and checked)."""

    source: str
    kind: Literal["tfrecord", "feature-store"]
    level: Literal["video", "frame"]
    #: TFRecords: the shards read and their bytes.
    shards: int | None = None
    bytes: int | None = None
    #: A feature store: how many source shards it was converted from, and its feature dtype.
    sources: int | None = None
    feature_dtype: str | None = None
    videos: int = Field(ge=0)
    num_classes: int = Field(ge=1)
    labels: LabelStats
    rgb: FeatureStats
    audio: FeatureStats
    #: Frame-level data: frames per video.
    frames: FrameStats | None = None
    #: The vocabulary.csv used for class names (None: none found).
    vocabulary: str | None


class SynthResult(_Result):
    """``avf data synth --json``: what was written."""

    out_dir: str
    level: Literal["video", "frame"]
    classes: int = Field(ge=1)
    seed: int = Field(ge=0)
    #: Videos per split (train, validate, test).
    videos: dict[str, int]
    #: The files written, relative to out_dir.
    files: list[str]


class StoreVerifyResult(_Result):
    """``avf data verify --json``: the store checked as every command checks it on opening (else exit 2)."""

    store: str
    #: Always true: a store that fails a check is one ``error:`` line and exit 2, not a result.
    intact: Literal[True] = True
    level: Literal["video", "frame"]
    videos: int = Field(ge=0)
    num_classes: int = Field(ge=1)
    #: The array files checked against the sha256 recorded at conversion, and their bytes.
    arrays: int = Field(ge=1)
    array_bytes: int = Field(ge=0)
    verify_seconds: float = Field(ge=0)


class PlanBatch(_Result):
    batch: int = Field(ge=1)
    latency_ms: float = Field(ge=0)
    samples_per_s: float = Field(ge=0)
    bound: Literal["memory", "compute"]


class PlanFloor(_Result):
    floor_ms: float = Field(ge=0)
    bandwidth_source: str


class Prediction(_Result):
    """The roofline prediction of an artifact on a profile (:func:`avf.deploy.plan.predict_on_profile`)."""

    profile: str
    precision: str
    compute_precision: str
    weight_bytes: int = Field(ge=0)
    floor: PlanFloor
    parameters: int = Field(ge=0)
    batches: list[PlanBatch]
    latency_ms: float = Field(ge=0)
    memory_mib: float = Field(ge=0)
    energy_mj_per_inference: float = Field(ge=0)
    fits: bool
    reasons: list[str]
    notes: list[str]
    method: str
    predicted: Literal[True]


#: bench.json's ``scenarios`` (its model in avf.deploy.bench_record).
BenchScenarios = BenchRecord.model_fields["scenarios"].annotation


class PlanResult(_Result):
    """``avf deploy plan --json``: the prediction, and the bench's scenarios when --bench was given."""

    prediction: Prediction
    measured: BenchScenarios | None  # type: ignore[valid-type]


class FileCheck(_Result):
    #: The file's name as the manifest lists it (relative to the artifact folder).
    name: str
    ok: bool
    #: What is wrong with it (missing, sha256 mismatch, a link, outside the manifest's folder); None when ok.
    problem: str | None = None


class VerifyResult(_Result):
    """``avf deploy verify --json``: every file the manifest lists, re-hashed (exit 1 when ok is false)."""

    manifest: str
    #: The artifact folder, relative to the manifest (as the manifest records it).
    artifact_dir: str
    ok: bool
    files: list[FileCheck]
    #: Every problem, as the human output prints them (one per file that failed).
    problems: list[str]


class TimingCache(BaseModel):
    model_config = ConfigDict(extra="allow")

    file: str | None = None
    loaded: bool | None = None


class MeasuredOn(_Result):
    target: str
    remote_path: str


class BuildResult(BaseModel):
    """``avf deploy build --json``: the build facts (also recorded in report.json's tensorrt / torch_aot part)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    backend: Literal["tensorrt", "torch-aot"]
    built: Literal[True]
    #: The artifact folder built in (on the device, with --target).
    artifact: str
    #: model.plan or model.pt2, its sha256 and bytes as report.json now lists them.
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    precision: str
    #: tensorrt: the GPU's name; torch-aot: cpu or cuda (device_name names it).
    device: str
    built_by: str
    #: tensorrt: the TensorRT version, the GPU's compute capability and the timing cache used.
    tensorrt: str | None = None
    compute_capability: str | None = None
    timing_cache: TimingCache | None = None
    #: torch-aot: the PyTorch that compiled the package, the device's name and the compile time.
    torch: str | None = None
    device_name: str | None = None
    compile_seconds: float | None = Field(None, ge=0)
    #: With --target: the device and the folder of its copy of the artifact.
    measured_on: MeasuredOn | None = None


class TritonResult(_Result):
    """``avf deploy triton --json``: the model added to the repository."""

    name: str
    repository: str
    folder: str
    platform: Literal["onnxruntime_onnx", "tensorrt_plan"]
    max_batch: int = Field(ge=1)
    instance_kind: Literal["KIND_GPU", "KIND_CPU"]
    #: The files of the model's folder, relative to it.
    files: list[str]


class PredictResult(_Result):
    """``avf predict --json``: where the predictions went."""

    target: str
    data: str
    out: str
    videos: int = Field(ge=0)
    top_k: int = Field(ge=1)


class DemoSummary(_Result):
    """``avf demo --json``: the demo's summary (also written to OUT/summary.json)."""

    gap_fp32: float
    gap_int8: float
    gap_retention: float
    f1_fp32: float
    f1_int8: float
    size_fp32_mb: float
    size_int8_mb: float
    latency_fp32_p50_ms: float
    latency_int8_p50_ms: float
    speedup: float
    deployable: bool
    reasons: list[str]
    profile: str
    folder: str
    eval_videos: int
    files: list[str]


# ----------------------------------------------------------------------------- the registry


class Metrics(BaseModel):
    """The official metrics (avf/metrics.py), as avf eval and training's validation report them."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    gap: float
    map: float | None = None
    hit_at_one: float | None = None
    perr: float | None = None
    f1: float | None = None
    num_videos: int | None = None


class EvalResult(_Result):
    checkpoint: str
    data: str
    model: str
    epoch: int | None = None
    metrics: Metrics


class TrainResult(BaseModel):
    """``avf train --json``: the best epoch (as best.pt is chosen) and the last, the resolved settings, the run."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    out: str
    checkpoints: dict[str, str]
    best_epoch: int | None
    best: dict[str, Any] | None
    last: dict[str, Any] | None
    epochs_done: int = Field(ge=0)
    stopped_early: int | None = None
    settings: dict[str, Any]
    run: dict[str, Any] | None = None


class TuneResult(BaseModel):
    """``avf tune --json``: the search's state, as OUT/tune.json holds it (the chosen candidate, or the closest)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    status: str
    profile: str
    constraints: dict[str, Any]
    objective: str
    costs: str
    space: dict[str, Any]
    strategy: dict[str, Any]
    candidates: int = Field(ge=0)
    chosen: dict[str, Any] | None
    closest: dict[str, Any] | None = None
    pareto: dict[str, list[str]] | None = None


def schemas() -> dict[str, type[BaseModel]]:
    """Every ``--json`` form (``docs/schemas/<form>.schema.json``) and its model, in the CLI's order."""
    from avf.compress.report import ArtifactReport
    from avf.data.feature_store import StoreManifest
    from avf.deploy.check import CheckRecord
    from avf.deploy.manifest import DeploymentManifest

    return {
        "data-synth": SynthResult,
        "data-convert": StoreManifest,
        "data-inspect": InspectResult,
        "data-verify": StoreVerifyResult,
        "models": ModelsResult,
        "train": TrainResult,
        "eval": EvalResult,
        "compress": ArtifactReport,
        "profiles": ProfilesResult,
        "bench": BenchRecord,
        "predict": PredictResult,
        "deploy-plan": PlanResult,
        "deploy-manifest": DeploymentManifest,
        "deploy-check": CheckRecord,
        "deploy-verify": VerifyResult,
        "deploy-build": BuildResult,
        "deploy-triton": TritonResult,
        "demo": DemoSummary,
        "tune": TuneResult,
    }


def schema_text(model: type[BaseModel]) -> str:
    """The committed form of a model's JSON Schema (as ``docs/manifest.schema.json`` is written)."""
    return json.dumps(model.model_json_schema(), indent=2) + "\n"
