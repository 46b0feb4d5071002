"""``avf tune`` end to end: check everything, search (resumably), then write the answer and its proof.

Outputs in OUT: ``candidates.csv``/``candidates.json`` (every candidate, settings, cost with
its status, retention, why rejected), ``pareto.png``, ``artifact/`` (the chosen avf-compress
artifact, copied unchanged), ``manifest.json`` (by :func:`avf.deploy.manifest.build_manifest`,
as ``avf-deploy manifest`` writes it) and ``tune.json`` (settings, strategy summary, the choice,
held-out retention when ``--test`` is given).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from avf.atomic import atomic_directory, atomic_write_text
from avf.errors import InputError
from avf.tune import pareto
from avf.tune.inputs import check_inputs, describe_difference
from avf.tune.records import HeldOut, discard, files_problem, read_sealed, seal, sha256_or_none, verified_record
from avf.tune.search import Context, TuneOptions, held_retention, search
from avf.tune.space import backends_for, precisions_for, ratio_grid
from avf.tune.workdir import open_workdir, write_state

IDENTITY_EXCLUDES = {"out", "force", "time_budget", "remote_python", "resolved_from"}


def tune(options: TuneOptions, say: Callable[[str], None] = lambda line: None,
         on_record: Callable[[dict], None] = lambda record: None,
         on_plan: Callable[[int, float], None] = lambda total, seconds: None) -> dict:
    """Search, choose, write; returns the final state (``state["chosen"]`` is None when nothing meets every constraint)."""
    from avf.compress.export import require_onnx

    try:
        require_onnx()
    except ImportError as exc:
        raise InputError(None, str(exc)) from None
    inputs = check_inputs(options)  # every refusal happens here, before the working folder is touched
    from avf.remote.device import device_for

    device = device_for(options.target, options.remote_python, say)  # reachable, same avf: before any output
    profile, payload, data = inputs.profile, inputs.payload, inputs.specs
    from avf.tune.cost import local_build

    build = local_build(profile, device)  # how candidates are compiled when this machine's GPU is the profile's
    precisions, skipped = precisions_for(profile, build.get("backend", "onnxruntime"))
    if "int8" in precisions and data["calib"] is None:
        precisions.remove("int8")
        skipped["int8"] = "no calibration data: pass --calib"
    grid = ratio_grid(options.ratio_step)
    notes = []
    if data["train"] is None and options.finetune_epochs:
        grid = [0.0]
        notes.append("no training data (--train): pruning needs distillation, so only ratio 0 (fold only) was searched")
    grid = _honourable(grid, payload, inputs.model, notes)
    identity = {key: (str(value) if isinstance(value, Path) else value)
                for key, value in options.model_dump().items() if key not in IDENTITY_EXCLUDES}
    identity.update(inputs.content)
    with open_workdir(options.out, identity, force=options.force, inputs=inputs.paths,
                      describe=describe_difference) as (state, resumed):
        return _run(options, inputs, state, resumed, grid, precisions, skipped, notes, say, on_record, on_plan,
                    device, build)


def _run(options, inputs, state, resumed, grid, precisions, skipped, notes, say, on_record, on_plan,
         device=None, build: dict | None = None) -> dict:
    """The search in the locked working folder, then the choice and everything written from it."""
    from avf.tune import cost as costs
    from avf.tune.cache import DistillCache

    out, profile, data = Path(options.out), inputs.profile, inputs.specs
    reason = costs.measurable_on(profile, device)
    measured = f"measured on {device.target.name} with avf-bench" if device else "measured here with avf-bench"
    build = build or {}
    if build:
        measured += f" on {costs.local_gpu(profile)} ({build['backend']})"
    ctx = Context(options=options, profile=profile, out=out, data=data,
                  max_latency_ms=options.max_latency_ms or profile.budgets.latency_ms,
                  max_memory_mib=options.max_memory_mib or profile.budgets.memory_mib, measure_reason=reason,
                  device=device, build=build,
                  cache=DistillCache(out / "cache", inputs.content["checkpoint_sha256"]),
                  num_classes=inputs.payload["num_classes"], loaded=inputs.data, reference=inputs.model,
                  on_record=on_record, say=say)
    _load_records(ctx)
    say(("resuming: " if resumed else "starting: ") + f"{len(ctx.records)} candidates already done; costs "
        + (measured if reason is None else f"PREDICTED ({reason})"))
    on_plan(_planned(len(grid), len(precisions)), options.time_budget * 60)
    for record in ctx.records.values():
        on_record(record)
    started = time.monotonic()
    summary = search(ctx, grid, precisions)
    state.update(status="finished", runs=state.get("runs", 0) + 1, last_run_seconds=round(time.monotonic() - started, 1),
                 profile=profile.name, constraints={"min_retention": options.min_retention,
                                                    "retention_held": "its one-sided "
                                                    f"{options.retention_confidence:.0%} lower bound (paired bootstrap "
                                                    "over the selection videos)" if options.retention_confidence else
                                                    "the measured GAP ratio",
                                                    "max_latency_ms": ctx.max_latency_ms,
                                                    "max_memory_mib": ctx.max_memory_mib, "batch": options.batch,
                                                    "latency_is": "p99 per request" if options.batch == 1 else
                                                    f"p99 per batch of {options.batch}"},
                 objective=options.objective, resolved_from=options.resolved_from, costs=(f"measured: avf-bench on {device.target.name if device else 'this machine'}" if reason is None
                                                     else f"predicted: {reason}"),
                 data={**data, "retention_measured_on": "eval (the selection data)" if not data["test"] else
                       "eval for selection; test (held out) for the chosen artifact"},
                 space={"ratios": grid, "precisions": precisions, "not_searched": skipped,
                        "calibrations": "percentile first; entropy and minmax where INT8 falls short",
                        "mixed_precision": f"INT8 with up to {options.max_keep_float} most sensitive layers in float",
                        **({"int4_blocks": "int4 block sizes 32 to 256 at accuracy level 4 at int4's largest passing "
                            "ratio, accuracy level 1 at its first failing one; each stops at the first block that "
                            "fails retention"} if "int4" in precisions and profile.kind == "cpu" else {}),
                        "backends": backends_for(profile)},
                 strategy=summary, notes=notes, cache={"distilled_reused": ctx.cache.hits,
                                                       "distilled_built": ctx.cache.misses},
                 candidates=len(ctx.records))
    if summary["budget_spent"]:
        state["notes"] = notes + [f"time budget of {options.time_budget:g} min reached: the choice is among the "
                                  f"{len(ctx.records)} candidates done; rerun the same command to continue"]
    records = sorted(ctx.records.values(), key=lambda r: (r["precision"], r["ratio"], r["id"]))
    write_candidates(out, records)
    chosen = choose(records, options.objective)
    state["pareto"] = {cost: [r["id"] for r in pareto.front(records, cost)] for cost in pareto.COSTS}
    state["chosen"] = None if chosen is None else _summary(chosen)
    state["closest"] = None if chosen is not None else closest(records, ctx)
    if pareto.plot(records, out / "pareto.png", options.min_retention, "measured" if reason is None else "PREDICTED",
                   chosen and chosen["id"]):
        state["pareto_plot"] = "pareto.png"
    if chosen is not None:
        _ship(ctx, chosen, state)
    else:
        _unship(out)
        state.pop("manifest", None)
    write_state(out, state)
    return state


def choose(records: list[dict], objective: str) -> dict | None:
    """The best candidate that meets every constraint, by the objective (ties: higher retention)."""
    key = {"latency": lambda r: r["cost"]["latency_p50_ms"], "size": lambda r: r["cost"]["size_bytes"],
           "energy": lambda r: r["cost"]["energy_mj"]}[objective]
    meeting = [r for r in records if r["meets"]]
    return min(meeting, key=lambda r: (key(r), -r["retention"])) if meeting else None


def closest(records: list[dict], ctx: Context) -> dict | None:
    """The candidate that misses its constraints by the least (relative shortfalls summed)."""
    if not records:
        return None

    def shortfall(r):
        c = r["cost"]
        return (max(0.0, ctx.options.min_retention - (held_retention(ctx, r)[0] or 0)) / ctx.options.min_retention
                + max(0.0, c["latency_p99_ms"] - ctx.max_latency_ms) / ctx.max_latency_ms
                + max(0.0, c["memory_mib"] - ctx.max_memory_mib) / ctx.max_memory_mib)

    best = min(records, key=shortfall)
    return {**_summary(best), "misses": best["rejected_because"]}


def _summary(record: dict) -> dict:
    keys = ("id", "ratio", "precision", "calib_method", "keep_float", "retention", "retention_lower", "gap",
            "reference_gap", "f1", "parameters", "cost", "artifact", "bench")
    return {key: record.get(key) for key in keys} | {key: record[key] for key in ("int4_block", "int4_accuracy_level")
                                                  if key in record}


def _ship(ctx: Context, chosen: dict, state: dict) -> None:
    """OUT/artifact (the chosen candidate, unchanged and verified), manifest.json, and the held-out retention.

    The copies are hashed inside the temporary folder and compared with the record before it
    replaces OUT/artifact: what is shipped is exactly what was scored, or the previous artifact stays.
    """
    from avf.compress.pipeline import is_artifact
    from avf.deploy.bench_record import read_bench
    from avf.deploy.manifest import build_manifest, write_manifest

    out = ctx.out
    source = out / chosen["artifact"]
    with atomic_directory(out / "artifact", True, ours=is_artifact, what="artifact folder") as tmp:
        for name in chosen["files"]:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        problem = files_problem(tmp, chosen["files"], chosen["artifact"])
        if problem is None and chosen["bench"] and sha256_or_none(out / chosen["bench"]) != chosen["bench_sha256"]:
            problem = f"{chosen['bench']} does not match its recorded sha256"
        if problem is not None:
            raise InputError(source, f"{problem}: it changed during this run, so it was not shipped (OUT/artifact is "
                                     "unchanged); rerun the same command to recompute it")
    bench = read_bench(out / chosen["bench"]) if chosen["bench"] else None
    manifest = build_manifest(out / "artifact", ctx.profile, bench, manifest_path=out / "manifest.json")
    write_manifest(manifest, out / "manifest.json", force=True)
    state["manifest"] = {"path": "manifest.json", "deployable": manifest.decision.deployable,
                         "reasons": manifest.decision.reasons}
    if ctx.data["test"]:
        state["chosen"]["test"] = held_out(ctx, chosen)
    else:
        state["chosen"]["test"] = None
        state["chosen"]["retention_note"] = ("no --test data: the retention shown was measured on the selection data "
                                             "(--eval), the same data the search optimised on")


def held_out(ctx: Context, chosen: dict) -> dict:
    """The chosen artifact against the FP32 PyTorch reference on --test data (cached per candidate and model)."""
    path = ctx.out / "records" / f"test-{chosen['id']}.json"
    model_sha256 = chosen["files"]["model.onnx"]
    if path.exists():
        cached, problem = read_sealed(path, "tune held-out result", HeldOut)
        if cached is not None and cached["model_sha256"] == model_sha256:
            return cached
        ctx.say(f"note: {path.relative_to(ctx.out)}: {problem or 'measured on another model.onnx'}; measuring it again")
    from avf.compress.retention import compare_on_data
    from avf.runtime.onnxruntime_cpu import OnnxRuntimeCpuRunner
    from avf.runtime.pytorch_model import PyTorchRunner

    data = ctx.loaded["test"]
    from avf.compress.report import cpu_model_name

    shipped = ctx.out / "artifact"
    model = shipped / cpu_model_name({p.name for p in shipped.iterdir()})  # what ONNX Runtime CPU runs of it
    comparison = compare_on_data(PyTorchRunner(ctx.reference), OnnxRuntimeCpuRunner(model), data,
                                 confidence=ctx.options.retention_confidence)  # the shipped copy, verified as written
    result = seal({"data": data.sources_summary(), "videos": comparison["videos"],
                   "reference_gap": comparison["reference"]["gap"], "gap": comparison["compressed"]["gap"],
                   "retention": comparison["ratios"]["gap"], "f1_retention": comparison["ratios"]["f1"],
                   "retention_bound": comparison["gap_bound"], "model_sha256": model_sha256,
                   "method": "FP32 PyTorch reference vs the artifact in ONNX Runtime CPU on held-out --test data"})
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return result


def _unship(out: Path) -> None:
    """No winner this time: an artifact or manifest from an earlier run must not look like one."""
    from avf.compress.pipeline import is_artifact

    if (out / "artifact").is_dir() and is_artifact(out / "artifact"):
        shutil.rmtree(out / "artifact")
    (out / "manifest.json").unlink(missing_ok=True)


CSV_COLUMNS = ("id", "ratio", "precision", "calib_method", "keep_float", "parameters", "retention", "retention_lower",
               "gap", "reference_gap", "f1", "cost_status", "latency_p50_ms", "latency_p99_ms", "samples_per_s",
               "memory_mib", "energy_mj", "energy_status", "size_bytes", "meets", "rejected_because")


def write_candidates(out: Path, records: list[dict]) -> None:
    atomic_write_text(out / "candidates.json", json.dumps({"format": "avf-tune-candidates", "candidates": records},
                                                          indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for r in records:
        c = r["cost"]
        writer.writerow([r["id"], r["ratio"], r["precision"], r["calib_method"] or "", " ".join(r["keep_float"]),
                         r["parameters"], r["retention"], r.get("retention_lower"), r["gap"], r["reference_gap"], r["f1"],
                         c["status"],
                         c["latency_p50_ms"], c["latency_p99_ms"], c["samples_per_s"], c["memory_mib"], c["energy_mj"],
                         c["energy_status"], c["size_bytes"], r["meets"], "; ".join(r["rejected_because"])])
    atomic_write_text(out / "candidates.csv", buffer.getvalue())


def _load_records(ctx: Context) -> None:
    """The earlier runs' candidates whose records and files verify; the rest are discarded (with a note) and rebuilt."""
    folder = ctx.out / "records"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("r*.json")):
        record, problem = verified_record(ctx.out, path)
        if record is None:
            ctx.say(f"note: {path.relative_to(ctx.out)}: {problem}; candidate {path.stem} is not trusted and will "
                    "be recomputed")
            discard(ctx.out, path.stem)
            continue
        ctx.records[record["id"]] = record


