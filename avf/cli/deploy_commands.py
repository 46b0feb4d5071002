"""``avf profiles`` (device profiles)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

stdout = Console()


def profiles_command(
    profile: str = typer.Argument(None, help="Show one profile (a shipped name or a YAML file) in full."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the shipped device profiles, or validate and show one (yours included)."""
    from avf.deploy.profiles import all_profiles, load_profile

    profiles = [load_profile(profile)] if profile else all_profiles()
    if as_json or profile:
        data = [p.model_dump() for p in profiles]
        typer.echo(json.dumps(data[0] if profile else data, indent=2))
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
    target: str = typer.Argument(..., help="An avf-compress artifact directory or a checkpoint (.pt)."),
    backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime (artifacts), pytorch or torch-compile (checkpoints)."),
    batch: str = typer.Option("1,8,64", "--batch", help="Batch sizes for the offline scenario."),
    scenario: str = typer.Option("single-stream,offline", "--scenario", help="single-stream and/or offline."),
    duration: float = typer.Option(3.0, "--duration", min=0.0, help="Timed seconds per measurement."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: all cores)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: str = typer.Option("bench.json", "--out", "-o", help="Results JSON (a PNG plot is written beside it)."),
) -> None:
    """Latency (p50/p90/p99), throughput, memory and energy of a model, with the conditions."""
    from pathlib import Path

    from avf.cli.progress import stderr
    from avf.deploy.bench import benchmark, write_bench
    from avf.errors import InputError

    try:
        batches = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError:
        raise InputError(batch, "--batch must be comma-separated integers, e.g. 1,8,64") from None
    result = benchmark(target, backend, batches, [s.strip() for s in scenario.split(",") if s.strip()], duration,
                       threads, device, say=lambda line: stderr.print(line, markup=False, highlight=False))
    write_bench(result, Path(out))
    table = Table(title=f"{target} ({result['target_facts']['backend']}, {result['target_facts']['precision']})")
    for column in ("scenario", "batch", "p50 ms", "p99 ms", "samples/s", "energy"):
        table.add_column(column, justify="left" if column in ("scenario", "energy") else "right")
    single = result["scenarios"].get("single-stream")
    if single:
        energy = single["energy"]
        table.add_row("single-stream", "1", f"{single['p50_ms']:.3f}", f"{single['p99_ms']:.3f}",
                      f"{1e3 / single['mean_ms']:.0f}",
                      f"{energy['millijoules_per_inference']:.3f} mJ/inf" if energy["measured"] else "not measured")
    for row in result["scenarios"].get("offline", []):
        energy = row["energy"]
        table.add_row("offline", str(row["batch"]), f"{row['batch_latency']['p50_ms']:.3f}",
                      f"{row['batch_latency']['p99_ms']:.3f}", f"{row['samples_per_s']:,.0f}",
                      f"{energy['millijoules_per_inference']:.3f} mJ/inf" if energy["measured"] else "not measured")
    stdout.print(table)
    reasons = {row["energy"].get("reason") for row in [single or {"energy": {}}, *result["scenarios"].get("offline", [])]}
    for reason in sorted(r for r in reasons if r):
        stdout.print(f"energy: {reason}", markup=False)
    memory = result["memory"]
    stdout.print(f"memory: model {memory['model_rss_mib']:.0f} MiB resident, process peak {memory['peak_rss_mib']:.0f} MiB; "
                 f"results in {out}", markup=False)
