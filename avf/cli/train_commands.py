"""``avf train`` and ``avf eval``.

Every option of ``avf train`` is a field of :class:`avf.train.loop.TrainSettings`, which holds its default,
its limits and its choices: the option takes them from there (:func:`avf.cli.options.option`), and a value
the settings refuse is reported naming the option. ``--recipe NAME`` (``avf/recipes/NAME.yaml``) and
``--config FILE.yaml`` are settings documents of the same fields; a flag typed on the command line beats
``--config``, which beats the recipe, which beats the field's default (:func:`avf.cli.options.resolve_settings`).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer
from rich.console import Console

from avf.cli.json_output import emit, json_option
from avf.cli.options import choices, config_option, option
from avf.recipes import DEFAULT_RECIPE
from avf.train.loop import TrainSettings

stdout = Console()

Schedule = choices(TrainSettings, "schedule")
Device = choices(TrainSettings, "device")
Precision = choices(TrainSettings, "precision")

#: Options named otherwise than their TrainSettings field.
_FIELD_OF_OPTION = {"classes": "num_classes", "batch_alias": "batch_size"}

_option = partial(option, TrainSettings)


def train_command(
    ctx: typer.Context,
    model: str = _option("model", "--model", "-m", default=None,
                         help="Registry name, e.g. attend_fusion (see `avf models`). Required (or `model:` in "
                         "--config)."),
    train: str = _option("train", "--train", default=None, help="Training data: feature store, TFRecord directory or "
                         "quoted glob. Required (or `train:` in --config)."),
    val: str = _option("val", "--val", help="Validation data (same forms); scored every epoch."),
    out: Path = _option("out", "--out", "-o", default=None,
                        help="Run directory: checkpoints and metrics logs. Required (or `out:` in --config)."),
    recipe: str = typer.Option(DEFAULT_RECIPE, "--recipe", help="Shipped settings: paper (the paper's: lr 1e-4 "
                               "constant, 20 epochs), yt8m-best (best measured on real YouTube-8M: lr 1e-3 cosine, "
                               "--batch-norm, --identity-attention, 10 epochs), yt8m-deep (yt8m-best at lr 3e-4 with "
                               "1 warm-up epoch, for the deep residual/attention stacks) or yt8m-student (20 epochs, "
                               "dropout 0.5, distillation weight 0.7: give the teachers with --distill-from); "
                               "--config and typed flags go on top."),
    config: Path = config_option("training settings (TrainSettings fields)"),
    epochs: int = _option("epochs", "--epochs", default=None, help=f"Total epochs (default "
                          f"{TrainSettings.model_fields['epochs'].default}, or the recipe's; on --resume: the run's "
                          "own)."),
    batch_size: int = _option("batch_size", "--batch-size", help="Per process (torchrun multiplies it)."),
    batch_alias: int = typer.Option(None, "--batch", min=1, hidden=True, help="Old spelling of --batch-size."),
    lr: float = _option("lr", "--lr", help="Must be > 0."),
    weight_decay: float = _option("weight_decay", "--weight-decay"),
    schedule: Schedule = _option("schedule", "--schedule", help="constant or cosine."),
    warmup_epochs: float = _option("warmup_epochs", "--warmup-epochs", help="Linear lr warm-up before the schedule."),
    seed: int = _option("seed", "--seed"),
    classes: int = _option("num_classes", "--classes", help="Class count (default: from the data's vocabulary)."),
    width: int = _option("width", "--width", help="FC width (default 8192 baselines, 2048 proposed models)."),
    attention_width: int = _option("attention_width", "--attention-width", help="Must be divisible by --heads."),
    dropout: float = _option("dropout", "--dropout", help="In [0, 1)."),
    heads: int = _option("heads", "--heads"),
    device: Device = _option("device", "--device", help="auto, cpu or cuda."),
    precision: Precision = _option("precision", "--precision",
                                   help="auto (bf16 on GPUs that have it), fp32, bf16, fp16."),
    threads: int = _option("threads", "--threads", help="CPU threads (default: the cores this process may use)."),
    prior_init: bool = _option("prior_init", "--prior-init/--no-prior-init",
                               help="Start the classifier bias at the training label priors (log-odds)."),
    identity_attention: bool = _option("identity_attention", "--identity-attention/--no-identity-attention",
                                       help="Start attention value/output projections at the identity."),
    batch_norm: bool = _option("batch_norm", "--batch-norm/--no-batch-norm",
                               help="BatchNorm after every Linear of the FC stacks."),
    clip_grad_norm: float = _option("clip_grad_norm", "--clip-grad-norm", help="Clip the gradients' global L2 "
                                    "norm to this before each step (0: off)."),
    ema: float = _option("ema", "--ema", help="Exponential moving average of the weights, decay per step, e.g. "
                         "0.999 (0: off); best.pt holds the averaged weights."),
    early_stop: int = _option("early_stop", "--early-stop", help="Stop after this many epochs without a better "
                              "validation GAP (0: off)."),
    label_smoothing: float = _option("label_smoothing", "--label-smoothing",
                                     help="Targets (1-e)*labels + e*class prior (0: off)."),
    mixup: float = _option("mixup", "--mixup", help="Mixup Beta(a, a) of inputs and targets (0: off)."),
    distill_from: list[str] = _option("distill_from", "--distill-from", help="Teacher checkpoint (repeatable: an "
                                      "ensemble's mean); its probabilities become soft targets."),
    distill_weight: float = _option("distill_weight", "--distill-weight",
                                    help="Weight of the soft targets (the labels get 1 - w)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    force: bool = typer.Option(False, "--force", help="Start over in an --out that holds a run avf wrote (only the "
                               "run's own files are rewritten; any other folder is refused)."),
    as_json: bool = json_option("train"),  # the best epoch and its metrics, the last, the resolved settings
) -> None:
    """Train a registry model (AdamW, BCE); checkpoints best.pt/last.pt, logs metrics.csv/json."""
    from avf.cli.json_output import human
    from avf.cli.options import given, old_spelling, resolve_settings
    from avf.cli.progress import note, stderr
    from avf.errors import InputError
    from avf.recipes import recipe_path
    from avf.train.loop import train as run_training

    if resume and force:
        raise InputError(None, "--resume continues the run in --out and --force starts it over: choose one")
    old_spelling(ctx, "batch_alias", "--batch", "--batch-size",
                 "--batch names inference batch sizes in avf-bench and avf tune")
    resolved = resolve_settings(ctx, TrainSettings, _FIELD_OF_OPTION, config=config, recipe=recipe_path(recipe),
                                recipe_name=recipe, recipe_given=given(ctx, "recipe"), what="training settings file")
    settings = resolved.settings
    # what the user asked for (typed, in --config, in a --recipe named): what a --resume compares with the run's own
    asked = resolved.explicit
    if "distill_weight" in asked and not settings.distill_from and not resume:
        note("--distill-weight does nothing without --distill-from")
    # the run's header, per-epoch and early-stop lines are progress, not data: stderr (and the --log-file); -q hides them
    result = run_training(settings, resume=resume, force=force, console=stderr,
                          resume_epochs=settings.epochs if "epochs" in asked else None, given=asked)
    if result["history"]:
        human(as_json).print(f"checkpoints in {settings.out}/ (best.pt, last.pt), metrics in {settings.out}/metrics.csv",
                             soft_wrap=True, markup=False)
    if as_json:
        emit(json.loads(json.dumps(_summary(result), default=str)))


def _summary(result: dict) -> dict:
    """What ``avf train --json`` prints: the best epoch (by validation GAP, else training loss, as best.pt is chosen)
    and its metrics, the last epoch's, the resolved settings and the run's facts."""
    from avf.train.loop import BEST, LAST, _score

    history, settings = result["history"], result["settings"]
    best = max(history, key=_score) if history else None
    last = history[-1] if history else None
    out = Path(settings["out"])
    return {"out": str(out), "checkpoints": {"best": str(out / BEST), "last": str(out / LAST)},
            "best_epoch": best["epoch"] if best else None, "best": best, "last": last, "epochs_done": len(history),
            "stopped_early": last["epoch"] if last and last["epoch"] < settings["epochs"] else None,
            "settings": settings, "run": result["run"]}


def eval_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by avf train."),
    data: str = typer.Option(..., "--data", help="Feature store, TFRecord directory or quoted glob."),
    batch_size: int = _option("eval_batch_size", "--batch-size", min=1),
    as_json: bool = json_option("eval"),
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
        emit({"checkpoint": str(checkpoint), "data": data, "model": payload["model"]["name"],
              "epoch": payload.get("epoch"), "metrics": metrics})
        return
    stdout.print(f"{payload['model']['name']} (epoch {payload.get('epoch')}) on {dataset.description}:", soft_wrap=True, markup=False)
    stdout.print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "num_videos"), soft_wrap=True)
