"""Issue 22 on the CPU: the x86-cpu tune pick against PyTorch eager, ONNX Runtime and OpenVINO, side by side.

The claim this checks: ``avf tune CHECKPOINT --profile x86-cpu --min-retention 0.99`` on a checkpoint trained on the
standard split chooses an artifact that keeps >= 99% of GAP on held-out videos the search never saw and is >= 200x
PyTorch FP32 eager at batch 1 (p50), with p99 under 2x its p50; ahead of ONNX Runtime dynamic INT8 and OpenVINO on
the same model in the same run.

Variants, all at batch 1 on the same inputs, with the same thread count, in one process:

1. ``pytorch-fp32-eager``: the checkpoint in PyTorch eager FP32 (avf's ``pytorch`` backend, torch.inference_mode);
2. ``ort-fp32-unfolded``: the checkpoint's model exported to ONNX as trained (no fold), ONNX Runtime CPU;
3. ``ort-int8-dynamic-unfolded``: that export through ONNX Runtime's ``quantize_dynamic`` (QInt8 per-channel
   weights, activations quantized at run time: avf's own int8-dynamic builder, which is that call);
4. ``ort-fp32-folded``: avf-compress's lossless fold, exported FP32 (the model.onnx of ``avf compress CKPT``),
   ONNX Runtime CPU (not a competitor: it shows how much of the pick's speed is the fold);
5. ``openvino-fp32-folded``, ``openvino-pick`` (and ``openvino-pick-model.onnx`` where the pick ships a separate
   model.cpu.onnx): OpenVINO's CPU plugin, ``INFERENCE_NUM_THREADS`` = threads, ``PERFORMANCE_HINT`` LATENCY,
   everything else OpenVINO's default (its inference precision hint is recorded: bf16 on CPUs that have it);
   timed on the model reshaped to a static batch of 1 (OpenVINO's fastest form for one fixed shape), scored on
   the dynamic-batch model. A model OpenVINO refuses is a row "not measured: <reason>";
6. ``pick``: the tune pick in ONNX Runtime through avf's own runner, on the file avf-bench times
   (``avf.compress.report.cpu_model_name``: model.cpu.onnx where the artifact has one, else model.onnx).

Timing: interleaved rounds, the order rotated each round, so drift in the machine's state hits every variant alike;
in each round each variant is warmed (0.25 s of untimed calls, so the previous variant's thread pools have gone
idle, then 20 calls) and timed back to back for at least --seconds (avf.deploy.latency.measure_latency). Per
variant: p50 = the median over rounds of the per-round p50s, p99 = the median of the per-round p99s, and the ratio
eager p50 / variant p50. avf-bench's own single-stream figure for the pick is taken after the rounds as a
cross-check (not interleaved).

With --test (a held-out feature store or TFRecord glob), every variant is scored there (avf.runtime.scoring,
batches of 512) and its GAP retention is its GAP over the checkpoint's PyTorch FP32 GAP on the same videos.

Timed figures need an otherwise idle machine: the script refuses to time when the 1-minute load average is above
--max-load (at the start, and again after building the variants, waiting up to --settle seconds for this script's
own build work to decay out of it), unless --allow-busy, in which case the results say the machine was busy.

    python tools/bench_cpu_engines.py --checkpoint RUN/best.pt --pick TUNE_OUT/artifact --test TEST_STORE \\
        --results docs/results/cpu_engines

Writes DIR/cpu_engines.json and DIR/cpu_engines.md. OpenVINO is optional (pip install openvino).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EAGER, PICK, INT8_DYNAMIC = "pytorch-fp32-eager", "pick", "ort-int8-dynamic-unfolded"
OPENVINO_INSTALL = "not measured: pip install openvino"
#: The claim's bars.
SPEEDUP_BAR, TAIL_BAR, RETENTION_BAR = 200.0, 2.0, 0.99
PREWARM_SECONDS = 0.25


@dataclass
class Variant:
    name: str
    what: str
    #: run(rgb, audio) -> probabilities at batch 1, the call that is timed; None: not measured.
    run: object = None
    #: The same model for scoring batches (OpenVINO: the dynamic-batch compilation); None: ``run``.
    score_run: object = None
    not_measured: str | None = None
    facts: dict = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.run is not None

    @property
    def scorer(self):
        return self.score_run or self.run


# ----------------------------------------------------------------------------- building the variants


def build_variants(args, workdir: Path, say) -> tuple[list[Variant], dict]:
    import torch

    from avf.compress.export import export_model, save_model, write_metadata
    from avf.compress.quantize import quantize_int8_dynamic
    from avf.compress.report import cpu_model_name
    from avf.data.vocabulary import file_sha256
    from avf.deploy.artifact import read_artifact
    from avf.deploy.target import load_target
    from avf.runtime.onnxruntime_cpu import OnnxRuntimeCpuRunner
    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint

    threads = args.threads
    torch.set_num_threads(threads)
    payload = load_checkpoint(args.checkpoint)
    config = payload["model"]
    checkpoint_sha256 = file_sha256(args.checkpoint)
    report = read_artifact(args.pick)
    pick_file = args.pick / cpu_model_name(report.files)
    context = {"checkpoint": {"path": str(args.checkpoint.resolve()), "sha256": checkpoint_sha256,
                              "model": config["name"], "epoch": payload.get("epoch"),
                              "parameters": sum(int(t.numel()) for t in payload["state_dict"].values()
                                                if hasattr(t, "numel"))},
               "pick": {"path": str(args.pick.resolve()), "precision": report.precision, "file": pick_file.name,
                        "file_sha256": file_sha256(pick_file), "parameters": report.parameters,
                        "stages": [stage.model_dump(mode="json", exclude_none=True) for stage in report.stages],
                        "from_this_checkpoint": report.checkpoint.sha256 == checkpoint_sha256,
                        "gate_retention": None if report.retention is None else report.retention.ratios.get("gap"),
                        "gate_data": None if report.retention is None else report.retention.eval_data}}
    if not context["pick"]["from_this_checkpoint"]:
        say(f"WARNING: the pick was compressed from checkpoint sha256 {report.checkpoint.sha256[:12]}, not from "
            f"{args.checkpoint} ({checkpoint_sha256[:12]}): its ratios and retention are against another model")
    variants: list[Variant] = []

    say("pytorch-fp32-eager: the checkpoint through avf's pytorch backend")
    eager, facts = load_target(args.checkpoint, "pytorch", threads=threads)
    torch.set_num_threads(threads)
    variants.append(Variant(EAGER, "PyTorch FP32 eager on the checkpoint (avf --backend pytorch, torch.inference_mode)",
                            eager, facts={**facts, "torch_threads": torch.get_num_threads()}))

    reference = model_from_checkpoint(payload, args.checkpoint).eval()
    metadata = {"model": config["name"], "num_classes": payload["num_classes"],
                "vocabulary_sha256": payload.get("vocabulary_sha256") or "", "precision": "fp32",
                "checkpoint_sha256": checkpoint_sha256, "producer": "tools/bench_cpu_engines.py (unfolded export)"}
    say("ort-fp32-unfolded: exporting the checkpoint's model without folding")
    unfolded = save_model(export_model(reference, config["rgb_dim"], config["audio_dim"], metadata),
                          workdir / "unfolded.fp32.onnx")
    variants.append(_ort(OnnxRuntimeCpuRunner, "ort-fp32-unfolded",
                         "ONNX Runtime CPU, FP32, the checkpoint's model exported as trained (no fold)",
                         unfolded, threads))

    say("ort-int8-dynamic-unfolded: quantize_dynamic (QInt8, per-channel) on the unfolded export")
    int8 = quantize_int8_dynamic(unfolded, workdir / "unfolded.int8-dynamic.onnx")
    write_metadata(int8, {**metadata, "precision": "int8-dynamic"})  # the quantizer drops the metadata
    variant = _ort(OnnxRuntimeCpuRunner, INT8_DYNAMIC,
                   "ONNX Runtime CPU, dynamic INT8 (weights QInt8 per-channel, activations at run time) of the "
                   "unfolded export", int8, threads)
    variant.facts["quantizer"] = ("avf.compress.quantize.quantize_int8_dynamic (avf's int8-dynamic builder): "
                                  "onnxruntime.quantization.quantize_dynamic(weight_type=QuantType.QInt8, "
                                  "per_channel=True), defaults otherwise (reduce_range=False, all op types)")
    variants.append(variant)

    say("ort-fp32-folded: avf compress CKPT (fold, FP32 export)")
    folded_dir = workdir / "folded.fp32"
    folded = _folded_fp32(args.checkpoint, folded_dir, say)
    if isinstance(folded, str):
        variants.append(Variant("ort-fp32-folded", "ONNX Runtime CPU, FP32, avf-compress's folded export",
                                not_measured=folded))
    else:
        variants.append(_ort(OnnxRuntimeCpuRunner, "ort-fp32-folded",
                             "ONNX Runtime CPU, FP32, avf-compress's folded export (avf compress CKPT: model.onnx)",
                             folded, threads))

    openvino_models = [("openvino-fp32-folded", "OpenVINO CPU on avf-compress's folded FP32 export",
                        folded if not isinstance(folded, str) else None),
                       ("openvino-pick", f"OpenVINO CPU on the pick's {pick_file.name}", pick_file)]
    if pick_file.name != "model.onnx":
        openvino_models.append(("openvino-pick-model.onnx", "OpenVINO CPU on the pick's model.onnx (its TensorRT form)",
                                args.pick / "model.onnx"))
    for name, what, path in openvino_models:
        say(f"{name}: compiling")
        variants.append(_openvino(name, what, path, threads, config["rgb_dim"], config["audio_dim"],
                                  None if not isinstance(folded, str) else folded))

    say(f"pick: {pick_file.name} through avf's onnxruntime runner")
    runner, facts = load_target(args.pick, "onnxruntime", threads=threads)
    variants.append(Variant(PICK, f"the tune pick ({report.precision}) in ONNX Runtime CPU through avf's runner "
                                  f"({Path(runner.path).name}, the file avf-bench times)", runner,
                            facts={**facts, "file": Path(runner.path).name}))
    return variants, context


def _ort(runner_class, name: str, what: str, path: Path, threads: int) -> Variant:
    from avf.data.vocabulary import file_sha256

    runner = runner_class(path, threads=threads)
    return Variant(name, what, runner, facts={**runner.facts.model_dump(mode="json"), "intra_op_num_threads": threads,
                                              "graph_optimization_level": "ORT_ENABLE_ALL", "file": path.name,
                                              "bytes": path.stat().st_size, "sha256": file_sha256(path)})


def _folded_fp32(checkpoint: Path, out: Path, say) -> Path | str:
    """model.onnx of ``avf compress CHECKPOINT`` (fold, FP32; gate at 0), or why there is none."""
    from avf.compress.options import CompressOptions
    from avf.compress.pipeline import CompressionRejected, compress

    try:  # the gate's data: the checkpoint's recorded validation set where it still exists (256 videos), else none
        compress(CompressOptions(checkpoint=checkpoint, out=out, min_retention=0.0, eval_size=256),
                 say=lambda line: say("  " + line))
    except CompressionRejected as exc:  # written all the same; the gate at 0 should not reject
        say(f"  (gate: {exc.reason})")
    except Exception as exc:  # noqa: BLE001 - recorded as the row's reason
        return f"not measured: avf compress failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return out / "model.onnx"


class OpenVinoRun:
    """``run(rgb, audio) -> probabilities`` through one infer request of a compiled OpenVINO model."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.output = compiled.output(0)

    def __call__(self, rgb: np.ndarray, audio: np.ndarray) -> np.ndarray:
        result = self.request.infer({"rgb": np.ascontiguousarray(rgb, np.float32),
                                     "audio": np.ascontiguousarray(audio, np.float32)}, share_inputs=True)
        return np.asarray(result[self.output], np.float32)  # share_outputs=False (the default): a copy