def _planned(grid: int, precisions: int) -> int:
    """Candidates the strategy will likely build: a bisection per precision, plus the INT8 edge variants."""
    import math

    return max(1, precisions * (math.ceil(math.log2(max(grid, 2))) + 1) + 8)  # + INT8's and int4's edge variants


def _honourable(grid: list[float], payload: dict, model, notes: list[str]) -> list[float]:
    """The ratios the model's widths can honour (multiples of 8); the rest are dropped and named."""
    from avf.compress.fold import fold_model
    from avf.compress.pipeline import _probe_inputs
    from avf.compress.prune import check_ratio_honoured, hidden_widths, prune_channels

    if grid == [0.0]:
        return grid
    folded = fold_model(model, _probe_inputs(None, model)).model
    config, kept, dropped = payload["model"], [0.0], []
    for ratio in grid[1:]:
        try:
            pruned = prune_channels(folded, ratio, config["rgb_dim"], config["audio_dim"])
            check_ratio_honoured(ratio, hidden_widths(folded), hidden_widths(pruned))
            kept.append(ratio)
        except InputError:
            dropped.append(ratio)
    if dropped:
        notes.append(f"prune ratios {', '.join(f'{r:g}' for r in dropped)} cannot be honoured by this model's widths "
                     "(kept in multiples of 8) and were not searched")
    return kept
