"""``avf train`` and ``avf eval``."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

stdout = Console()


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def train_command(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="Registry name, e.g. attend_fusion (see `avf models`)."),
    train: str = typer.Option(..., "--train", help="Training data: feature store, TFRecord directory or quoted glob."),
    val: str = typer.Option(None, "--val", help="Validation data (same forms); scored every epoch."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints and metrics logs."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Total epochs (default 20; on --resume: the run's own)."),
    batch_size: int = typer.Option(256, "--batch-size", "--batch", min=1, help="Per process (torchrun multiplies it)."),
    lr: float = typer.Option(1e-4, "--lr", help="Must be > 0."),
    weight_decay: float = typer.Option(0.01, "--weight-decay", min=0.0),
    schedule: Schedule = typer.Option(Schedule.constant, "--schedule", help="constant or cosine."),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs", min=0.0, help="Linear lr warm-up before the schedule."),
    seed: int = typer.Option(0, "--seed", min=0),
    classes: int = typer.Option(None, "--classes", min=1, help="Class count (default: from the data's vocabulary)."),
    width: int = typer.Option(None, "--width", min=1, help="FC width (default 8192 baselines, 2048 proposed models)."),
    attention_width: int = typer.Option(None, "--attention-width", min=1, help="Must be divisible by --heads."),
    dropout: float = typer.Option(0.4, "--dropout", help="In [0, 1)."),
    heads: int = typer.Option(8, "--heads", min=1),
    device: Device = typer.Option(Device.auto, "--device", help="auto, cpu or cuda."),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto (bf16 on GPUs that have it), fp32, bf16, fp16."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: the cores this process may use)."),
    prior_init: bool = typer.Option(True, "--prior-init/--no-prior-init",
                            help="Start the classifier bias at the training label priors (log-odds)."),
    identity_attention: bool = typer.Option(False, "--identity-attention",
                                    help="Start attention value/output projections at the identity."),
    batch_norm: bool = typer.Option(False, "--batch-norm", help="BatchNorm after every Linear of the FC stacks."),
    ema: float = typer.Option(0.0, "--ema", min=0.0, help="Exponential moving average of the weights, decay per "
                              "step, e.g. 0.999 (0: off); best.pt holds the averaged weights."),
    early_stop: int = typer.Option(0, "--early-stop", min=0, help="Stop after this many epochs without a better "
                           "validation GAP (0: off)."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", min=0.0,
                                  help="Targets (1-e)*labels + e*class prior (0: off)."),
    mixup: float = typer.Option(0.0, "--mixup", min=0.0, help="Mixup Beta(a, a) of inputs and targets (0: off)."),
    distill_from: list[str] = typer.Option(None, "--distill-from", help="Teacher checkpoint (repeatable: an "
                                   "ensemble's mean); its probabilities become soft targets."),
    distill_weight: float = typer.Option(0.5, "--distill-weight", min=0.0, max=1.0,
                                 help="Weight of the soft targets (the labels get 1 - w)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    force: bool = typer.Option(False, "--force", help="Start over in an --out that holds a run avf wrote (only the "
                               "run's own files are rewritten; any other folder is refused)."),
) -> None:
    """Train a registry model (AdamW, BCE); checkpoints best.pt/last.pt, logs metrics.csv/json."""
    from avf.cli.options import given as _given
    from avf.cli.options import validated
    from avf.cli.progress import note
    from avf.errors import InputError
    from avf.train.loop import TrainSettings
    from avf.train.loop import train as run_training

    if resume and force:
        raise InputError(None, "--resume continues the run in --out and --force starts it over: choose one")
    settings = validated(TrainSettings, {"num_classes": "--classes"},
                         model=model, train=train, val=val, out=str(out), epochs=epochs or 20, batch_size=batch_size,
                         lr=lr, weight_decay=weight_decay, schedule=schedule.value, warmup_epochs=warmup_epochs,
                         seed=seed, num_classes=classes, width=width, attention_width=attention_width,
                         dropout=dropout, heads=heads, device=device.value, precision=precision.value,
                         threads=threads, prior_init=prior_init, identity_attention=identity_attention,
                         batch_norm=batch_norm, ema=ema, early_stop=early_stop, label_smoothing=label_smoothing,
                         mixup=mixup, distill_from=list(distill_from or []), distill_weight=distill_weight)
    given = {_SETTING_OF_OPTION[name] for name in ctx.params if name in _SETTING_OF_OPTION and _given(ctx, name)}
    if "distill_weight" in given and not distill_from and not resume:
        note("--distill-weight does nothing without --distill-from")
    result = run_training(settings, resume=resume, force=force, console=stdout, resume_epochs=epochs, given=given)
    if result["history"]:
        stdout.print(f"checkpoints in {out}/ (best.pt, last.pt), metrics in {out}/metrics.csv", soft_wrap=True,
                     markup=False)


#: Options that define a run (a different value on --resume is refused), by their TrainSettings name.
_SETTING_OF_OPTION = {"model": "model", "train": "train", "val": "val", "batch_size": "batch_size", "lr": "lr",
                      "weight_decay": "weight_decay", "schedule": "schedule", "warmup_epochs": "warmup_epochs",
                      "seed": "seed", "classes": "num_classes", "width": "width", "attention_width": "attention_width",
                      "dropout": "dropout", "heads": "heads", "precision": "precision", "prior_init": "prior_init",
                      "identity_attention": "identity_attention", "batch_norm": "batch_norm", "ema": "ema",
                      "early_stop": "early_stop", "label_smoothing": "label_smoothing", "mixup": "mixup",
                      "distill_from": "distill_from", "distill_weight": "distill_weight"}



def eval_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by avf train."),
    data: str = typer.Option(..., "--data", help="Feature store, TFRecord directory or quoted glob."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Score a checkpoint on data: GAP, mAP, Hit@1, PERR, F1 (official YouTube-8M definitions)."""
    from avf.data.vocabulary import check_same_vocabulary
    from avf.errors import InputError
    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint
    from avf.train.data import load_training_data
    from avf.train.evaluate import evaluate_model

    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, checkpoint)
    try:
        dataset = load_training_data(data, payload["num_classes"])
    except InputError as exc:
        if "classes" not in exc.problem:
            raise
        raise InputError(exc.path, f"{exc.problem} (the checkpoint {checkpoint} has {payload['num_classes']} classes)",
                         exc.offset) from None
    check_same_vocabulary(payload.get("vocabulary_sha256"), checkpoint, dataset.vocabulary_sha256, data)
    metrics = evaluate_model(model, dataset, batch_size)
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "data": data, "model": payload["model"]["name"],
                               "epoch": payload.get("epoch"), "metrics": metrics}, indent=2))
        return
    stdout.print(f"{payload['model']['name']} (epoch {payload.get('epoch')}) on {dataset.description}:", soft_wrap=True, markup=False)
    stdout.print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "num_videos"), soft_wrap=True)