def _openvino(name: str, what: str, path: Path | None, threads: int, rgb_dim: int, audio_dim: int,
              missing: str | None) -> Variant:
    try:
        import openvino as ov
    except ImportError:
        return Variant(name, what, not_measured=OPENVINO_INSTALL)
    if path is None:
        return Variant(name, what, not_measured=missing or "not measured: no model")
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    try:
        core = ov.Core()
        static = core.read_model(str(path))
        static.reshape({"rgb": [1, rgb_dim], "audio": [1, audio_dim]})
        timed = core.compile_model(static, "CPU", config)
        scored = core.compile_model(core.read_model(str(path)), "CPU", config)
        run, score_run = OpenVinoRun(timed), OpenVinoRun(scored)
        score_run(np.zeros((2, rgb_dim), np.float32), np.zeros((2, audio_dim), np.float32))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError/OpConversionFailure/...; recorded
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return Variant(name, what, not_measured=f"not measured: OpenVINO refused {path.name}: {first[:300]}")
    properties = {}
    for key in ("INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "NUM_STREAMS",
                "EXECUTION_MODE_HINT", "ENABLE_HYPER_THREADING", "ENABLE_CPU_PINNING", "SCHEDULING_CORE_TYPE"):
        try:
            value = timed.get_property(key)
            properties[key] = value.to_string() if hasattr(value, "to_string") else str(value)
        except Exception:  # noqa: BLE001 - a property this version does not have
            pass
    from avf.data.vocabulary import file_sha256

    what += f" (inference precision {properties.get('INFERENCE_PRECISION_HINT', 'unknown')}: OpenVINO's default here)"
    return Variant(name, what, run, score_run, facts={
        "file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path), "device": "CPU",
        "compile_config": config, "compiled_properties": properties, "openvino": ov.get_version(),
        "timed_shape": "static batch 1 (model.reshape)", "scored_shape": "dynamic batch"})


