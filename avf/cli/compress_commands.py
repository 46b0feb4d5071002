"""``avf compress`` (also ``avf-compress``).

Every option's default and limits are CompressOptions' own (:func:`avf.cli.options.option`); the precision
flags (``--fp16``, ``--int8``, ...) come from the precision registry (:mod:`avf.compress.precisions`).
"""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from avf.cli.json_output import human, json_option
from avf.cli.options import config_option, given, option
from avf.cli.progress import count_progress, note, stderr
from avf.compress.options import CompressOptions
from avf.compress.precisions import PRECISIONS, precision_named
from avf.compress.report import ArtifactReport
from avf.errors import ExitCode

stdout = Console()

_option = partial(option, CompressOptions)
#: The precisions a flag selects, by the name of the flag's parameter (--int8-dynamic: int8_dynamic).
_FLAGGED = {p.flag.removeprefix("--").replace("-", "_"): p for p in PRECISIONS.values() if p.flag}


def _with_precision_flags(after: str):
    """Give the command one flag per flagged precision of the registry, placed after its option ``after``; the
    command receives them in ``**precision_flags``. Typer reads a command's options from its signature, so the
    flags are added there."""

    def add(command):
        signature = inspect.signature(command, eval_str=True)
        flags = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                   default=typer.Option(False, p.flag, help=p.help)) for name, p in _FLAGGED.items()]
        params = []
        for param in signature.parameters.values():
            if param.kind is not param.VAR_KEYWORD:
                params.append(param.replace(kind=param.KEYWORD_ONLY))  # keyword-only: any order is a valid signature
            if param.name == after:
                params += flags
        command.__signature__ = signature.replace(parameters=params)
        return command

    return add


