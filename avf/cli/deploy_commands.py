"""``avf profiles``, ``avf bench``, ``avf predict``, ``avf deploy ...`` and ``avf demo``.

Each takes ``--json``: its result as one JSON document on stdout (:mod:`avf.cli.json_output`), its tables and
lines on stderr.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from avf.cli.json_output import emit, human, json_option
from avf.cli.options import given, option, target_of
from avf.cli.progress import note
from avf.deploy.bench import BATCHES, SCENARIOS, benchmark
from avf.deploy.check import artifact_inputs, run_check
from avf.deploy.loadgen import SCENARIOS as LOADGEN_SCENARIOS
from avf.deploy.demo import run_demo
from avf.deploy.manifest import build_manifest
from avf.deploy.predict import predict
from avf.deploy.triton import write_triton_repository
from avf.errors import ExitCode

LoadgenScenario = Enum("LoadgenScenario", {name: name for name in LOADGEN_SCENARIOS},
                       type=str)

stdout = Console()
TARGET_HELP = ("Where to measure: local (this machine), or ssh://[user@]host[:port] or a host of your ~/.ssh/config "
               "(a device with avf's runtime install; see the README's Jetson section).")
REMOTE_PYTHON_HELP = "The device's Python interpreter that has avf installed (with --target ssh://...)."


def _say(line: str) -> None:
    from avf.cli.progress import stderr

    stderr.print(line, markup=False, highlight=False)


def profiles_command(
    profile: str = typer.Argument(None, help="Show one profile (a shipped name or a YAML file) in full."),
    as_json: bool = json_option("profiles"),
) -> None:
    """List the shipped device profiles, or validate and show one (yours included, as JSON)."""
    from avf.deploy.profiles import all_profiles, load_profile

    profiles = [load_profile(profile)] if profile else all_profiles()
    if as_json or profile:
        data = [p.model_dump(mode="json") for p in profiles]
        emit(data[0] if profile else data)
        return
    table = Table(title="device profiles (avf/profiles/*.yaml; a YAML file of your own works anywhere a name does)")
    for column in ("name", "kind", "memory GiB", "GB/s", "peak TFLOPS/TOPS", "power W", "budgets", "backend"):
        table.add_column(column, justify="right" if column in ("memory GiB", "GB/s", "power W") else "left")
    for p in profiles:
        peaks = ", ".join(f"{k} {v:g}" for k, v in p.peak_tflops.items())
        power = ", ".join(f"{m} {w:g}" for m, w in p.power_modes_w.items()) if p.power_modes_w else f"{p.tdp_w:g}"
        table.add_row(p.name, p.kind, f"{p.memory_gib:g}", f"{p.memory_bandwidth_gbs:g}", peaks, power,
                      f"{p.budgets.latency_ms:g} ms, {p.budgets.memory_mib:g} MiB", p.preferred_backend)
    stdout.print(table)


def bench_command(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="An avf-compress artifact directory or a checkpoint (.pt)."),
    backend: str = option(benchmark, "backend", "--backend", help="Artifacts: onnxruntime, onnxruntime-cuda, "
                          "onnxruntime-tensorrt or tensorrt (the engine avf-compress built), torch-tensorrt (its "
                          "model.ep); checkpoints: pytorch or torch-compile."),
    batch: str = typer.Option(",".join(map(str, BATCHES)), "--batch", help="Batch sizes for the offline scenario."),
    scenario: str = typer.Option(",".join(SCENARIOS), "--scenario", help="single-stream and/or offline."),
    duration: float = option(benchmark, "duration", "--duration", min=0.0, help="Timed seconds per measurement."),
    threads: int = option(benchmark, "threads", "--threads", min=1, help="CPU threads (default: all cores)."),
    device: str = option(benchmark, "device", "--device", help="cpu or cuda."),
    precision: str = option(benchmark, "precision", "--precision", help="Checkpoints: fp32 (default), fp16 or bf16."),
    cuda_graphs: bool = option(benchmark, "cuda_graphs", "--cuda-graphs", help="Checkpoints on cuda: replay CUDA "
                               "graphs (torch-compile: its reduce-overhead mode)."),
    warmup: int = option(benchmark, "warmup", "--warmup", min=0, help="Untimed calls before each timed "
                         "measurement (single-stream; offline takes a quarter, at least 1)."),
    iterations: int = option(benchmark, "iterations", "--iterations", min=1, help="Timed calls at least, per "
                             "measurement (and at least --duration seconds)."),
    loadgen: LoadgenScenario = typer.Option(None, "--loadgen", help="Also run this MLPerf LoadGen scenario "
                                            "(performance mode) on the same runner; its logs go to OUT.loadgen/ "
                                            "(the loadgen extra)."),
    loadgen_duration: float = typer.Option(10.0, "--loadgen-duration", min=0.0, help="LoadGen's minimum duration, "
                                           "seconds (MLPerf's own runs use 600)."),
    target_qps: float = typer.Option(None, "--target-qps", min=0.0, help="LoadGen Server: the Poisson arrival rate "
                                     "(queries/s); Offline: the expected rate."),
    target_latency_ms: float = typer.Option(None, "--target-latency-ms", min=0.0, help="LoadGen Server: the latency "
                                            "bound of a valid run (LoadGen's default otherwise)."),
    out: str = typer.Option("bench.json", "--out", "-o", help="Results JSON (a PNG plot is written beside it)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing results file (and its plot)."),
    target_device: str = typer.Option("local", "--target", help=TARGET_HELP),
    remote_python: str = typer.Option("python3", "--remote-python", help=REMOTE_PYTHON_HELP),
    as_json: bool = json_option("bench"),
) -> None:
    """Latency (p50/p90/p99), throughput, memory and energy of a model, with the conditions.

    --json prints the record written to --out (bench.json) on stdout.
    """
    from avf.cli.progress import stderr
    from avf.deploy.bench import check_bench_outputs, write_bench
    from avf.errors import InputError

    try:
        batches = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError:
        raise InputError(None, f"--batch {batch!r}: must be comma-separated integers, e.g. 1,8,64") from None
    if not batches or min(batches) < 1:
        raise InputError(None, f"--batch {batch!r}: batch sizes must be integers >= 1")
    _check_device(device)
    remote = target_of(ctx, target_device, remote_python)
    loadgen = str(getattr(loadgen, "value", loadgen)) if loadgen else None
    if loadgen is None and any(given(ctx, name) for name in ("loadgen_duration", "target_qps", "target_latency_ms")):
        note("--loadgen-duration, --target-qps and --target-latency-ms do nothing without --loadgen")
    if loadgen and remote is not None:
        raise InputError(None, "--loadgen runs here only (with --target, run avf-bench --loadgen on the device)")
    out_path = check_bench_outputs(out, force, inputs=[target])
    say = lambda line: stderr.print(line, markup=False, highlight=False)  # noqa: E731
    scenarios = [s.strip() for s in scenario.split(",") if s.strip()]
    if remote is None and loadgen:
        from avf.atomic import atomic_directory
        from avf.deploy.loadgen import SUMMARY_FILE

        logs = out_path.with_suffix(".loadgen")
        with atomic_directory(logs, force, ours=lambda p: (Path(p) / SUMMARY_FILE).is_file(), inputs=[target],
                              what="LoadGen log folder") as tmp:
            result = benchmark(target, backend, batches, scenarios, duration, threads, device, say=say,
                               precision=precision, cuda_graphs=cuda_graphs, warmup=warmup, iterations=iterations,
                               loadgen={"scenario": loadgen, "out_dir": tmp, "min_duration_s": loadgen_duration,
                                        "target_qps": target_qps, "target_latency_ms": target_latency_ms})
        result["loadgen"]["logs"] = str(logs)
    elif remote is None:
        result = benchmark(target, backend, batches, scenarios, duration, threads, device, say=say,
                           precision=precision, cuda_graphs=cuda_graphs, warmup=warmup, iterations=iterations)
    else:
        from avf.remote.device import RemoteDevice
        from avf.remote.measure import bench_on

        result = bench_on(RemoteDevice(remote, say=say), Path(target), backend=backend, batches=batches,
                          scenarios=scenarios, duration=duration, threads=threads, device_kind=device,
                          precision=precision, cuda_graphs=cuda_graphs)
    write_bench(result, out_path)
    if as_json:
        emit(result)
    console = human(as_json)
    table = Table(title=escape(f"{target} ({result['target_facts']['backend']}, {result['target_facts']['precision']})"))
    for column in ("scenario", "batch", "p50 ms", "floor ms", "regime", "p99 ms", "samples/s", "energy"):
        table.add_column(column, justify="left" if column in ("scenario", "regime", "energy") else "right")
    floor = result.get("floor")  # a device with an older avf records none
    regimes = {(row["scenario"], row["batch"]): row for row in (floor or {}).get("rows", [])}
    floor_ms = "not recorded" if not floor else "not measured" if floor["floor_ms"] is None else f"{floor['floor_ms']:.4f}"

    def regime(scenario, batch):
        row = regimes.get((scenario, batch))
        if row is None:
            return "not recorded"
        ratio = f" ({row['over_floor']:.1f}x)" if row["over_floor"] is not None else ""
        return f"{row['regime'] or 'unknown'}{ratio}"

    single = result["scenarios"].get("single-stream")
    if single:
        energy = single["energy"]
        table.add_row("single-stream", "1", f"{single['p50_ms']:.3f}", floor_ms, regime("single-stream", 1),
                      f"{single['p99_ms']:.3f}", f"{1e3 / single['mean_ms']:.0f}",
                      f"{energy['millijoules_per_inference']:.3f} mJ/inf" if energy["measured"] else "not measured")
    for row in result["scenarios"].get("offline", []):
        energy = row["energy"]
        table.add_row("offline", str(row["batch"]), f"{row['batch_latency']['p50_ms']:.3f}", floor_ms,
                      regime("offline", row["batch"]), f"{row['batch_latency']['p99_ms']:.3f}",
                      f"{row['samples_per_s']:,.0f}",
                      f"{energy['millijoules_per_inference']:.3f} mJ/inf" if energy["measured"] else "not measured")
    Console(stderr=as_json, width=max(console.width, 130)).print(table)  # eight columns: wrapping them helps nobody
    if floor:
        bandwidth = "not measured" if floor["bandwidth_gbs"] is None else f"{floor['bandwidth_gbs']:.1f} GB/s"
        isa = result["conditions"].get("isa", {})
        console.print(f"floor: {floor['weights_bytes'] / 2**20:.2f} MiB of weights ({floor['weights_method']}) at "
                      f"{bandwidth} ({floor['bandwidth_method']}) = {floor_ms} ms; regime: {floor['regime']}: "
                      f"{floor['says']}; INT8 dot product: {isa.get('int8_dot', 'unknown')}", markup=False,
                      soft_wrap=True)
    reasons = {row["energy"].get("reason") for row in [single or {"energy": {}}, *result["scenarios"].get("offline", [])]}
    for reason in sorted(r for r in reasons if r):
        console.print(f"energy: {reason}", markup=False)
    where = result.get("measured_on")
    if where:
        facts = where["device"]
        console.print(f"measured on {where['target']} ({facts.get('host')}: {facts.get('jetson_model') or facts.get('gpu') or facts.get('cpu')})",
                      markup=False, soft_wrap=True)
    memory = result["memory"]
    console.print(f"memory: model {memory['model_rss_mib']:.0f} MiB resident, process peak {memory['peak_rss_mib']:.0f} MiB; "
                  f"results in {out}", markup=False)


def predict_command(
    target: str = typer.Argument(..., help="An avf-compress artifact directory or a checkpoint (.pt)."),
    data: str = typer.Option(..., "--data", help="TFRecord file(s)/directory/quoted glob, or a feature store."),
    out: str = typer.Option("predictions.csv", "--out", "-o", help="CSV in the YouTube-8M challenge format."),
    top_k: int = option(predict, "top_k", "--top-k", min=1),
    vocab: str = option(predict, "vocabulary", "--vocab", help="vocabulary.csv: adds a LabelNames column."),
    batch_size: int = option(predict, "batch_size", "--batch-size", min=1),
    threads: int = option(predict, "threads", "--threads", min=1),
    force: bool = option(predict, "force", "--force", help="Replace an existing predictions file."),
    as_json: bool = json_option("predict"),
) -> None:
    """Top-k predictions as VideoId,LabelConfidencePairs (streamed, with a progress bar)."""
    from avf.cli.progress import count_progress, stderr
    from avf.deploy.predict import count_videos

    with count_progress("predict", count_videos(data)) as advance:  # TFRecords: count unknown until read
        written = predict(target, data, out, top_k, vocab, batch_size, threads, advance=advance, force=force)
    stderr.print(f"{written:,} videos -> {out}", markup=False, highlight=False)
    if as_json:
        from avf.cli.json_output import PredictResult

        emit(PredictResult(target=target, data=data, out=out, videos=written, top_k=top_k))


deploy_app = typer.Typer(help="Plan, manifest, verify and package an artifact for a device.", no_args_is_help=True)


@deploy_app.command("plan")
def plan_command(
    artifact: str = typer.Argument(..., help="An avf-compress artifact directory."),
    profile: str = typer.Option(..., "--profile", "-p", help="A shipped profile name or a YAML file."),
    bench: str = typer.Option(None, "--bench", help="bench.json of this artifact: shows measured beside predicted."),
    as_json: bool = json_option("deploy-plan"),
) -> None:
    """Predicted latency, memory and energy on the device; fits or not, and why."""
    from avf.deploy.artifact import open_artifact
    from avf.deploy.bench_record import check_bench_of, read_bench
    from avf.deploy.plan import predict_on_profile
    from avf.deploy.profiles import load_profile

    device = load_profile(profile)
    report = open_artifact(artifact, deploying=False)
    measured = read_bench(bench) if bench else None
    if measured is not None:
        check_bench_of(Path(artifact), report, measured)
    prediction = predict_on_profile(report, device)
    if as_json:
        emit({"prediction": prediction, "measured": measured["scenarios"] if measured else None})
    console = human(as_json)
    table = Table(title=escape(f"{artifact} on {device.display_name} ({prediction['precision']}; predicted = roofline)"))
    for column in ("batch", "predicted ms", "predicted samples/s", "bound", "measured p50 ms", "measured samples/s"):
        table.add_column(column, justify="right")
    offline = {row["batch"]: row for row in (measured or {}).get("scenarios", {}).get("offline", [])}
    for row in prediction["batches"]:
        seen = offline.get(row["batch"])
        table.add_row(str(row["batch"]), f"{row['latency_ms']:.4f}", f"{row['samples_per_s']:,.0f}", row["bound"],
                      f"{seen['batch_latency']['p50_ms']:.4f}" if seen else "not measured",
                      f"{seen['samples_per_s']:,.0f}" if seen else "not measured")
    console.print(table)
    console.print(f"memory (predicted): {prediction['memory_mib']:.0f} MiB; energy (predicted upper bound): "
                  f"{prediction['energy_mj_per_inference']:.3f} mJ per inference at {device.power_w:g} W", markup=False)
    verdict = "fits" if prediction["fits"] else "does not fit"
    console.print(f"{verdict}: " + "; ".join(prediction["reasons"]), markup=False)


@deploy_app.command("manifest")
def manifest_command(
    artifact: str = typer.Argument(..., help="An accepted avf-compress artifact directory."),
    profile: str = typer.Option(..., "--profile", "-p"),
    bench: str = typer.Option(None, "--bench", help="bench.json measured on the target (else figures are predicted)."),
    out: str = typer.Option("manifest.json", "--out", "-o", help="Written in the artifact's folder or one above it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing manifest file."),
    checks: list[str] = typer.Option(None, "--check", help="check.json of `avf-deploy check` (repeatable; default: "
                                     "the artifact's own check-*.json)."),
    allow_unchecked: bool = option(build_manifest, "allow_unchecked", "--allow-unchecked", help="A GPU/Jetson "
                                   "profile without a passing check on its preferred backend: deployable, with a "
                                   "warning."),
    as_json: bool = json_option("deploy-manifest"),
) -> None:
    """A validated deployment manifest: files and hashes, I/O, accuracy, checks, performance, decision.

    Exit 0 when deployable, 3 when not (the manifest is written either way, with the reasons; --json prints it on
    stdout either way).
    """
    from avf.atomic import check_output
    from avf.deploy.bench_record import read_bench
    from avf.deploy.manifest import write_manifest
    from avf.deploy.profiles import load_profile

    inputs = [*artifact_inputs(artifact), bench, *(checks or [])]
    check_output(out, force=force, directory=False, inputs=inputs, what="manifest")
    manifest = build_manifest(artifact, load_profile(profile), read_bench(bench) if bench else None, manifest_path=out,
                              checks=checks or None, allow_unchecked=allow_unchecked)
    write_manifest(manifest, out, force=force, inputs=inputs)
    if as_json:
        emit(manifest)
    console = human(as_json)
    verdict = "deployable" if manifest.decision.deployable else "NOT deployable"
    console.print(f"{out}: {manifest.model} {manifest.precision} on {manifest.profile}: {verdict}", markup=False)
    for reason in manifest.decision.reasons:
        console.print(f"  - {reason}", markup=False)
    if not manifest.decision.deployable:
        raise typer.Exit(ExitCode.BELOW_BAR)


@deploy_app.command("check")
def check_command(
    ctx: typer.Context,
    artifact: str = typer.Argument(..., help="An avf-compress artifact directory."),
    data: str = typer.Option(..., "--data", help="Held-out TFRecord file(s)/directory/quoted glob, or a feature store."),
    backend: str = option(run_check, "backend", "--backend", help="The deployed form to score: onnxruntime, "
                          "onnxruntime-cuda, onnxruntime-tensorrt, tensorrt (model.plan) or torch-tensorrt (model.ep)."),
    out: str = typer.Option(None, "--out", "-o", help="check.json (default: ARTIFACT/check-BACKEND.json)."),
    force: bool = option(run_check, "force", "--force", help="Replace an existing check file."),
    batch_size: int = option(run_check, "batch_size", "--batch-size", min=1),
    threads: int = option(run_check, "threads", "--threads", min=1, help="CPU threads (default: all cores)."),
    device: str = option(run_check, "device", "--device", help="cpu or cuda (onnxruntime on cuda: its CUDA provider)."),
    checkpoint: str = option(run_check, "checkpoint", "--checkpoint", help="The FP32 checkpoint report.json names "
                             "(its sha256 is checked), when it is elsewhere here; scored only when report.json's "
                             "retention was measured on other data."),
    target_device: str = typer.Option("local", "--target", help=TARGET_HELP),
    remote_python: str = typer.Option("python3", "--remote-python", help=REMOTE_PYTHON_HELP),
    as_json: bool = json_option("deploy-check"),
) -> None:
    """Score the deployed form on held-out data against the FP32 reference: GAP/F1 retention, written to check.json.

    Exit 0 when GAP retention reaches the artifact's min_retention, 3 when not (check.json is written either way;
    --json prints it on stdout either way).
    """
    from avf.cli.progress import count_progress
    from avf.deploy.predict import count_videos

    from avf.remote.device import RemoteDevice

    _check_device(device)
    remote = target_of(ctx, target_device, remote_python)
    with count_progress("check", count_videos(data)) as advance:
        record, written = run_check(artifact, data, backend, out, force, batch_size, threads, device, checkpoint,
                                    progress=advance, target=remote and RemoteDevice(remote, say=_say))
    if as_json:
        emit(record)
    console = human(as_json)
    where = record.conditions.get("measured_on")
    if where:
        console.print(f"measured on {where['target']}", markup=False, soft_wrap=True)
    table = Table(title=escape(f"{artifact}: {record.backend} on {record.runner.device} vs FP32 reference "
                               f"({record.reference_source.source}), {record.videos:,} videos"))
    for column in ("metric", "deployed", "reference", "retention"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, name in (("gap", "GAP"), ("f1", "F1"), ("map", "mAP"), ("hit_at_one", "Hit@1")):
        ratio = record.retention.get(key)
        table.add_row(name, f"{getattr(record.deployed, key):.4f}", f"{getattr(record.reference, key):.4f}",
                      "undefined" if ratio is None else f"{ratio:.4f}")
    console.print(table)
    console.print(f"{'passed' if record.passed else 'FAILED'}: {record.reason}; reference: "
                  f"{record.reference_source.detail}; written to {written}", markup=False, soft_wrap=True)
    if not record.passed:
        raise typer.Exit(ExitCode.BELOW_BAR)


@deploy_app.command("verify")
def verify_command(
    manifest: str = typer.Argument(..., help="manifest.json written by `avf-deploy manifest`."),
    as_json: bool = json_option("deploy-verify"),
) -> None:
    """Re-hash every file the manifest lists (relative to the manifest); exit 1 on any mismatch (after --json's
    result, which says which files)."""
    from avf.cli.progress import stderr
    from avf.deploy.manifest import verify_manifest

    problems = verify_manifest(manifest)
    if as_json:
        emit(_verify_result(manifest, problems))
    if problems:
        for problem in problems:
            stderr.print(Text("mismatch:", style="bold red") + Text(f" {problem}"), soft_wrap=True, highlight=False)
        raise typer.Exit(ExitCode.MISMATCH)
    console = human(as_json)
    console.print(f"{manifest}: every file matches its sha256", markup=False)


def _verify_result(manifest: str, problems: list[str]):
    """verify_manifest's problems, file by file: each problem starts with the file's path as verify_manifest builds
    it (ARTIFACT_DIR/NAME, relative to the manifest's resolved folder); one no file claims stays in ``problems``."""
    from avf.cli.json_output import FileCheck, VerifyResult
    from avf.deploy.manifest import read_manifest

    document = read_manifest(manifest)
    folder = Path(manifest).resolve().parent / document.artifact_dir
    files = []
    for entry in document.files:
        prefix = f"{folder / entry.name}: "
        problem = next((p.removeprefix(prefix) for p in problems if p.startswith(prefix)), None)
        files.append(FileCheck(name=entry.name, ok=problem is None, problem=problem))
    return VerifyResult(manifest=str(manifest), artifact_dir=document.artifact_dir, ok=not problems, files=files,
                        problems=problems)


BuildBackend = Enum("BuildBackend", {"tensorrt": "tensorrt", "torch-aot": "torch-aot"}, type=str)
BuildDevice = Enum("BuildDevice", {"auto": "auto", "cpu": "cpu", "cuda": "cuda"}, type=str)


@deploy_app.command("build")
def build_command(
    ctx: typer.Context,
    artifact: str = typer.Argument(..., help="An avf-compress artifact directory (fp32, fp16 or int8)."),
    backend: BuildBackend = typer.Option("tensorrt", "--backend",
                                help="tensorrt: model.plan from model.onnx; torch-aot: model.pt2 (AOTInductor) from "
                                     "model.pt, for this machine's --device."),
    device: BuildDevice = typer.Option("auto", "--device",
                               help="torch-aot: the device the package is compiled for (auto: cuda where present)."),
    timing_cache: str = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, read when it exists "
                                     "and written back (default: one per TensorRT version and GPU under $AVF_CACHE)."),
    target_device: str = typer.Option("local", "--target", help=TARGET_HELP),
    remote_python: str = typer.Option("python3", "--remote-python", help=REMOTE_PYTHON_HELP),
    as_json: bool = json_option("deploy-build"),
) -> None:
    """Build model.plan (TensorRT) on the GPU it will run on from the artifact's model.onnx, or model.pt2
    (--backend torch-aot) for this machine from its model.pt; record it in report.json.

    With --target the engine is built on the device, in its copy of the artifact (engines are tied to their GPU
    and TensorRT version), where `avf-bench`/`avf-deploy check --backend tensorrt --target` run it.
    """
    from avf.deploy.build import build_engine_here, build_package_here
    from avf.errors import InputError

    remote = target_of(ctx, target_device, remote_python)
    backend, device = str(getattr(backend, "value", backend)), str(getattr(device, "value", device))
    if backend == "torch-aot":
        if remote is not None or timing_cache:
            raise InputError(None, "--backend torch-aot builds here only (run avf-deploy build on the device), and "
                                   "has no timing cache")
        facts = build_package_here(artifact, device)
        if as_json:
            emit({"backend": backend, **facts})
        console = human(as_json)
        console.print(f"{artifact}/{facts['file']}: {facts['precision']} for {facts['device']} ({facts['device_name']}), "
                      f"torch {facts['torch']}, {facts['bytes']:,} bytes, sha256 {facts['sha256'][:12]}..., compiled in "
                      f"{facts['compile_seconds']:.1f} s", markup=False, soft_wrap=True)
        return
    if device != "auto":
        raise InputError(None, "--device applies to --backend torch-aot only (a TensorRT engine is built for the GPU)")
    if remote is None:
        facts = build_engine_here(artifact, timing_cache)
    else:
        from avf.remote.device import RemoteDevice
        from avf.remote.measure import build_on

        if timing_cache:
            raise InputError(None, "--timing-cache names a file on this machine; with --target the device keeps "
                                   "its own timing cache")
        facts = build_on(RemoteDevice(remote, say=_say), Path(artifact))
        artifact = f"{remote.name}:{facts['measured_on']['remote_path']}"
    if as_json:
        emit({"backend": backend, **facts})
    console = human(as_json)
    console.print(f"{artifact}/model.plan: TensorRT {facts['tensorrt']} on {facts['device']} (compute "
                  f"{facts['compute_capability']}), {facts['bytes']:,} bytes, sha256 {facts['sha256'][:12]}...; "
                  f"timing cache {facts['timing_cache']['file']}", markup=False, soft_wrap=True)