# ----------------------------------------------------------------------------- timing


def time_rounds(variants: list[Variant], rounds: int, seconds: float, rgb: np.ndarray, audio: np.ndarray, say) -> None:
    from avf.deploy.latency import measure_latency

    measured = [v for v in variants if v.measured]
    for index in range(rounds):
        shift = index % len(measured)
        order = measured[shift:] + measured[:shift]
        say(f"round {index + 1}/{rounds}: " + ", ".join(v.name for v in order))
        for variant in order:
            run = variant.run
            until = time.perf_counter() + PREWARM_SECONDS
            while time.perf_counter() < until:  # the previous variant's thread pools go idle meanwhile
                run(rgb, audio)
            latency = measure_latency(lambda: run(rgb, audio), warmup=20, min_iterations=100, min_seconds=seconds)
            variant.rounds.append({"round": index + 1, "position": order.index(variant) + 1,
                                   **{k: latency[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms",
                                                              "max_ms", "iterations")}})


def summarise(variants: list[Variant]) -> dict[str, dict]:
    eager = next(v for v in variants if v.name == EAGER)
    eager_p50 = statistics.median(r["p50_ms"] for r in eager.rounds)
    rows = {}
    for variant in variants:
        if not variant.rounds:
            rows[variant.name] = {"measured": False, "reason": variant.not_measured}
            continue
        p50 = statistics.median(r["p50_ms"] for r in variant.rounds)
        p99 = statistics.median(r["p99_ms"] for r in variant.rounds)
        rows[variant.name] = {"measured": True, "p50_ms": p50, "p99_ms": p99, "p99_over_p50": p99 / p50,
                              "speedup_vs_eager": eager_p50 / p50,
                              "p50_ms_per_round": [r["p50_ms"] for r in variant.rounds],
                              "p99_ms_per_round": [r["p99_ms"] for r in variant.rounds],
                              "iterations_per_round": [r["iterations"] for r in variant.rounds]}
    return rows