@_with_precision_flags(after="train")
def compress_command(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `avf train` (best.pt, or a copy)."),
    out: Path = _option("out", "--out", "-o", help="Artifact directory (default: CHECKPOINT-STEM.PRECISION beside it)."),
    force: bool = _option("force", "--force", help="Replace an existing artifact directory."),
    fold: bool = _option("fold", "--fold/--no-fold", help="Lossless folding (dropout, single-token attention, linear maps)."),
    prune: float = _option("prune", "--prune", help="Fraction of hidden channels to remove, e.g. 0.5."),
    finetune_epochs: int = _option("finetune_epochs", "--finetune-epochs", min=0, help="Distillation epochs after pruning."),
    train: str = _option("train", "--train", help="Fine-tune data (default: the checkpoint's training data)."),
    calib: str = _option("calib", "--calib", help="INT8 calibration data (default: the checkpoint's training data)."),
    calib_method: str = _option("calib_method", "--calib-method", help="entropy, percentile (99.999) or minmax."),
    calib_size: int = _option("calib_size", "--calib-size", min=1, help="Calibration videos (a seeded random sample)."),
    int4_block: int = _option("int4_block", "--int4-block"),
    int4_accuracy_level: int = _option("int4_accuracy_level", "--int4-accuracy-level"),
    eval_data: str = _option("eval", "--eval", help="Held-out data for the retention gate (default: the checkpoint's validation data)."),
    eval_size: int = _option("eval_size", "--eval-size", min=1, help="Evaluate on the first N videos only."),
    min_retention: float = _option("min_retention", "--min-retention", help="Reject below this fraction of the reference GAP."),
    retention_confidence: float = _option("retention_confidence", "--retention-confidence",
                                          help="0: gate on the measured GAP ratio; e.g. 0.95: gate on its one-sided "
                                          "95% lower bound (paired bootstrap over the evaluation videos)."),
    backend: str = _option("backend", "--backend", help="onnxruntime (default), tensorrt (ONNX -> model.plan), "
                           "torch-tensorrt (model.ep) or torch-aot (torch.export + AOTInductor -> model.pt2)."),
    device: str = _option("device", "--device", help="torch-aot: the device model.pt2 is compiled for and gated on "
                          "(auto: cuda where PyTorch sees a GPU, else cpu)."),
    seed: int = _option("seed", "--seed", min=0),
    precision: str = _option("precision", "--precision", help="fp32, fp16, bf16, int8, int8-dynamic or int4: the "
                             "same as the flags below (avf-bench's spelling)."),
    config: Path = config_option("compress settings (CompressOptions fields: precision, prune, calib_method, ...)"),
    as_json: bool = json_option("compress"),  # report.json, also when rejected (exit 3)
    **precision_flags: bool,
) -> None:
    """Fold, prune, quantize and export a trained model; verify its accuracy; exit 3 if rejected."""
    from avf.cli.options import resolve_settings
    from avf.compress.pipeline import CompressionRejected, compress
    from avf.errors import InputError

    from avf.cli.options import given

    chosen = [p.name for name, p in _FLAGGED.items() if precision_flags[name]]
    if len(chosen) > 1:
        raise InputError(None, f"choose one precision, not {' and '.join(PRECISIONS[c].flag for c in chosen)}")
    if chosen and given(ctx, "precision") and precision != chosen[0]:
        raise InputError(None, f"--precision {precision} and {PRECISIONS[chosen[0]].flag} disagree: choose one")
    # flag typed > --config > CompressOptions' default; a precision flag counts as a typed precision
    options = resolve_settings(ctx, CompressOptions, {"eval_data": "eval"}, config=config,
                               typed_values={"precision": chosen[0]} if chosen else None,
                               what="compress settings file").settings
    calibrates = precision_named(options.precision).calibrates
    calibrating_flags = " or ".join(p.flag for p in PRECISIONS.values() if p.calibrates)
    for flag, name, needs, applies in (
            ("--calib", "calib", calibrating_flags, calibrates),
            ("--calib-method", "calib_method", calibrating_flags, calibrates),
            ("--calib-size", "calib_size", calibrating_flags, calibrates),
            ("--finetune-epochs", "finetune_epochs", "--prune", options.prune),
            ("--train", "train", "--prune", options.prune and options.finetune_epochs)):
        if given(ctx, name) and not applies:
            note(f"{flag} does nothing without {needs}")
    say = lambda line: stderr.print(line, highlight=False, soft_wrap=True, markup=False)  # noqa: E731
    try:
        report = compress(options, say=say, progress=count_progress)
    except CompressionRejected as rejected:
        stderr.print(Text("rejected:", style="bold red") + Text(f" {rejected.reason}; the artifact is kept in "
                     f"{rejected.artifact} and marked rejected in its report.json"), soft_wrap=True, highlight=False)
        if as_json:
            typer.echo(rejected.report.to_json(), nl=False)  # exactly the rejected artifact's report.json
        raise typer.Exit(ExitCode.BELOW_BAR) from None
    print_summary(report, options.artifact_dir(), console=human(as_json))
    if as_json:
        typer.echo(ArtifactReport.model_validate(report).to_json(), nl=False)  # exactly report.json


def print_summary(report: ArtifactReport, artifact: Path, console: Console | None = None) -> None:
    """The artifact's measures and verdict as a table (on stdout, or ``console``)."""
    report = ArtifactReport.model_validate(report)  # a report.json read back as a dict prints the same
    table = Table(title=escape(f"{report.model.name} -> {artifact}"), show_lines=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{report.parameters:,}")
    table.add_row("model.onnx", f"{report.model_file.bytes / 1e6:.1f} MB")
    retention = report.retention
    if retention is not None:
        ref, new = retention.reference, retention.compressed
        for key in ("gap", "map", "f1", "hit_at_one"):
            ratio = retention.ratios.get(key)
            kept = f"{ratio:.2%}" if ratio is not None else "ratio n/a: reference is 0"
            table.add_row(key.upper() if key != "hit_at_one" else "Hit@1", f"{ref[key]:.4f} -> {new[key]:.4f} ({kept})")
        bound = retention.gap_bound
        if bound is not None and bound.get("lower") is not None:
            table.add_row(f"GAP retention, {bound['confidence']:.0%} lower bound", f"{bound['lower']:.2%} "
                          f"(bootstrap over {retention.videos:,} videos)")
        if retention.agreement is not None:
            name, share = retention.agreement
            table.add_row(name.replace("_", " "), f"{share:.2%}")
        table.add_row("max probability difference", f"{retention.max_probability_difference:.2e}")
    if report.tensorrt is not None:
        table.add_row("tensorrt", escape(report.tensorrt.file or report.tensorrt.reason or ""))
    table.add_row("verdict", escape(("accepted: " if report.accepted else "rejected: ") + report.reason))
    (console or stdout).print(table)
