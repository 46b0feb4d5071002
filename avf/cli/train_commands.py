"""``avf train`` and ``avf eval``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

stdout = Console()


def train_command(
    model: str = typer.Option(..., "--model", "-m", help="Registry name, e.g. attend_fusion (see `avf models`)."),
    train: str = typer.Option(..., "--train", help="Training data: feature store, TFRecord directory or quoted glob."),
    val: str = typer.Option(None, "--val", help="Validation data (same forms); scored every epoch."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints and metrics logs."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Total epochs (default 20; on --resume: the run's own)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Per process (torchrun multiplies it)."),
    lr: float = typer.Option(1e-4, "--lr"),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    schedule: str = typer.Option("constant", "--schedule", help="constant or cosine."),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs", help="Linear lr warm-up before the schedule."),
    seed: int = typer.Option(0, "--seed"),
    classes: int = typer.Option(None, "--classes", help="Class count (default: from the data's vocabulary)."),
    width: int = typer.Option(None, "--width", help="FC width (default 8192 baselines, 2048 proposed models)."),
    attention_width: int = typer.Option(None, "--attention-width"),
    dropout: float = typer.Option(0.4, "--dropout"),
    heads: int = typer.Option(8, "--heads"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on GPUs that have it), fp32, bf16, fp16."),
    prior_init: bool = typer.Option(True, "--prior-init/--no-prior-init",
                                    help="Start the classifier bias at the training label priors (log-odds)."),
    identity_attention: bool = typer.Option(False, "--identity-attention",
                                            help="Start attention value/output projections at the identity."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    force: bool = typer.Option(False, "--force", help="Start over in an --out that already holds a run."),
) -> None:
    """Train a registry model (AdamW, BCE); checkpoints best.pt/last.pt, logs metrics.csv/json."""
    from pydantic import ValidationError

    from avf.errors import InputError
    from avf.train.loop import TrainSettings
    from avf.train.loop import train as run_training

    try:
        settings = TrainSettings(model=model, train=train, val=val, out=str(out), epochs=epochs or 20, batch_size=batch_size,
                                 lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs, seed=seed, num_classes=classes,
                                 width=width, attention_width=attention_width, dropout=dropout, heads=heads,
                                 device=device, precision=precision, prior_init=prior_init,
                                 identity_attention=identity_attention)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(None, f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']}") from None
    result = run_training(settings, resume=resume, force=force, console=stdout, resume_epochs=epochs)
    if result["history"]:
        stdout.print(f"checkpoints in {out}/ (best.pt, last.pt), metrics in {out}/metrics.csv", soft_wrap=True)


def eval_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by avf train."),
    data: str = typer.Option(..., "--data", help="Feature store, TFRecord directory or quoted glob."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Score a checkpoint on data: GAP, mAP, Hit@1, PERR, F1 (official YouTube-8M definitions)."""
    from avf.errors import InputError
    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint
    from avf.train.data import load_training_data
    from avf.train.evaluate import evaluate_model

    payload = load_checkpoint(checkpoint)
    dataset = load_training_data(data)
    if dataset.num_classes != payload["num_classes"]:
        raise InputError(checkpoint, f"model has {payload['num_classes']} classes, data {data} has {dataset.num_classes}")
    model = model_from_checkpoint(payload, checkpoint)
    metrics = evaluate_model(model, dataset, batch_size)
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "data": data, "model": payload["model"]["name"],
                               "epoch": payload.get("epoch"), "metrics": metrics}, indent=2))
        return
    stdout.print(f"{payload['model']['name']} (epoch {payload.get('epoch')}) on {dataset.description}:", soft_wrap=True)
    stdout.print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "num_videos"), soft_wrap=True)