# ----------------------------------------------------------------------------- scoring


def score_on_test(args, variants: list[Variant], say) -> dict:
    from avf.data.vocabulary import check_same_vocabulary
    from avf.errors import InputError
    from avf.runtime.scoring import score_together
    from avf.train.checkpoint import load_checkpoint
    from avf.train.data import load_training_data

    payload = load_checkpoint(args.checkpoint)
    data = load_training_data(args.test, payload["num_classes"])
    check_same_vocabulary(payload.get("vocabulary_sha256"), args.checkpoint, data.vocabulary_sha256, args.test)
    config = payload["model"]
    if data.rgb.shape[1] != config["rgb_dim"] or data.audio.shape[1] != config["audio_dim"]:
        raise InputError(args.test, f"test data has {data.rgb.shape[1]}+{data.audio.shape[1]} features, the model "
                                    f"expects {config['rgb_dim']}+{config['audio_dim']}")
    runs = {v.name: v.scorer for v in variants if v.measured}
    say(f"scoring {len(runs)} variants on {len(data):,} held-out videos ({data.description})")
    metrics = score_together(runs, data, batch_size=512)
    reference = metrics[EAGER]["gap"]
    result = {"data": {**data.sources_summary(), "content_sha256": data.content_sha256()},
              "reference": "pytorch-fp32-eager GAP (the checkpoint in PyTorch FP32)", "reference_gap": reference,
              "variants": {name: {"gap": m["gap"], "map": m.get("map"), "hit_at_one": m.get("hit_at_one"),
                                  "retention": m["gap"] / reference if reference else None}
                           for name, m in metrics.items()}}
    return result


