"""``avf-compress``: checkpoint -> fold -> prune -> precision -> ONNX (+ TensorRT) -> retention gate.

Everything is written into a temporary directory beside the target and renamed into place
at the end, so a failure or Ctrl-C never leaves a half-made artifact. ``report.json`` records
each stage, the files with their sha256, and the gate's verdict.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from avf.atomic import atomic_directory, check_output, json_file_says
from avf.compress import quantize
from avf.compress.export import OPSET, export_onnx, require_onnx
from avf.compress.fold import count_parameters, fold_model
from avf.compress.prune import check_ratio_honoured, distill, hidden_widths, prune_channels
from avf.compress.retention import compare_on_data, gate
from avf.compress.runtime import OnnxModel
from avf.compress.tensorrt_check import check_tensorrt_compatibility
from avf.compress.tensorrt_engine import build_engine, unavailable_reason
from avf.compress.torch_tensorrt_engine import unavailable_reason as torch_tensorrt_unavailable
from avf.data.vocabulary import check_same_vocabulary, file_sha256
from avf.errors import InputError
from avf.train.checkpoint import load_checkpoint, model_from_checkpoint
from avf.train.data import TrainingData, load_training_data

REPORT, MODEL_FILE, ENGINE_FILE = "report.json", "model.onnx", "model.plan"
#: --force replaces a folder only when it is an artifact avf-compress wrote.
is_artifact = json_file_says(REPORT, "format", "avf-artifact")
INT8_NEEDS_DATA = "INT8 needs calibration and evaluation data: pass --calib/--eval"


class CompressOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf are no settings

    checkpoint: Path
    out: Path | None = None
    force: bool = False
    fold: bool = True
    prune: float | None = Field(None, gt=0.0, lt=1.0)
    finetune_epochs: int = Field(1, ge=0)
    finetune_lr: float = 1e-4
    train: str | None = None
    precision: Literal["fp32", "fp16", "int8", "int8-dynamic", "int4"] = "fp32"
    calib: str | None = None
    calib_method: Literal["entropy", "percentile", "minmax"] = "percentile"
    calib_size: int = Field(1024, ge=1)
    eval: str | None = None
    eval_size: int | None = Field(None, ge=1)
    min_retention: float = Field(0.99, ge=0.0, le=1.0)
    backend: Literal["onnxruntime", "tensorrt", "torch-tensorrt"] = "onnxruntime"
    seed: int = 0
    #: INT8 mixed precision: these ONNX nodes (the most quantization-sensitive layers) stay float.
    keep_float: list[str] = Field(default_factory=list)

    def artifact_dir(self) -> Path:
        if self.out is not None:
            return self.out
        stem = self.checkpoint.name.removesuffix(".pt")
        pruned = f".pruned{round(self.prune * 100)}" if self.prune else ""
        return self.checkpoint.parent / f"{stem}{pruned}.{self.precision}"


class CompressionRejected(Exception):
    """The artifact was written but failed the retention gate (exit code 3)."""

    def __init__(self, artifact: Path, reason: str):
        super().__init__(f"{artifact}: rejected: {reason}")
        self.artifact, self.reason = artifact, reason


def compress(options: CompressOptions, say: Callable[[str], None] = lambda line: None,
             progress: Callable | None = None, distill_cache=None) -> dict:
    """Run the stages; returns the report. Raises CompressionRejected after writing a rejected artifact.

    ``distill_cache`` (``load(options) -> dict | None``, ``save(options, model, losses)``; see
    :mod:`avf.tune.cache`) lets a search reuse one pruned+distilled model for every precision.
    """
    require_onnx()
    final = options.artifact_dir()
    check_output(final, force=options.force, directory=True, ours=is_artifact, what="artifact folder",
                 inputs=[options.checkpoint, options.train, options.calib, options.eval])
    payload = load_checkpoint(options.checkpoint)
    reference = model_from_checkpoint(payload, options.checkpoint).eval()
    config = payload["model"]
    if config.get("tokens", "single") != "single":
        raise InputError(options.checkpoint, f"tokens={config['tokens']!r} models cannot be compressed yet (single only)")
    if options.backend == "tensorrt" and (reason := unavailable_reason()):
        raise InputError(options.checkpoint, f"--backend tensorrt: engine not built: {reason}")
    if options.backend == "torch-tensorrt" and (reason := torch_tensorrt_unavailable()):
        raise InputError(options.checkpoint, f"--backend torch-tensorrt: not compiled: {reason}")
    if options.backend == "torch-tensorrt" and options.precision in ("int8-dynamic", "int4"):
        raise InputError(None, "--backend torch-tensorrt builds fp32, fp16 or int8; weights-only INT8 is an ONNX "
                               "Runtime CPU format")
    if options.keep_float and options.precision != "int8":
        raise InputError(None, "keep_float (layers kept in float) applies to int8 only")
    settings = payload.get("settings") or {}
    eval_data = _data(options.eval or _recorded(settings.get("val")), payload, reference, "evaluation",
                      options.checkpoint)
    if eval_data is not None and options.eval_size:
        eval_data = eval_data.subset(np.arange(min(options.eval_size, len(eval_data))))
    calib_data = None
    if options.precision == "int8":
        calib_data = _data(options.calib or _recorded(settings.get("train")), payload, reference, "calibration",
                           options.checkpoint)
        if calib_data is None or eval_data is None:
            raise InputError(options.checkpoint, INT8_NEEDS_DATA)
    report: dict = {
        "format": "avf-artifact", "version": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {"path": str(options.checkpoint.resolve()), "sha256": file_sha256(options.checkpoint),
                       "epoch": payload.get("epoch"), "metrics": payload.get("metrics")},
        "model": config, "num_classes": payload["num_classes"], "vocabulary_sha256": payload.get("vocabulary_sha256"),
        "data": payload.get("data"), "options": json.loads(options.model_dump_json()), "stages": [],
    }
    probe = _probe_inputs(eval_data or calib_data, reference)
    model = reference
    params = count_parameters(reference)

    if options.fold:
        say("fold: dropout, single-token attention and adjacent linear maps")
        folded = fold_model(reference, probe)
        model = folded.model
        difference = folded.max_logit_difference
        report["stages"].append({"stage": "fold", "params_before": folded.params_before,
                                 "params_after": folded.params_after, "rewrites": folded.rewrites,
                                 "max_logit_difference": difference, "checked_on": f"{len(probe[0])} {_probe_kind(eval_data or calib_data)}"})
        say(f"  {folded.params_before:,} -> {folded.params_after:,} parameters "
            f"(-{1 - folded.params_after / folded.params_before:.1%}), largest logit change {difference:.2e}")
        params = folded.params_after

    if options.prune:
        say(f"prune: {options.prune:.0%} of hidden channels by L2 magnitude (multiples of 8)")
        teacher = model
        model = prune_channels(teacher, options.prune, config["rgb_dim"], config["audio_dim"])
        achieved = check_ratio_honoured(options.prune, hidden_widths(teacher), hidden_widths(model))
        stage = {"stage": "prune", "ratio": options.prune, "channels_removed": round(achieved, 4), "params_before": params,
                 "params_after": count_parameters(model), "hidden_widths": sorted(set(hidden_widths(model)))}
        if options.finetune_epochs:
            train_data = _data(options.train or _recorded(settings.get("train")), payload, reference, "training",
                               options.checkpoint)
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
                         finetune_videos=len(train_data))
        report["stages"].append(stage)
        say(f"  {params:,} -> {stage['params_after']:,} parameters")
        params = stage["params_after"]

    with atomic_directory(final, options.force, ours=is_artifact, what="artifact folder",
                          inputs=[options.checkpoint, options.train, options.calib, options.eval]) as tmp:
        say(f"export: ONNX (opset {OPSET}), then {options.precision}")
        fp32 = tmp / ".model.fp32.onnx"
        metadata = {"model": config["name"], "num_classes": payload["num_classes"],
                    "vocabulary_sha256": payload.get("vocabulary_sha256") or "", "precision": options.precision,
                    "parameters": params, "checkpoint_sha256": report["checkpoint"]["sha256"], "producer": "avf-compress"}
        export_onnx(model, fp32, config["rgb_dim"], config["audio_dim"], metadata)
        artifact = tmp / MODEL_FILE
        report["stages"].append(_precision_stage(options, fp32, artifact, calib_data))
        _restore_metadata(artifact, metadata)
        fp32.unlink(missing_ok=True)

        report["tensorrt_check"] = check_tensorrt_compatibility(artifact)
        report["tensorrt_compatible"] = report["tensorrt_check"]["tensorrt_compatible"]
        say("tensorrt check: " + ("compatible" if report["tensorrt_compatible"] else
                                  "not compatible: " + "; ".join(report["tensorrt_check"]["problems"])))
        if options.backend == "torch-tensorrt":
            from avf.compress.torch_tensorrt_engine import compile_and_save

            say("torch-tensorrt: compiling (ir=dynamo)")
            report["tensorrt"] = compile_and_save(model, tmp, options.precision, config["rgb_dim"], config["audio_dim"],
                                                  calibration=None if calib_data is None else _batches(
                                                      calib_data, _calibration_rows(options, calib_data)))
        else:
            report["tensorrt"] = _tensorrt(options, artifact, tmp, say, report["tensorrt_check"])
        report["files"] = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
                           for p in sorted(tmp.iterdir()) if not p.name.startswith(".")}
        report["io"] = {"inputs": {"rgb": ["batch", config["rgb_dim"]], "audio": ["batch", config["audio_dim"]]},
                        "outputs": {"probabilities": ["batch", payload["num_classes"]]}, "dtype": "float32",
                        "preprocessing": "YouTube-8M video-level mean_rgb and mean_audio, dequantized to float32"}
        report["parameters"] = params

        if eval_data is None:
            report["retention"] = None
            report["accepted"], report["reason"] = True, "not evaluated: no evaluation data (pass --eval)"
            say("retention: not measured (no evaluation data)")
        else:
            say(f"retention: FP32 PyTorch reference vs the artifact in ONNX Runtime on {len(eval_data):,} videos")
            runtime = OnnxModel(artifact)
            with _bar(progress, "evaluate", len(eval_data)) as advance:
                comparison = compare_on_data(_torch_probabilities(reference), runtime, eval_data, progress=advance)
            comparison["eval_data"] = eval_data.sources_summary()
            comparison["runtime"] = "onnxruntime CPUExecutionProvider"
            accepted, reason = gate(comparison, options.min_retention)
            comparison["min_retention"] = options.min_retention
            report["retention"], report["accepted"], report["reason"] = comparison, accepted, reason
        report["versions"] = _versions()
        (tmp / REPORT).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    if not report["accepted"]:
        raise CompressionRejected(final, report["reason"])
    return report


# ----------------------------------------------------------------------------- helpers


def _precision_stage(options: CompressOptions, fp32: Path, artifact: Path, calib_data: TrainingData | None) -> dict:
    stage = {"stage": "precision", "precision": options.precision}
    if options.precision == "fp32":
        fp32.rename(artifact)
    elif options.precision == "fp16":
        quantize.convert_fp16(fp32, artifact)
        stage["method"] = "float16 weights and arithmetic, float32 inputs/outputs (onnxruntime float16 converter)"
    elif options.precision == "int8-dynamic":
        quantize.quantize_int8_dynamic(fp32, artifact)
        stage["method"] = "weights-only INT8, per-channel symmetric; activations quantized at run time"
    elif options.precision == "int4":
        quantize.quantize_int4_weight_only(fp32, artifact)
        stage["method"] = (f"4-bit weight-only matrices (ONNX Runtime MatMulNBits, symmetric, blocks of "
                           f"{quantize.INT4_BLOCK}, accuracy_level 4: INT8 arithmetic), float biases and activations")
    else:
        rows = _calibration_rows(options, calib_data)
        quantize.quantize_int8_static(fp32, artifact, _batches(calib_data, rows), options.calib_method,
                                      exclude=options.keep_float)
        stage.update(method="static QDQ, per-channel symmetric INT8 weights, symmetric INT8 activations",
                     calibration={"method": options.calib_method, "videos": int(len(rows)),
                                  "data": calib_data.sources_summary()})
        if options.keep_float:
            stage["kept_float"] = list(options.keep_float)
    return stage


def _calibration_rows(options: CompressOptions, calib_data: TrainingData) -> np.ndarray:
    """The seeded calibration sample (the same videos for the ONNX and the Torch-TensorRT INT8 builds)."""
    return np.sort(np.random.default_rng(options.seed).permutation(len(calib_data))[:options.calib_size])


def _restore_metadata(artifact: Path, metadata: dict) -> None:
    """Quantizers rebuild the graph; put the deployment metadata back on the final file."""
    import onnx

    from avf.compress.export import set_metadata

    proto = onnx.load(str(artifact))
    set_metadata(proto, metadata)
    onnx.save(proto, str(artifact))


def _tensorrt(options: CompressOptions, artifact: Path, tmp: Path, say, check: dict) -> dict:
    """Build model.plan only when --backend tensorrt asked for it (README: never as a side effect)."""
    if options.backend != "tensorrt":
        return {"built": False, "reason": "engine not built: --backend onnxruntime (pass --backend tensorrt "
                                          "to build model.plan)"}
    reason = unavailable_reason()
    if reason:
        say(f"tensorrt: engine not built: {reason}")
        return {"built": False, "reason": f"engine not built: {reason}"}
    if options.precision in ("int8-dynamic", "int4"):
        return {"built": False, "reason": f"engine not built: {options.precision} weights-only is an ONNX Runtime CPU format"}
    if not check["tensorrt_compatible"]:
        return {"built": False, "reason": "engine not built: not TensorRT-compatible: " + "; ".join(check["problems"])}
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


def _torch_probabilities(model):
    def run(rgb, audio):
        with torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(rgb), torch.from_numpy(audio))).numpy()
    return run


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


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
