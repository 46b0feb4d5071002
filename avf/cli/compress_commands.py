"""``avf compress`` (also ``avf-compress``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from avf.cli.progress import count_progress, note, stderr
from avf.errors import ExitCode

stdout = Console()


def compress_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `avf train` (best.pt, or a copy)."),
    out: Path = typer.Option(None, "--out", "-o", help="Artifact directory (default: CHECKPOINT-STEM.PRECISION beside it)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing artifact directory."),
    fold: bool = typer.Option(True, "--fold/--no-fold", help="Lossless folding (dropout, single-token attention, linear maps)."),
    prune: float = typer.Option(None, "--prune", help="Fraction of hidden channels to remove, e.g. 0.5."),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs", min=0, help="Distillation epochs after pruning."),
    train: str = typer.Option(None, "--train", help="Fine-tune data (default: the checkpoint's training data)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision weights and arithmetic."),
    int8: bool = typer.Option(False, "--int8", help="Static INT8 (QDQ: per-channel symmetric weights, symmetric activations)."),
    int8_dynamic: bool = typer.Option(False, "--int8-dynamic", help="Weights-only INT8 for CPUs."),
    int4: bool = typer.Option(False, "--int4", help="4-bit weight-only matrices (ONNX Runtime MatMulNBits) for CPUs."),
    calib: str = typer.Option(None, "--calib", help="INT8 calibration data (default: the checkpoint's training data)."),
    calib_method: str = typer.Option("percentile", "--calib-method", help="entropy, percentile (99.999) or minmax."),
    calib_size: int = typer.Option(1024, "--calib-size", min=1, help="Calibration videos (a seeded random sample)."),
    eval_data: str = typer.Option(None, "--eval", help="Held-out data for the retention gate (default: the checkpoint's validation data)."),
    eval_size: int = typer.Option(None, "--eval-size", min=1, help="Evaluate on the first N videos only."),
    min_retention: float = typer.Option(0.99, "--min-retention", help="Reject below this fraction of the reference GAP."),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (default), tensorrt (ONNX -> model.plan) or torch-tensorrt (model.ep)."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Fold, prune, quantize and export a trained model; verify its accuracy; exit 3 if rejected."""
    from avf.cli.options import validated
    from avf.compress.pipeline import CompressionRejected, CompressOptions, compress
    from avf.errors import InputError

    chosen = [name for name, flag in (("fp16", fp16), ("int8", int8), ("int8-dynamic", int8_dynamic), ("int4", int4)) if flag]
    if len(chosen) > 1:
        raise InputError(None, f"choose one precision, not {' and '.join('--' + c for c in chosen)}")
    for option, given, needs, applies in (
            ("--calib", calib is not None, "--int8", int8), ("--calib-method", calib_method != "percentile", "--int8", int8),
            ("--calib-size", calib_size != 1024, "--int8", int8), ("--finetune-epochs", finetune_epochs != 1, "--prune", prune),
            ("--train", train is not None, "--prune", prune and finetune_epochs)):
        if given and not applies:
            note(f"{option} does nothing without {needs}")
    options = validated(
        CompressOptions, None, checkpoint=checkpoint, out=out, force=force, fold=fold, prune=prune,
        finetune_epochs=finetune_epochs, train=train, precision=chosen[0] if chosen else "fp32", calib=calib,
        calib_method=calib_method, calib_size=calib_size, eval=eval_data, eval_size=eval_size,
        min_retention=min_retention, backend=backend, seed=seed)
    say = lambda line: stderr.print(line, highlight=False, soft_wrap=True, markup=False)  # noqa: E731
    try:
        report = compress(options, say=say, progress=count_progress)
    except CompressionRejected as rejected:
        stderr.print(Text("rejected:", style="bold red") + Text(f" {rejected.reason}; the artifact is kept in "
                     f"{rejected.artifact} and marked rejected in its report.json"), soft_wrap=True, highlight=False)
        raise typer.Exit(ExitCode.BELOW_BAR) from None
    print_summary(report, options.artifact_dir())


def print_summary(report: dict, artifact: Path) -> None:
    table = Table(title=escape(f"{report['model']['name']} -> {artifact}"), show_lines=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{report['parameters']:,}")
    table.add_row("model.onnx", f"{report['files']['model.onnx']['bytes'] / 1e6:.1f} MB")
    retention = report["retention"]
    if retention:
        ref, new = retention["reference"], retention["compressed"]
        for key in ("gap", "map", "f1", "hit_at_one"):
            ratio = retention["ratios"].get(key)
            kept = f"{ratio:.2%}" if ratio is not None else "ratio n/a: reference is 0"
            table.add_row(key.upper() if key != "hit_at_one" else "Hit@1", f"{ref[key]:.4f} -> {new[key]:.4f} ({kept})")
        agreement = next(k for k in retention if k.endswith("_agreement"))
        table.add_row(agreement.replace("_", " "), f"{retention[agreement]:.2%}")
        table.add_row("max probability difference", f"{retention['max_probability_difference']:.2e}")
    table.add_row("tensorrt", escape(report["tensorrt"].get("file") or report["tensorrt"]["reason"]))
    table.add_row("verdict", escape(("accepted: " if report["accepted"] else "rejected: ") + report["reason"]))
    stdout.print(table)