def max_difference(variants: list[Variant], rgb_dim: int, audio_dim: int) -> dict[str, float]:
    """Largest |probability - eager's| of each variant on 256 random videos: a broken variant shows here."""
    rng = np.random.default_rng(1)
    rgb = rng.standard_normal((256, rgb_dim), dtype=np.float32)
    audio = rng.standard_normal((256, audio_dim), dtype=np.float32)
    eager = next(v for v in variants if v.name == EAGER).scorer(rgb, audio)
    return {v.name: float(np.abs(v.scorer(rgb, audio) - eager).max()) for v in variants if v.measured}


# ----------------------------------------------------------------------------- the claim


def claims(rows: dict, scoring: dict | None, busy: bool) -> list[dict]:
    pick = rows[PICK]
    out = []

    def add(name, verdict, detail):
        out.append({"claim": name, "verdict": verdict, "detail": detail})

    speedup = pick["speedup_vs_eager"]
    add(f"pick >= {SPEEDUP_BAR:g}x PyTorch FP32 eager (p50, batch 1)", "PASS" if speedup >= SPEEDUP_BAR else "FAIL",
        f"{speedup:.1f}x (eager {rows[EAGER]['p50_ms']:.4f} ms, pick {pick['p50_ms']:.4f} ms)")
    tail = pick["p99_over_p50"]
    add(f"pick p99 < {TAIL_BAR:g}x its p50", "PASS" if tail < TAIL_BAR else "FAIL",
        f"p99/p50 = {tail:.2f} (p99 {pick['p99_ms']:.4f} ms)")
    int8 = rows.get(INT8_DYNAMIC, {})
    if int8.get("measured"):
        add("pick ahead of ONNX Runtime dynamic INT8 (p50)", "PASS" if pick["p50_ms"] < int8["p50_ms"] else "FAIL",
            f"pick {pick['p50_ms']:.4f} ms vs {int8['p50_ms']:.4f} ms ({int8['p50_ms'] / pick['p50_ms']:.2f}x)")
    else:
        add("pick ahead of ONNX Runtime dynamic INT8 (p50)", "NOT CHECKED", int8.get("reason") or "not measured")
    openvino = {name: row for name, row in rows.items() if name.startswith("openvino")}
    measured = {name: row for name, row in openvino.items() if row["measured"]}
    skipped = [f"{name}: {row['reason']}" for name, row in openvino.items() if not row["measured"]]
    if measured:
        ahead = all(pick["p50_ms"] < row["p50_ms"] for row in measured.values())
        detail = "; ".join(f"{name} {row['p50_ms']:.4f} ms ({row['p50_ms'] / pick['p50_ms']:.2f}x the pick's p50)"
                           for name, row in measured.items())
        add("pick ahead of every OpenVINO row (p50)", "PASS" if ahead else "FAIL",
            detail + ("; unmeasured: " + "; ".join(skipped) if skipped else ""))
    else:
        add("pick ahead of every OpenVINO row (p50)", "NOT CHECKED", "; ".join(skipped) or OPENVINO_INSTALL)
    if scoring is None:
        add(f"pick GAP retention on --test >= {RETENTION_BAR:g} (vs the checkpoint's PyTorch FP32 GAP)", "NOT CHECKED",
            "no --test given")
    else:
        retention = scoring["variants"][PICK]["retention"]
        add(f"pick GAP retention on --test >= {RETENTION_BAR:g} (vs the checkpoint's PyTorch FP32 GAP)",
            "PASS" if retention is not None and retention >= RETENTION_BAR else "FAIL",
            f"{retention:.4f} (pick GAP {scoring['variants'][PICK]['gap']:.4f}, FP32 {scoring['reference_gap']:.4f}, "
            f"{scoring['data']['videos']:,} videos)" if retention is not None else "reference GAP is 0")
    if busy:
        for claim in out[:4]:
            claim["detail"] += " [machine BUSY: timings distorted, not evidence]"
    return out