@deploy_app.command("triton")
def triton_command(
    artifact: str = typer.Argument(...),
    out: str = typer.Option(..., "--out", "-o", help="Model repository directory (created, or added to)."),
    max_batch: int = option(write_triton_repository, "max_batch", "--max-batch", min=1),
    cpu: bool = typer.Option(False, "--cpu", help="KIND_CPU instances instead of KIND_GPU."),
    force: bool = option(write_triton_repository, "force", "--force",
                         help="Replace this model's folder in the repository (only that one)."),
    name: str = option(write_triton_repository, "name", "--name", help="The model's name in the repository "
                       "(default: report.json's model name); letters, digits, '_', '.', '-'."),
    as_json: bool = json_option("deploy-triton"),
) -> None:
    """A Triton model repository (config.pbtxt, dynamic batching) for server GPUs."""
    folder = write_triton_repository(artifact, out, max_batch, force, gpu=not cpu, name=name)
    if as_json:
        from avf.cli.json_output import TritonResult
        from avf.compress.report import ENGINE_FILE

        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        emit(TritonResult(name=folder.name, repository=str(out), folder=str(folder),
                          platform="tensorrt_plan" if f"1/{ENGINE_FILE}" in files else "onnxruntime_onnx",
                          max_batch=max_batch, instance_kind="KIND_CPU" if cpu else "KIND_GPU", files=files))
    console = human(as_json)
    console.print(f"Triton model {folder.name} in repository {out} ({folder})", markup=False)


