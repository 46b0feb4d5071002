"""``avf-compress``: checkpoint -> fold -> prune -> export -> precision -> check -> score -> report.

:func:`compress` is that sequence of stage functions. The model passes between them in memory: a PyTorch
module through fold and prune, then one ``onnx.ModelProto`` from the export through the precision builder
(:mod:`avf.compress.precisions`), written once as model.onnx. Everything is written into a temporary
directory beside the target and renamed into place at the end, so a failure or Ctrl-C never leaves a
half-made artifact. ``report.json`` (an :class:`~avf.compress.report.ArtifactReport`) records each stage,
the files with their sha256, and the gate's verdict.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avf.atomic import atomic_directory, check_output
from avf.compress.export import OPSET, export_model, require_onnx, save_model, set_metadata, write_metadata
from avf.compress.fold import count_parameters, fold_model
from avf.compress.options import CompressOptions
from avf.compress.precisions import calibrating, precision_named
from avf.compress.prune import check_ratio_honoured, distill, distill_device, hidden_widths, prune_channels
from avf.compress.quantize import BuildInputs, shipped_models
from avf.compress.report import (CPU_MODEL_FILE, ENGINE_FILE, FORMAT, IO, MODEL_FILE, REPORT_FILE, ArtifactReport,
                                 CheckpointRecord, CpuModel, FileRecord, FoldStage, ModelRecord, PrecisionStage,
                                 PruneStage, Retention, TensorRTBuild, TensorRTCheck, TorchAotBuild, is_artifact,
                                 write_report)
from avf.compress.retention import compare_on_data, gate
from avf.compress.runtime import OnnxModel
from avf.compress.tensorrt_check import check_tensorrt_compatibility
from avf.compress.tensorrt_engine import build_engine, unavailable_reason
from avf.compress.torch_tensorrt_engine import unavailable_reason as torch_tensorrt_unavailable
from avf.data.vocabulary import check_same_vocabulary, file_sha256
from avf.errors import InputError
from avf.runtime.pytorch_model import PyTorchRunner
from avf.train.checkpoint import load_checkpoint, model_from_checkpoint
from avf.train.data import TrainingData, load_training_data

__all__ = ["CompressOptions", "CompressionRejected", "compress", "is_artifact", "ENGINE_FILE", "MODEL_FILE",
           "REPORT_FILE"]
INT8_NEEDS_DATA = "INT8 needs calibration and evaluation data: pass --calib/--eval"
#: tests/test_gpu_paths.py puts the deployment metadata back on an INT8 file it quantized itself.
_restore_metadata = write_metadata


class CompressionRejected(Exception):
    """The artifact was written but failed the retention gate (exit code 3); carries its report."""

    def __init__(self, artifact: Path, report: ArtifactReport):
        super().__init__(f"{artifact}: rejected: {report.reason}")
        self.artifact, self.report = artifact, report

    @property
    def reason(self) -> str:
        return self.report.reason


@dataclass
class _Job:
    """What the stages read: the options, and the checkpoint and data, loaded and checked once."""

    options: CompressOptions
    payload: dict
    #: The FP32 model as trained: the gate's reference, the distillation teacher's source.
    reference: nn.Module
    eval_data: TrainingData | None
    calib_data: TrainingData | None
    checkpoint_sha256: str
    created: str

    @property
    def config(self) -> dict:
        return self.payload["model"]

    @property
    def settings(self) -> dict:
        return self.payload.get("settings") or {}


def compress(options: CompressOptions, say: Callable[[str], None] = lambda line: None,
             progress: Callable | None = None, distill_cache=None) -> ArtifactReport:
    """Run the stages; returns the report. Raises CompressionRejected (carrying it) after writing a rejected artifact.

    ``distill_cache`` (``load(options) -> dict | None``, ``save(options, model, losses)``; see
    :mod:`avf.tune.cache`) lets a search reuse one pruned+distilled model for every precision.
    """
    require_onnx()
    final = options.artifact_dir()
    inputs = [options.checkpoint, options.train, options.calib, options.eval]
    check_output(final, force=options.force, directory=True, ours=is_artifact, what="artifact folder", inputs=inputs)
    job = _load(options)
    model, stages = job.reference, []
    params = count_parameters(model)
    if options.fold:
        model, stage = _fold(job, model, say)
        stages.append(stage)
        params = stage.params_after
    if options.prune:
        model, stage = _prune(job, model, params, say, progress, distill_cache)
        stages.append(stage)
        params = stage.params_after
    with atomic_directory(final, options.force, ours=is_artifact, what="artifact folder", inputs=inputs) as tmp:
        metadata = _metadata(job, params)
        onnx_model, stage = _precision(job, _export(job, model, metadata, say), tmp)
        stages.append(stage)
        shipped = _write_model(onnx_model, metadata, tmp)
        check = _check_tensorrt(shipped.model, say)
        tensorrt = _compile(job, model, tmp, check, say)
        cpu_model = _cpu_model(job, tmp, shipped, say)
        package = _torch_aot(job, model, tmp, say) if options.backend == "torch-aot" else None
        retention, accepted, reason = _score(job, _deployed_form(job, tmp, cpu_model, package), say, progress)
        report = _report(job, stages, check, tensorrt, _files(tmp), params, retention, accepted, reason)
        if cpu_model is not None:
            report.cpu_model = cpu_model
        if package is not None:
            report.torch_aot = package
        write_report(report, tmp)
    if not report.accepted:
        raise CompressionRejected(final, report)
    return report


# ----------------------------------------------------------------------------- stages


def _load(options: CompressOptions) -> _Job:
    """The checkpoint and the data, every combination of options that cannot work refused before any work."""
    payload = load_checkpoint(options.checkpoint)
    reference = model_from_checkpoint(payload, options.checkpoint).eval()
    config = payload["model"]
    precision = precision_named(options.precision)
    if config.get("tokens", "single") != "single":
        raise InputError(options.checkpoint, f"tokens={config['tokens']!r} models cannot be compressed yet (single only)")
    if options.backend == "tensorrt" and (reason := unavailable_reason()):
        raise InputError(options.checkpoint, f"--backend tensorrt: engine not built: {reason}")
    if options.backend == "torch-tensorrt" and (reason := torch_tensorrt_unavailable()):
        raise InputError(options.checkpoint, f"--backend torch-tensorrt: not compiled: {reason}")
    if not precision.built_by(options.backend):
        raise InputError(None, f"--{precision.name} is built by --backend {' or '.join(precision.backends)} only, "
                               f"not {options.backend}")
    if options.backend == "torch-aot":
        from avf.compress import torch_aot

        if options.precision not in torch_aot.PRECISIONS:
            raise InputError(None, f"--backend torch-aot compiles {', '.join(torch_aot.PRECISIONS)}, not "
                                   f"{options.precision} (static INT8 and INT4 are ONNX formats: ONNX Runtime or TensorRT)")
        device = torch_aot.resolve_device(options.device)
        if reason := torch_aot.unavailable_reason(device, options.precision):
            raise InputError(options.checkpoint, f"--backend torch-aot ({device}): not compiled: {reason}")
    elif options.device != "auto":
        raise InputError(None, "--device applies to --backend torch-aot only (the other backends' artifacts are "
                               "ONNX models, device-independent)")
    if options.backend == "torch-tensorrt" and precision.cpu_only:
        raise InputError(None, "--backend torch-tensorrt builds fp32, fp16 or int8; weights-only INT8 is an ONNX "
                               "Runtime CPU format")
    if options.keep_float and not precision.calibrates:
        raise InputError(None, f"keep_float (layers kept in float) applies to {' and '.join(calibrating())} only")
    for field, flag in (("int4_block", "--int4-block"), ("int4_accuracy_level", "--int4-accuracy-level")):
        if getattr(options, field) is not None and options.precision != "int4":
            raise InputError(None, f"{flag} ({field}) applies to --int4 only, not {options.precision}")
    settings = payload.get("settings") or {}
    eval_data = _data(options.eval or _recorded(settings.get("val")), payload, reference, "evaluation",
                      options.checkpoint)
    if eval_data is not None and options.eval_size:
        eval_data = eval_data.subset(np.arange(min(options.eval_size, len(eval_data))))
    calib_data = None
    if precision.calibrates:
        calib_data = _data(options.calib or _recorded(settings.get("train")), payload, reference, "calibration",
                           options.checkpoint)
        if calib_data is None or eval_data is None:
            raise InputError(options.checkpoint, INT8_NEEDS_DATA)
    return _Job(options, payload, reference, eval_data, calib_data, file_sha256(options.checkpoint),
                dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def _fold(job: _Job, model: nn.Module, say) -> tuple[nn.Module, FoldStage]:
    """Dropout, single-token attention and adjacent linear maps folded away, checked on a probe batch."""
    say("fold: dropout, single-token attention and adjacent linear maps")
    probe_data = job.eval_data or job.calib_data
    probe = _probe_inputs(probe_data, job.reference)
    folded = fold_model(model, probe)
    difference = folded.max_logit_difference
    say(f"  {folded.params_before:,} -> {folded.params_after:,} parameters "
        f"(-{1 - folded.params_after / folded.params_before:.1%}), largest logit change {difference:.2e}")
    return folded.model, FoldStage(stage="fold", params_before=folded.params_before, params_after=folded.params_after,
                                   rewrites=folded.rewrites, max_logit_difference=difference,
                                   checked_on=f"{len(probe[0])} {_probe_kind(probe_data)}")


def _prune(job: _Job, teacher: nn.Module, params: int, say, progress, distill_cache) -> tuple[nn.Module, PruneStage]:
    """Hidden channels removed by L2 magnitude, then (--finetune-epochs) distilled from the unpruned model."""
    options, config = job.options, job.config
    say(f"prune: {options.prune:.0%} of hidden channels by L2 magnitude (multiples of 8)")
    model = prune_channels(teacher, options.prune, config["rgb_dim"], config["audio_dim"])
    achieved = check_ratio_honoured(options.prune, hidden_widths(teacher), hidden_widths(model))
    stage = {"stage": "prune", "ratio": options.prune, "channels_removed": round(achieved, 4), "params_before": params,
             "params_after": count_parameters(model), "hidden_widths": sorted(set(hidden_widths(model)))}
    if options.finetune_epochs:
        train_data = _data(options.train or _recorded(job.settings.get("train")), job.payload, job.reference,
                           "training", options.checkpoint)
        if train_data is None:
            raise InputError(options.checkpoint, "pruning fine-tune needs training data: pass --train "
                             "(or --finetune-epochs 0)")
        cached = distill_cache.load(options) if distill_cache is not None else None
        if cached is not None:
            model.load_state_dict(cached["state_dict"])
            losses = cached["losses"]
            say(f"  distilled model reused from {cached['source']}")
        else:
            say(f"  distilling from the unpruned model: {options.finetune_epochs} epochs on {len(train_data):,} videos")
            with _bar(progress, "distill", options.finetune_epochs * len(train_data)) as advance:
                soft = distill_cache.soft_targets(options, teacher, train_data) if distill_cache is not None else None
                losses = distill(model, teacher, train_data, options.finetune_epochs, lr=options.finetune_lr,
                                 seed=options.seed, on_batch=advance, soft_targets=soft,
                                 on_epoch=lambda e, loss: say(f"  epoch {e}: distillation loss {loss:.5f}"))
            if distill_cache is not None:
                distill_cache.save(options, model, losses)
        stage.update(finetune_epochs=options.finetune_epochs, finetune_lr=options.finetune_lr, finetune_losses=losses,
                     finetune_videos=len(train_data), finetune_device=_device_name(distill_device()))
    say(f"  {params:,} -> {stage['params_after']:,} parameters")
    return model, PruneStage(**stage)


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _export(job: _Job, model: nn.Module, metadata: dict, say):
    """The PyTorch model as an FP32 ONNX model, in memory."""
    say(f"export: ONNX (opset {OPSET}), then {job.options.precision}")
    return export_model(model, job.config["rgb_dim"], job.config["audio_dim"], metadata)


def _precision(job: _Job, onnx_model, tmp: Path):
    """The FP32 export turned into the chosen precision by its builder; (the model, its report stage).

    The builder's scratch files (ONNX Runtime's quantizers work on files) live in a folder inside the
    artifact's temporary folder, removed before the artifact's files are listed.
    """
    options = job.options
    precision = precision_named(options.precision)
    stage: dict = {"stage": "precision", "precision": precision.name}
    inputs: dict = {}
    if precision.name == "int4":
        inputs = options.int4_parameters()
        stage.update(inputs)
    if precision.calibrates:
        rows = _calibration_rows(options, job.calib_data)
        inputs = {"calibration": _batches(job.calib_data, rows), "calib_method": options.calib_method,
                  "exclude": options.keep_float}
        stage["calibration"] = {"method": options.calib_method, "videos": int(len(rows)),
                                "data": job.calib_data.sources_summary()}
        if options.keep_float:
            stage["kept_float"] = list(options.keep_float)
    with tempfile.TemporaryDirectory(dir=tmp, prefix=".quantize.") as workdir:
        build_inputs = BuildInputs(Path(workdir), **inputs)
        built = precision.build(onnx_model, build_inputs)
    if precision.method:
        stage["method"] = precision.method(build_inputs) if callable(precision.method) else precision.method
    return built, PrecisionStage(**stage)


def _write_model(onnx_model, metadata: dict, tmp: Path):
    """model.onnx (TensorRT-parsable as it is) and, where ONNX Runtime's CPU provider is faster on the builder's
    own graph (static INT8: INT32 bias dequantization), model.cpu.onnx beside it; the one time each is written
    (the quantizers rebuild the graph without its metadata). Returns :class:`~avf.compress.quantize.ShippedModels`."""
    shipped = shipped_models(onnx_model)
    for model, name in ((shipped.model, MODEL_FILE), (shipped.cpu_model, CPU_MODEL_FILE)):
        if model is not None:
            set_metadata(model, metadata)
            save_model(model, tmp / name)
    return shipped


def _cpu_model(job: _Job, tmp: Path, shipped, say) -> CpuModel | None:
    """The report's record of model.cpu.onnx, with how far its probabilities are from model.onnx's (ONNX Runtime CPU)."""
    if shipped.cpu_model is None:
        return None
    rgb, audio = (t.numpy() for t in _probe_inputs(job.eval_data or job.calib_data, job.reference))
    difference = float(np.abs(OnnxModel(tmp / MODEL_FILE).run(rgb, audio)
                              - OnnxModel(tmp / CPU_MODEL_FILE).run(rgb, audio)).max())
    say(f"  {CPU_MODEL_FILE}: INT32 bias form for ONNX Runtime CPU (fused QGemm); {MODEL_FILE}: folded for TensorRT "
        f"(largest probability difference {difference:.1e})")
    return CpuModel(file=CPU_MODEL_FILE, reason=f"{MODEL_FILE} is TensorRT-parsable as shipped ({'; '.join(shipped.rewrites)}); "
                    f"ONNX Runtime's CPU provider fuses the INT32 bias form into QGemm, measured 2.3x faster at batch "
                    f"1 on a paper-size Attend-Fusion, so {CPU_MODEL_FILE} keeps it for onnxruntime on the CPU",
                    max_probability_difference=difference,
                    checked_on=f"{len(rgb)} {_probe_kind(job.eval_data or job.calib_data)}")


def _check_tensorrt(onnx_model, say) -> TensorRTCheck:
    """Whether TensorRT can take model.onnx (checked without TensorRT), as written: no rewrite at check time."""
    check = TensorRTCheck.model_validate(check_tensorrt_compatibility(onnx_model))
    say("tensorrt check: " + ("compatible" if check.tensorrt_compatible else
                              "not compatible: " + "; ".join(check.problems)))
    return check


def _compile(job: _Job, model: nn.Module, tmp: Path, check: TensorRTCheck, say) -> TensorRTBuild:
    """The engine --backend asked for (model.plan or model.ep), or why there is none."""
    options = job.options
    if options.backend == "torch-tensorrt":
        from avf.compress.torch_tensorrt_engine import compile_and_save

        say("torch-tensorrt: compiling (ir=dynamo)")
        calibration = None if job.calib_data is None else _batches(job.calib_data, _calibration_rows(options, job.calib_data))
        return TensorRTBuild.model_validate(compile_and_save(model, tmp, options.precision, job.config["rgb_dim"],
                                                             job.config["audio_dim"], calibration=calibration))
    return TensorRTBuild.model_validate(_tensorrt(options, tmp / MODEL_FILE, tmp, say, check))


def _torch_aot(job: _Job, model: nn.Module, tmp: Path, say) -> TorchAotBuild:
    """model.pt (the compressed model as weights) and model.pt2 (it compiled by AOTInductor for the device)."""
    from avf.compress import torch_aot

    options = job.options
    device = torch_aot.resolve_device(options.device)
    torch.save(torch_aot.weights_payload(model, job.config, job.payload["num_classes"], options.fold,
                                         options.precision),
               tmp / torch_aot.WEIGHTS_FILE)
    say(f"torch-aot: torch.export + AOTInductor, {options.precision} on {device} (compiling: tens of seconds)")
    if options.precision == "fp8" and device == "cpu":
        say("  note: a CPU has no FP8 arithmetic: this package runs PyTorch's reference FP8 kernel, right for checking "
            "accuracy, not for speed (FP8 pays on Ada and Hopper GPUs)")
    facts = torch_aot.compile_package(model, tmp / torch_aot.PROGRAM_FILE, options.precision, device,
                                      job.config["rgb_dim"], job.config["audio_dim"], source=options.checkpoint)
    say(f"  {facts['file']}: {facts['bytes']:,} bytes, compiled in {facts['compile_seconds']:.1f} s "
        f"for {facts['device_name']}")
    return TorchAotBuild.model_validate({**facts, "weights": torch_aot.WEIGHTS_FILE})


def _deployed_form(job: _Job, tmp: Path, cpu_model: CpuModel | None, package: TorchAotBuild | None):
    """(what the gate runs, its description): the compiled package for torch-aot, else the ONNX file ONNX Runtime's
    CPU provider runs."""
    if package is not None:
        from avf.runtime.torch_aot_program import TorchAotRunner

        config = job.config
        runner = TorchAotRunner(tmp / package.file, package.device, {"rgb": config["rgb_dim"], "audio": config["audio_dim"]},
                                job.payload["num_classes"], package.precision, model=config["name"])
        return runner, f"torch-aot {package.file} on {package.device} ({package.device_name})"
    name = CPU_MODEL_FILE if cpu_model else MODEL_FILE
    return OnnxModel(tmp / name), f"onnxruntime CPUExecutionProvider ({name})"


def _score(job: _Job, deployed, say, progress) -> tuple[Retention | None, bool, str]:
    """The retention gate: the FP32 PyTorch reference against the deployed form; (retention, accepted, reason)."""
    eval_data = job.eval_data
    if eval_data is None:
        say("retention: not measured (no evaluation data)")
        return None, True, "not evaluated: no evaluation data (pass --eval)"
    runtime, description = deployed
    say(f"retention: FP32 PyTorch reference vs the artifact ({description}) on {len(eval_data):,} videos")
    with _bar(progress, "evaluate", len(eval_data)) as advance:
        comparison = compare_on_data(PyTorchRunner(job.reference), runtime, eval_data, progress=advance,
                                     confidence=job.options.retention_confidence)
    # content_sha256: what avf-deploy check compares to reuse these reference figures on the same videos
    comparison["eval_data"] = {**eval_data.sources_summary(), "content_sha256": eval_data.content_sha256()}
    comparison["runtime"] = description
    accepted, reason = gate(comparison, job.options.min_retention, job.options.retention_confidence)
    comparison["min_retention"] = job.options.min_retention
    return Retention.model_validate(comparison), accepted, reason


def _report(job: _Job, stages: list, check: TensorRTCheck, tensorrt: TensorRTBuild, files: dict[str, FileRecord],
            params: int, retention: Retention | None, accepted: bool, reason: str) -> ArtifactReport:
    options, payload, config = job.options, job.payload, job.config
    return ArtifactReport(
        format=FORMAT, version=1, created=job.created,
        checkpoint=CheckpointRecord(path=str(options.checkpoint.resolve()), sha256=job.checkpoint_sha256,
                                    epoch=payload.get("epoch"), metrics=payload.get("metrics")),
        model=ModelRecord.model_validate(config), num_classes=payload["num_classes"],
        vocabulary_sha256=payload.get("vocabulary_sha256"), data=payload.get("data"),
        options=json.loads(options.model_dump_json()), stages=stages, tensorrt_check=check,
        tensorrt_compatible=check.tensorrt_compatible, tensorrt=tensorrt, files=files,
        io=IO(inputs={"rgb": ["batch", config["rgb_dim"]], "audio": ["batch", config["audio_dim"]]},
              outputs={"probabilities": ["batch", payload["num_classes"]]}, dtype="float32",
              preprocessing="YouTube-8M video-level mean_rgb and mean_audio, dequantized to float32"),
        parameters=params, retention=retention, accepted=accepted, reason=reason, versions=_versions())


# ----------------------------------------------------------------------------- helpers


def _metadata(job: _Job, params: int) -> dict:
    """The deployment metadata model.onnx carries (what avf-bench and predict read without the report)."""
    payload = job.payload
    return {"model": job.config["name"], "num_classes": payload["num_classes"],
            "vocabulary_sha256": payload.get("vocabulary_sha256") or "",
            "precision": precision_named(job.options.precision).onnx_precision,
            "parameters": params, "checkpoint_sha256": job.checkpoint_sha256, "producer": "avf-compress"}


def _files(folder: Path) -> dict[str, FileRecord]:
    """The artifact's files (hidden scratch excluded) with their sha256 and size."""
    return {p.name: FileRecord(sha256=file_sha256(p), bytes=p.stat().st_size)
            for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _calibration_rows(options: CompressOptions, calib_data: TrainingData) -> np.ndarray:
    """The seeded calibration sample (the same videos for the ONNX and the Torch-TensorRT INT8 builds)."""
    return np.sort(np.random.default_rng(options.seed).permutation(len(calib_data))[:options.calib_size])


def _tensorrt(options: CompressOptions, artifact: Path, tmp: Path, say, check: TensorRTCheck) -> dict:
    """Build model.plan only when --backend tensorrt asked for it (README: never as a side effect)."""
    if options.backend != "tensorrt":
        return {"built": False, "reason": f"engine not built: --backend {options.backend} (pass --backend tensorrt "
                                          "to build model.plan)"}
    reason = unavailable_reason()
    if reason:
        say(f"tensorrt: engine not built: {reason}")
        return {"built": False, "reason": f"engine not built: {reason}"}
    if precision_named(options.precision).cpu_only:
        return {"built": False, "reason": f"engine not built: {options.precision} weights-only is an ONNX Runtime CPU format"}
    if not check.tensorrt_compatible:
        return {"built": False, "reason": "engine not built: not TensorRT-compatible: " + "; ".join(check.problems)}
    say("tensorrt: building the engine")
    return build_engine(artifact, tmp / ENGINE_FILE, options.precision)


def _recorded(spec: str | None) -> str | None:
    """A data path recorded in the checkpoint, if it still exists here."""
    if not spec:
        return None
    path = Path(spec)
    return spec if path.exists() or any(path.parent.glob(path.name)) else None


def _data(spec: str | None, payload: dict, model, role: str, checkpoint: Path | None = None) -> TrainingData | None:
    """``spec`` loaded for the checkpoint ``payload`` (read from ``checkpoint``): its class count, vocabulary, feature sizes."""
    if spec is None:
        return None
    data = load_training_data(spec, payload["num_classes"])
    check_same_vocabulary(payload.get("vocabulary_sha256"), checkpoint or "the checkpoint", data.vocabulary_sha256, spec)
    if data.rgb.shape[1] != model.rgb_dim or data.audio.shape[1] != model.audio_dim:
        raise InputError(spec, f"{role} data has {data.rgb.shape[1]}+{data.audio.shape[1]} features, the model "
                         f"expects {model.rgb_dim}+{model.audio_dim}")
    return data


def _probe_inputs(data: TrainingData | None, model) -> tuple[torch.Tensor, torch.Tensor]:
    if data is None:
        generator = torch.Generator().manual_seed(0)
        return torch.randn(256, model.rgb_dim, generator=generator), torch.randn(256, model.audio_dim, generator=generator)
    rgb, audio, _ = data.batch(np.arange(min(256, len(data))))
    return torch.from_numpy(rgb), torch.from_numpy(audio)


def _probe_kind(data: TrainingData | None) -> str:
    return "real held-out videos" if data is not None else "random inputs (no data given)"


def _batches(data: TrainingData, rows: np.ndarray, batch_size: int = 256):
    for start in range(0, len(rows), batch_size):
        rgb, audio, _ = data.batch(rows[start:start + batch_size])
        yield rgb, audio


@contextlib.contextmanager
def _bar(progress, description: str, total: int):
    if progress is None:
        yield lambda n=1: None
    else:
        with progress(description, total) as advance:
            yield advance


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
