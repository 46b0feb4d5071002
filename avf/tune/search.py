"""The search: bisection on the prune ratio per precision, then calibration and mixed precision at the edge.

Why bisection and not a grid or a black-box sampler: GAP retention falls (almost) monotonically
with the prune ratio at a fixed precision, and latency, size and energy all fall with it, so
for each precision the best candidate is the largest ratio that keeps ``--min-retention`` (held by
the retention's lower bound at ``--retention-confidence``, 95% by default: see
:mod:`avf.compress.retention`);
bisection over the ratio grid finds it in log2(grid) builds. FP32 goes first: quantization
only loses accuracy, so FP32's first failing ratio bounds every other precision's search.
Where INT8 (percentile calibration) fails below that bound, the other calibrations and INT8
with the k most sensitive layers kept float (sensitivity = GAP lost when only that layer is
quantized) are tried at the failing ratio, stepping up while one passes. On CPU profiles, int4's
block size and accuracy level are searched at its edge (:func:`_int4_blocks`). Then, with the budget
left, INT8 beyond the edge (every 0.1 up to 0.9) fills in the fast end of the Pareto front. Latency and memory
budgets are checked on every candidate; the winner is the best one by ``--objective`` among
those that meet every constraint.

Every candidate is an ordinary avf-compress artifact (``OUT/candidates/ID``) with a record in
``OUT/records/ID.json`` written last, sealed with the sha256 of its files and of itself
(:mod:`avf.tune.records`): a rerun skips every candidate whose record verifies, and the distilled
model of each ratio is cached (:mod:`avf.tune.cache`), so resuming costs only the candidate that
was in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avf.atomic import atomic_write_text
from avf.compress.quantize import INT4_ACCURACY, INT4_ACCURACY_LEVELS, INT4_BLOCKS
from avf.compress.retention import held_retention as held
from avf.data.vocabulary import file_sha256
from avf.tune.records import Sensitivity, candidate_files, discard, read_sealed, seal
from avf.tune.space import CALIBRATIONS, Setting

Objective = Literal["latency", "size", "energy"]


class TuneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf are no settings

    checkpoint: Path
    profile: str
    out: Path
    force: bool = False
    min_retention: float = Field(0.99, gt=0.0, le=1.0)
    # The retention a candidate is held to: its one-sided lower bound at this confidence (0: the estimate), because
    # the search picks the candidate whose estimate just reached the bar, and held-out videos score it lower.
    retention_confidence: float = Field(0.95, ge=0.0, lt=1.0)
    max_latency_ms: float | None = Field(None, gt=0)
    max_memory_mib: float | None = Field(None, gt=0)
    batch: int = Field(1, ge=1)
    objective: Objective = "latency"
    calib: str | None = None
    train: str | None = None
    eval: str | None = None
    test: str | None = None
    time_budget: float = Field(30.0, gt=0, description="minutes")
    finetune_epochs: int = Field(1, ge=0)
    calib_size: int = Field(1024, ge=1)
    eval_size: int | None = Field(None, ge=1)
    ratio_step: float = Field(0.05, ge=0.01, le=0.45)
    max_keep_float: int = Field(3, ge=0)
    threads: int = Field(1, ge=1)
    bench_duration: float = Field(1.5, gt=0)
    seed: int = 0
    # Where costs are measured: local, or ssh://[user@]host[:port] (a device with avf's runtime install).
    target: str = "local"
    # The device's Python interpreter that has avf installed (with an ssh target).
    remote_python: str = "python3"
    # Where these options came from (avf tune --config): {"recipe": None, "config": {"path", "sha256"},
    # "command_line": [fields typed]}; recorded in tune.json, not part of the search's identity.
    resolved_from: dict[str, Any] | None = None


class BudgetSpent(Exception):
    """The time budget ran out before the next candidate."""


@dataclass
class Context:
    """What every candidate shares: options, resolved data, constraints, folders, the cost method."""

    options: TuneOptions
    profile: object
    out: Path
    data: dict  # role -> spec
    max_latency_ms: float
    max_memory_mib: float
    measure_reason: str | None  # None: measured (here, or on ``device``)
    cache: object
    num_classes: int = 0
    loaded: dict = field(default_factory=dict)  # role -> TrainingData, checked before the search (avf.tune.inputs)
    reference: object = None  # the checkpoint's model: the FP32 reference
    device: object = None  # the RemoteDevice costs are measured on (--target), or None: this machine
    build: dict = field(default_factory=dict)  # CompressOptions backend/device when costs are measured on this GPU
    started: float = field(default_factory=time.monotonic)
    on_record: Callable[[dict], None] = lambda record: None
    say: Callable[[str], None] = lambda line: None
    records: dict = field(default_factory=dict)

    def seconds_left(self) -> float:
        return self.options.time_budget * 60 - (time.monotonic() - self.started)


def evaluate(ctx: Context, setting: Setting) -> dict:
    """Build, score and cost one candidate (or return its verified record from an earlier run)."""
    if setting.id in ctx.records:
        return ctx.records[setting.id]
    if ctx.seconds_left() <= 0:
        raise BudgetSpent()
    record_path = ctx.out / "records" / f"{setting.id}.json"
    discard(ctx.out, setting.id)  # no verified record: whatever is in its slot is built afresh
    from avf.compress.pipeline import CompressionRejected, CompressOptions, compress
    from avf.compress.precisions import precision_named

    o = ctx.options
    folder = ctx.out / "candidates" / setting.id
    started = time.monotonic()
    int4 = {"int4_block": setting.int4_block, "int4_accuracy_level": setting.int4_accuracy_level} \
        if setting.precision == "int4" else {}
    options = CompressOptions(
        checkpoint=o.checkpoint, out=folder, force=True, fold=True, prune=setting.ratio or None,
        finetune_epochs=o.finetune_epochs, train=ctx.data["train"], precision=setting.precision,
        calib=ctx.data["calib"] if precision_named(setting.precision).calibrates else None,
        calib_method=setting.calib_method or "percentile",
        calib_size=o.calib_size, eval=ctx.data["eval"], eval_size=o.eval_size, min_retention=o.min_retention,
        retention_confidence=o.retention_confidence, seed=o.seed, keep_float=list(setting.keep_float), **int4, **ctx.build)
    ctx.say(f"candidate {setting.id}: building")
    import logging

    logging.disable(logging.WARNING)  # ONNX Runtime's quantizer logs advice on the root logger
    try:
        report = compress(options, distill_cache=ctx.cache)
    except CompressionRejected as rejected:
        report = rejected.report  # written and marked rejected; its retention is read below like any other
    finally:
        logging.disable(logging.NOTSET)
    build_s = time.monotonic() - started
    from avf.tune import cost as costs

    bench_path = unmeasurable = None
    if ctx.measure_reason is None:
        bench_path = ctx.out / "bench" / f"{setting.id}.json"
        bench_path.parent.mkdir(exist_ok=True)
        if ctx.device is not None:
            result, unmeasurable = costs.bench_on_device(ctx.device, ctx.profile, folder, bench_path, o.batch,
                                                          o.threads, o.bench_duration)
            if result is None:  # the device cannot run this candidate on the profile's backend: predicted, labelled
                ctx.say(f"note: candidate {setting.id}: {unmeasurable}; its cost is predicted")
                bench_path = None
        else:
            result = costs.bench(folder, bench_path, o.batch, o.threads, o.bench_duration, ctx.build)
    else:
        result = None
    figure = costs.cost(report, ctx.profile, o.batch, result)
    if result is None and ctx.device is not None and unmeasurable:
        figure["source"] += f" (not measured on {ctx.device.target.name}: {unmeasurable})"
    retention = report.retention
    record = {"id": setting.id, "ratio": setting.ratio, "precision": setting.precision,
              "calib_method": setting.calib_method, "keep_float": list(setting.keep_float), **int4,
              "artifact": f"candidates/{setting.id}", "bench": None if bench_path is None else f"bench/{setting.id}.json",
              "parameters": report.parameters, "gap": retention.compressed["gap"],
              "reference_gap": retention.reference["gap"], "retention": retention.ratios["gap"],
              "retention_lower": (retention.gap_bound or {}).get("lower"),
              "f1": retention.compressed["f1"], "f1_retention": retention.ratios["f1"],
              "eval_videos": retention.videos, "tensorrt_compatible": report.tensorrt_compatible,
              "cost": figure, "build_seconds": round(build_s, 2),
              "seconds": round(time.monotonic() - started, 2)}
    record["rejected_because"] = misses(ctx, record)
    record["meets"] = not record["rejected_because"]
    record["files"] = candidate_files(folder)
    record["bench_sha256"] = None if bench_path is None else file_sha256(bench_path)
    record = seal(record)
    record_path.parent.mkdir(exist_ok=True)
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    ctx.records[setting.id] = record
    ctx.on_record(record)
    return record


def misses(ctx: Context, record: dict) -> list[str]:
    """Every constraint the candidate misses, in words (empty: it meets them all)."""
    out, figure, label = [], record["cost"], record["cost"]["status"]
    if not passes(ctx, record):
        out.append(f"{held_retention(ctx, record)[1]} < {ctx.options.min_retention:g}")
    if figure["latency_p99_ms"] > ctx.max_latency_ms:
        out.append(f"p99 latency {figure['latency_p99_ms']:.3f} ms ({label}) > {ctx.max_latency_ms:g} ms")
    if figure["memory_mib"] > ctx.max_memory_mib:
        out.append(f"memory {figure['memory_mib']:.1f} MiB ({label}) > {ctx.max_memory_mib:g} MiB")
    if ctx.profile.kind != "cpu" and ctx.profile.preferred_backend == "tensorrt" and not record["tensorrt_compatible"]:
        out.append(f"not TensorRT-compatible ({ctx.profile.name} deploys with TensorRT)")
    return out


def held_retention(ctx: Context, record: dict) -> tuple[float | None, str]:
    """The retention the candidate is held to (its lower bound with --retention-confidence), and it in words."""
    if record["retention"] is None:
        return None, "GAP retention undefined (reference GAP is 0)"
    return held(record["retention"], record.get("retention_lower"), ctx.options.retention_confidence, digits=5)


def passes(ctx: Context, record: dict) -> bool:
    held = held_retention(ctx, record)[0]
    return held is not None and held >= ctx.options.min_retention


def bisect(ctx: Context, grid: list[float], make: Callable[[float], Setting], upper: int) -> tuple[int, int]:
    """(largest grid index that passes retention or -1, first failing index) among grid[:upper]."""
    low, high = -1, upper
    if upper == 0:
        return low, high
    if not passes(ctx, evaluate(ctx, make(grid[0]))):
        return -1, 0
    low = 0
    while high - low > 1:
        middle = (low + high) // 2
        if passes(ctx, evaluate(ctx, make(grid[middle]))):
            low = middle
        else:
            high = middle
    return low, high


def search(ctx: Context, grid: list[float], precisions: list[str]) -> dict:
    """Run the strategy; returns a summary (per-precision boundaries, budget state)."""
    summary: dict = {"boundaries": {}, "budget_spent": False, "sensitivity": {}}
    try:
        fp32_low, fp32_high = bisect(ctx, grid, lambda r: Setting(r, "fp32"), len(grid))
        summary["boundaries"]["fp32"] = _boundary(grid, fp32_low, fp32_high)
        upper = fp32_high  # quantization loses accuracy: no precision passes where FP32 fails
        for precision in precisions:
            if precision == "fp32":
                continue
            calib = "percentile" if precision == "int8" else None
            low, high = bisect(ctx, grid, lambda r: Setting(r, precision, calib), upper)
            summary["boundaries"][precision] = _boundary(grid, low, high)
            if precision == "int4" and ctx.profile.kind == "cpu":
                _int4_blocks(ctx, grid, low, high, upper, summary)
            if precision != "int8":
                continue
            # At INT8's first failing ratio: other calibrations, then the most sensitive layers kept float.
            while high < upper:
                variant = _rescue(ctx, grid[high], summary)
                if variant is None:
                    break
                summary["boundaries"][f"int8 ({variant.id.split('-', 2)[2]})"] = {"largest_passing_ratio": grid[high]}
                low, high = high, high + 1
        _fill_front(ctx, grid, upper, precisions, summary.setdefault("front_fill", []))
    except BudgetSpent:
        summary["budget_spent"] = True
    return summary


def _fill_front(ctx: Context, grid: list[float], upper: int, precisions: list[str], done: list[str]) -> None:
    """With the budget left: INT8 at every other grid ratio from FP32's first failing one up to 0.9.

    The bisections stop at the retention edge, so without these the Pareto front would hold only
    the candidates near --min-retention and say nothing of what each further pruning step buys in
    speed and costs in GAP: what a user with a looser accuracy budget, or a slower device, needs.
    """
    precision = "int8" if "int8" in precisions else precisions[-1]
    calib = "percentile" if precision == "int8" else None
    for index in sorted({*range(upper, len(grid), 2), len(grid) - 1}):
        done.append(evaluate(ctx, Setting(grid[index], precision, calib))["id"])  # kept if the budget runs out


def _int4_blocks(ctx: Context, grid: list[float], low: int, high: int, upper: int, summary: dict) -> None:
    """int4's MatMulNBits block size and accuracy level, tried where they can change the choice, in few builds.

    Larger blocks read fewer scales, so they run faster (an EPYC with AVX-512 VNNI, fold+prune 0.65: block 128
    204-280x PyTorch eager, block 32 146-164x), and they lose more GAP. So at int4's largest passing ratio the
    blocks grow at accuracy level 4 (INT8 arithmetic), and at its first failing ratio (below FP32's) the other
    level (1: float32 arithmetic, more accurate, usually slower) gets a chance, its blocks growing while it
    passes. Each row stops at the first block that fails retention (the larger ones would lose more) and records
    the retention of every block it built: ``summary["int4_blocks"]`` says how much each block size loses.
    """
    other = next(level for level in INT4_ACCURACY_LEVELS if level != INT4_ACCURACY)
    rows = summary.setdefault("int4_blocks", [])
    plans = ([(grid[low], INT4_ACCURACY)] if low >= 0 else []) + ([(grid[high], other)] if high < upper else [])
    for ratio, level in plans:
        row = {"ratio": ratio, "accuracy_level": level, "retention": {}, "largest_passing_block": None}
        rows.append(row)  # before the builds: a spent budget keeps what was measured
        for block in INT4_BLOCKS:
            record = evaluate(ctx, Setting(ratio, "int4", int4_block=block, int4_accuracy_level=level))
            row["retention"][str(block)] = record["retention"]
            if not passes(ctx, record):
                break
            row["largest_passing_block"] = block
        if level != INT4_ACCURACY and row["largest_passing_block"]:
            summary["boundaries"][f"int4 (accuracy level {level})"] = {"largest_passing_ratio": ratio}


def _boundary(grid, low, high) -> dict:
    return {"largest_passing_ratio": grid[low] if low >= 0 else None,
            "first_failing_ratio": grid[high] if high < len(grid) else None}


def _rescue(ctx: Context, ratio: float, summary: dict) -> Setting | None:
    """A variant of INT8 at ``ratio`` that keeps the retention, or None."""
    for method in CALIBRATIONS[1:]:
        setting = Setting(ratio, "int8", method)
        if passes(ctx, evaluate(ctx, setting)):
            return setting
    if ctx.options.max_keep_float == 0:
        return None
    ranked = sensitivity(ctx, ratio)
    summary["sensitivity"][f"{ratio:g}"] = ranked
    best = max(CALIBRATIONS, key=lambda m: ctx.records.get(Setting(ratio, "int8", m).id, {}).get("retention") or 0)
    for k in range(1, min(ctx.options.max_keep_float, len(ranked) - 1) + 1):
        setting = Setting(ratio, "int8", best, tuple(sorted(entry["node"] for entry in ranked[:k])))
        if passes(ctx, evaluate(ctx, setting)):
            return setting
    return None


def sensitivity(ctx: Context, ratio: float) -> list[dict]:
    """Per-layer INT8 sensitivity at ``ratio``: GAP lost when only that layer is quantized, worst first.

    Starts from the FP32 candidate at the same ratio (its model.onnx is the export every
    calibration shares); cached in ``records/sensitivity-rNN.json``.
    """
    path = ctx.out / "records" / f"sensitivity-r{round(ratio * 100):02d}.json"
    fp32 = evaluate(ctx, Setting(ratio, "fp32"))
    model_sha256 = fp32["files"]["model.onnx"]
    if path.exists():
        cached, problem = read_sealed(path, "tune sensitivity", Sensitivity)
        if cached is not None and cached["model_sha256"] == model_sha256:
            return cached["layers"]
        ctx.say(f"note: {path.relative_to(ctx.out)}: {problem or 'measured on another FP32 model.onnx'}; "
                "measuring it again")
    if ctx.seconds_left() <= 0:
        raise BudgetSpent()
    import tempfile

    from avf.compress import quantize
    from avf.runtime.onnxruntime_cpu import OnnxRuntimeCpuRunner
    from avf.runtime.scoring import score

    source = ctx.out / fp32["artifact"] / "model.onnx"
    eval_data, calib_rows = _data(ctx, "eval"), _calibration(ctx)
    fp32_gap = score(OnnxRuntimeCpuRunner(source, threads=ctx.options.threads), eval_data)["gap"]
    layers = []
    with tempfile.TemporaryDirectory(dir=ctx.out / "records", prefix=".sensitivity.", suffix=".tmp") as work:
        for node in quantize.quantizable_nodes(source):
            target = Path(work) / "one.onnx"
            quantize.quantize_int8_static(source, target, iter(calib_rows), "percentile", only=[node])
            gap = score(OnnxRuntimeCpuRunner(target, threads=ctx.options.threads), eval_data)["gap"]
            layers.append({"node": node, "gap_lost": fp32_gap - gap})
    layers.sort(key=lambda entry: -entry["gap_lost"])
    atomic_write_text(path, json.dumps(seal({"ratio": ratio, "fp32_gap": fp32_gap, "layers": layers,
                                             "model_sha256": model_sha256,
                                             "method": "GAP of the FP32 artifact minus GAP with only this layer INT8 "
                                                       "(percentile calibration), on the selection data"}),
                                       indent=2) + "\n")
    return layers


def _data(ctx: Context, role: str):
    """The role's data as checked before the search (eval already cut to --eval-size)."""
    return ctx.loaded[role]


def _calibration(ctx: Context) -> list:
    """The calibration batches avf-compress uses (same seeded sample)."""
    data = _data(ctx, "calib")
    rows = np.sort(np.random.default_rng(ctx.options.seed).permutation(len(data))[:ctx.options.calib_size])
    return [data.batch(rows[start:start + 256])[:2] for start in range(0, len(rows), 256)]