def _check_device(device: str) -> None:
    from avf.errors import InputError

    if device not in ("cpu", "cuda"):
        raise InputError(None, f"--device {device!r}: choose cpu or cuda")


def demo_command(
    ctx: typer.Context,
    out: Path = typer.Option(Path("avf-demo"), "--out", "-o", help="The one folder every file goes into."),
    data: str = typer.Option(None, "--data", help="Real YouTube-8M video-level shards (directory or glob) instead of synthetic data."),
    epochs: int = option(run_demo, "epochs", "--epochs", min=1),
    videos: int = option(run_demo, "videos", "--videos", min=100, help="Synthetic videos (without --data)."),
    bench_seconds: float = option(run_demo, "bench_seconds", "--duration", min=0.1),
    bench_seconds_alias: float = typer.Option(None, "--bench-seconds", min=0.1, hidden=True,
                                              help="Old spelling of --duration."),
    threads: int = option(run_demo, "threads", "--threads", min=1),
    force: bool = option(run_demo, "force", "--force", help="Reuse an existing --out folder."),
    as_json: bool = json_option("demo"),
) -> None:
    """The main job end to end: data, train, avf-compress --int8, avf-bench, avf-deploy manifest.

    --json prints the summary (also written to OUT/summary.json) on stdout.
    """
    from avf.cli.progress import stderr

    from avf.cli.options import old_spelling

    old_spelling(ctx, "bench_seconds_alias", "--bench-seconds", "--duration", "avf-bench's word for it")
    if bench_seconds_alias is not None:
        bench_seconds = bench_seconds_alias
    summary = run_demo(out, data, epochs, videos, bench_seconds=bench_seconds, threads=threads, force=force,
                       say=lambda line: stderr.print(line, markup=False, highlight=False))
    if as_json:
        emit(summary)
    console = human(as_json)
    table = Table(title=f"avf demo: Attend-Fusion FP32 vs INT8 ({summary['eval_videos']:,} held-out videos)")
    table.add_column("measure")
    table.add_column("FP32 (PyTorch)", justify="right")
    table.add_column("INT8 (ONNX Runtime)", justify="right")
    table.add_row("GAP", f"{summary['gap_fp32']:.4f}", f"{summary['gap_int8']:.4f}")
    table.add_row("F1", f"{summary['f1_fp32']:.4f}", f"{summary['f1_int8']:.4f}")
    table.add_row("GAP retention", "1", f"{summary['gap_retention']:.2%}")
    table.add_row("size (MB)", f"{summary['size_fp32_mb']:.1f}", f"{summary['size_int8_mb']:.1f}")
    table.add_row("latency p50, batch 1 (ms)", f"{summary['latency_fp32_p50_ms']:.3f}", f"{summary['latency_int8_p50_ms']:.3f}")
    table.add_row("speed-up", "1.0x", f"{summary['speedup']:.1f}x")
    table.add_row(f"deployable on {summary['profile']}", "", "yes" if summary["deployable"] else "no")
    console.print(table)
    for reason in summary["reasons"]:
        console.print(f"  - {reason}", markup=False)
    files = ", ".join(dict.fromkeys(name for name in [*summary["files"], "summary.json"] if name != "data/"))
    console.print(f"every file is in {summary['folder']}/ ({files})", markup=False)