# ----------------------------------------------------------------------------- conditions and results


def machine_conditions(threads: int) -> dict:
    from avf.deploy.bench import conditions

    facts = conditions(threads, "cpu")  # CPU model, ISA flags, caches, governor, torch/onnxruntime/onnx versions
    try:
        import openvino as ov

        facts["openvino"] = ov.get_version()
    except ImportError:
        facts["openvino"] = None
    facts["numpy"] = np.__version__
    return facts


def settle(max_load: float, limit: float, say) -> float:
    """Wait (up to ``limit`` s) for the 1-minute load to fall to ``max_load``: the build just done is in it."""
    started = time.time()
    load = os.getloadavg()[0]
    if load > max_load and limit > 0:
        say(f"1-minute load {load:.2f} > {max_load} after building (this script's own work decays out of it): "
            f"waiting up to {limit:g} s")
    while load > max_load and time.time() - started < limit:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


def avf_bench_crosscheck(pick: Path, threads: int, seconds: float) -> dict:
    """avf-bench's single-stream batch-1 figure for the pick (avf.deploy.bench.benchmark), after the rounds."""
    from avf.deploy.bench import benchmark

    try:
        result = benchmark(pick, "onnxruntime", batches=[1], scenarios=["single-stream"], duration=seconds,
                           threads=threads)
    except Exception as exc:  # noqa: BLE001 - a cross-check; recorded
        return {"measured": False, "reason": f"{type(exc).__name__}: {exc}"}
    single = result["scenarios"]["single-stream"]
    return {"measured": True, "p50_ms": single["p50_ms"], "p99_ms": single["p99_ms"], "iterations": single["iterations"],
            "floor": result.get("floor"), "method": "avf.deploy.bench.benchmark(single-stream, batch 1), one run of "
                                                    "--seconds after the interleaved rounds (not interleaved)"}


def write_results(folder: Path, result: dict) -> None:
    from avf.atomic import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "cpu_engines.json", json.dumps(result, indent=2, default=_plain) + "\n")
    atomic_write_text(folder / "cpu_engines.md", markdown(result))


def markdown(result: dict) -> str:
    m, rows, scoring = result["machine"], result["rows"], result.get("test")
    lines = [f"# Issue 22 on the CPU: the tune pick vs PyTorch eager, ONNX Runtime and OpenVINO ({m['threads']} threads)",
             "", f"Command: `{result['command']}`", "",
             f"Machine: {m['conditions']['cpu']}, {m['conditions']['logical_cpus']} logical CPUs; INT8 dot product: "
             f"{m['conditions']['isa'].get('int8_dot')}; torch {m['conditions'].get('torch')}, onnxruntime "
             f"{m['conditions'].get('onnxruntime')}, openvino {m['conditions'].get('openvino') or 'not installed'}. "
             f"1-minute load: {m['load_1min_start']:.2f} at the start, {m['load_1min_before_timing']:.2f} before "
             f"timing, {m['load_1min_after_timing']:.2f} after"
             + (" -- **BUSY: the timings are distorted, not evidence**" if m["busy"] else "") + ".", "",
             f"Checkpoint `{result['checkpoint']['path']}` ({result['checkpoint']['model']}); pick "
             f"`{result['pick']['path']}` ({result['pick']['precision']}, {result['pick']['file']})"
             + ("" if result["pick"]["from_this_checkpoint"] else
                " -- **the pick was not compressed from this checkpoint**") + ".", "",
             "| variant | p50 ms | p99 ms | p99/p50 | vs eager | max prob. diff vs eager | GAP on --test | GAP retention |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant in result["variants"]:
        name, row = variant["name"], rows[variant["name"]]
        test = (scoring or {}).get("variants", {}).get(name, {})
        gap = f"{test['gap']:.4f}" if test else "-"
        retention = f"{test['retention']:.4f}" if test.get("retention") is not None else "-"
        if not row["measured"]:
            lines.append(f"| {name} | {row['reason']} | | | | | | |")
            continue
        diff = result["max_probability_difference"].get(name)
        lines.append(f"| {name} | {row['p50_ms']:.4f} | {row['p99_ms']:.4f} | {row['p99_over_p50']:.2f} | "
                     f"{row['speedup_vs_eager']:.1f}x | {diff:.1e} | {gap} | {retention} |")
    bench = result.get("avf_bench_pick")
    lines += ["", result["method"], ""]
    if bench and bench.get("measured"):
        lines += [f"avf-bench cross-check of the pick (one run after the rounds, not interleaved): p50 "
                  f"{bench['p50_ms']:.4f} ms, p99 {bench['p99_ms']:.4f} ms.", ""]
    if scoring:
        lines += [f"GAP on --test: {scoring['data']['videos']:,} held-out videos ({scoring['data']['description']}); "
                  f"retention = GAP / the checkpoint's PyTorch FP32 GAP ({scoring['reference_gap']:.4f}). "
                  + {True: "These are not the videos the pick's retention gate used.",
                     False: "**These are the videos the pick's retention gate used: not held out from the search.**",
                     None: "Whether the search saw them is not known from the pick's report."}
                  [result["test_disjoint_from_pick_gate"]], ""]
    lines += ["Variants:", ""] + [f"- `{v['name']}`: {v['what']}" for v in result["variants"]]
    lines += ["", "## Claim", "", "| check | verdict | detail |", "| --- | --- | --- |"]
    lines += [f"| {c['claim']} | {c['verdict']} | {c['detail']} |" for c in result["claims"]]
    return "\n".join(lines) + "\n"


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the avf train checkpoint (best.pt) tuned")
    parser.add_argument("--pick", type=Path, required=True, help="the artifact avf tune chose (TUNE_OUT/artifact)")
    parser.add_argument("--test", help="held-out feature store or TFRecord glob: GAP and retention of every variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per variant per round")
    parser.add_argument("--results", type=Path, required=True, help="folder for cpu_engines.json and cpu_engines.md")
    parser.add_argument("--max-load", type=float, default=0.5, help="refuse to time above this 1-minute load")
    parser.add_argument("--settle", type=float, default=180.0,
                        help="seconds to wait after building for the 1-minute load to fall to --max-load")
    parser.add_argument("--allow-busy", action="store_true", help="time anyway (the results say the machine was busy)")
    parser.add_argument("--no-avf-bench", action="store_true", help="skip avf-bench's cross-check of the pick")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or not args.seconds > 0:
        parser.error("--threads and --rounds must be >= 1 and --seconds > 0")
    if not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    if not args.pick.is_dir():
        parser.error(f"--pick {args.pick}: not an artifact folder")

    def say(line: str) -> None:
        print(line, flush=True)

    load_start = os.getloadavg()[0]
    if load_start > args.max_load and not args.allow_busy:
        raise SystemExit(f"1-minute load is {load_start:.2f} > {args.max_load}: other work would distort the timings; "
                         "rerun when the machine is idle (or --allow-busy)")
    from avf.train.checkpoint import load_checkpoint

    config = load_checkpoint(args.checkpoint)["model"]
    with tempfile.TemporaryDirectory(prefix="avf-cpu-engines.") as tmp:
        variants, context = build_variants(args, Path(tmp), say)
        differences = max_difference(variants, config["rgb_dim"], config["audio_dim"])
        load_before = settle(args.max_load, 0 if args.allow_busy else args.settle, say)
        if load_before > args.max_load and not args.allow_busy:
            raise SystemExit(f"1-minute load is still {load_before:.2f} > {args.max_load} after {args.settle:g} s: "
                             "other work would distort the timings; rerun when the machine is idle (or --allow-busy)")
        rng = np.random.default_rng(0)
        rgb = rng.standard_normal((1, config["rgb_dim"]), dtype=np.float32)
        audio = rng.standard_normal((1, config["audio_dim"]), dtype=np.float32)
        time_rounds(variants, args.rounds, args.seconds, rgb, audio, say)
        load_after = os.getloadavg()[0]
        bench = None if args.no_avf_bench else avf_bench_crosscheck(args.pick, args.threads, args.seconds)
        scoring = score_on_test(args, variants, say) if args.test else None
    rows = summarise(variants)
    busy = max(load_start, load_before) > args.max_load
    disjoint = None
    gate_data = context["pick"]["gate_data"]
    if scoring is not None and gate_data and gate_data.get("content_sha256"):
        disjoint = gate_data["content_sha256"] != scoring["data"]["content_sha256"]
    result = {
        "format": "avf-bench-cpu-engines", "version": 1,
        "command": "python tools/bench_cpu_engines.py " + shlex.join(sys.argv[1:]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **context,
        "machine": {"threads": args.threads, "conditions": machine_conditions(args.threads),
                    "python": platform.python_version(), "load_1min_start": load_start,
                    "load_1min_before_timing": load_before, "load_1min_after_timing": load_after, "busy": busy,
                    "max_load": args.max_load, "allow_busy": args.allow_busy},
        "method": (f"batch 1, {args.threads} threads for every runtime (torch.set_num_threads, ONNX Runtime "
                   f"intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS), one process; {args.rounds} interleaved "
                   f"rounds, order rotated each round; per round and variant {PREWARM_SECONDS:g} s of untimed calls, "
                   f"20 warm-up calls, then >= {args.seconds:g} s (>= 100 calls) timed back to back with "
                   "time.perf_counter; p50 = median of the per-round p50s, p99 = median of the per-round p99s; "
                   "'vs eager' = eager p50 / variant p50; the same random inputs for every variant"),
        "variants": [{"name": v.name, "what": v.what, "facts": v.facts, "rounds": v.rounds,
                      **({"not_measured": v.not_measured} if v.not_measured else {})} for v in variants],
        "rows": rows,
        "max_probability_difference": differences,
        "avf_bench_pick": bench,
        "test": scoring,
        "test_disjoint_from_pick_gate": disjoint,
    }
    result["claims"] = claims(rows, scoring, busy)
    write_results(args.results, result)
    print(markdown(result))


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"done in {(time.time() - started) / 60:.1f} min")
