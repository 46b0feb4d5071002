"""The training loop: one process, or DistributedDataParallel under torchrun.

Paper defaults: AdamW, lr 1e-4, 20 epochs, binary cross-entropy. Every epoch ends with a
validation pass (GAP, mAP, Hit@1, PERR, F1), a metrics log row, and atomically written
``last.pt`` (with optimizer state, for ``--resume``) and ``best.pt`` (best validation GAP), so
killing the process loses at most the epoch in progress.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avf.atomic import atomic_file, atomic_write_text, check_output, folder_lock, stale_temporaries
from avf.data.vocabulary import check_same_vocabulary, file_sha256
from avf.errors import InputError
from avf.threads import check_fits, default_threads
from avf.train.checkpoint import CHECKPOINT_FORMAT, check_compatible, load_checkpoint, save_checkpoint
from avf.train.data import TrainingData, load_training_data
from avf.train.evaluate import evaluate_model

if TYPE_CHECKING:
    import torch

LAST, BEST = "last.pt", "best.pt"
METRICS_CSV, METRICS_JSON = "metrics.csv", "metrics.json"
#: The files a run writes in its folder (and tensorboard/ where it is installed); nothing else in the folder is
#: touched, --force included.
RUN_FILES = (BEST, LAST, METRICS_CSV, METRICS_JSON)
#: metrics.json's format tag: what tells a run folder of ours (which --force may start over) from any other.
RUN_FORMAT = "avf-run"


class TrainSettings(BaseModel):
    """Everything that defines a run; stored in every checkpoint."""

    model_config = ConfigDict(allow_inf_nan=False)  # an infinite lr or warm-up is refused, not trained with

    model: str
    train: str
    val: str | None = None
    out: str
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    # Linear warm-up from lr/steps to lr over this many epochs, then the schedule (0: none).
    warmup_epochs: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)
    num_classes: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    attention_width: int | None = Field(None, ge=1)
    dropout: float = Field(0.4, ge=0, lt=1)
    heads: int = Field(8, ge=1)
    tokens: Literal["single"] = "single"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_batch_size: int = Field(1024, ge=1)
    # Start the classifier at the training label priors: with thousands of rare classes, BCE
    # otherwise spends its first hundreds of steps learning base rates (measured on the real
    # shards: MLP GAP 0.46 vs 0.03 after 32 steps; Attend-Fusion 0.35 vs 0.05 after 94).
    prior_init: bool = True
    # Attention value/output projections start at the identity (see identity_attention_init_).
    identity_attention: bool = False
    # CPU threads (default: the cores this process may use); not part of what defines the run.
    threads: int | None = Field(None, ge=1)
    # Recipe options (issue 13), all off by default; see docs/results/split45k/README.md for what each is worth.
    # BatchNorm1d after every Linear of the model's FC stacks (a model setting).
    batch_norm: bool = False
    # Clip the gradients' global L2 norm to this before each step (0: off): the usual guard for deep residual and
    # attention stacks whose first steps blow up (Residual Attention Early Fusion at lr 1e-3, docs/results/split45k/).
    clip_grad_norm: float = Field(0.0, ge=0)
    # Exponential moving average of the weights (decay per step, 0: off); scored and saved in best.pt.
    ema: float = Field(0.0, ge=0, lt=1)
    # Stop when validation GAP has not improved for this many epochs (0: off; needs val).
    early_stop: int = Field(0, ge=0)
    # Targets (1 - eps) y + eps * prior(class): smoothing towards the training label frequencies.
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # Mixup (Zhang et al. 2018): mix inputs and targets of shuffled pairs, lambda ~ Beta(a, a) (0: off).
    mixup: float = Field(0.0, ge=0)
    # Distillation: teacher checkpoints whose mean probabilities become soft targets, with this weight
    # (target = (1 - w) * labels + w * soft; BCE is linear in the target, so this is the weighted sum of both losses).
    distill_from: list[str] = []
    distill_weight: float = Field(0.5, ge=0, le=1)
    # Where these settings came from (avf train --recipe / --config): {"recipe": name, "config": {"path", "sha256"},
    # "command_line": [fields typed]}; None when built by a library caller. A record, never part of the run's recipe.
    resolved_from: dict[str, Any] | None = None


#: Settings that may change on --resume: they do not change what is being trained.
RESUMABLE_CHANGES = {"out", "epochs", "device", "threads", "eval_batch_size"}


class TrainingDiverged(InputError):
    """The loss became NaN/inf, or an epoch's mean loss exceeded DIVERGED_LOSS (stopped before a checkpoint of it), or
    the validation GAP collapsed (COLLAPSE_FRACTION; metrics.json records it)."""


#: Mean per-class BCE above which an epoch counts as diverged: predicting 0.5 for every class, whatever the
#: (soft) targets, scores ln 2 = 0.693, so a finite loss above 1 is a model worse than knowing nothing. A run
#: like that (Residual Attention Early Fusion at lr 1e-3 reached 2.6e7) would otherwise finish "successfully".
DIVERGED_LOSS = 1.0


def _score(row: dict) -> float:
    """What best.pt is chosen by: validation GAP, or minus the training loss without validation data."""
    return row.get("val_gap", -row["train_loss"])


@dataclass
class _Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _distributed_from_env() -> _Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Distributed()
    return _Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def lr_factor(schedule: str, total_steps: int, warmup_steps: int = 0):
    """The multiplier of the base lr at each optimizer step: linear warm-up, then constant or cosine
    decay to zero over the remaining steps."""
    decay_steps = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, decay_steps) / decay_steps))
        return 1.0

    return factor


def _device(settings: TrainSettings, dist: _Distributed):
    import torch

    if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError(None, "--device cuda asked for, but no CUDA GPU is visible")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    if dist.world == 1:
        torch.set_num_threads(settings.threads or default_threads())
    return torch.device("cpu")


def _autocast_dtype(settings: TrainSettings, device):
    import torch

    if device.type != "cuda" or settings.precision == "fp32":
        return None
    if settings.precision == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _epoch_indices(size: int, seed: int, epoch: int, dist: _Distributed) -> np.ndarray:
    """The same shuffled order on every rank; each rank takes every world-th item (like
    DistributedSampler), trimmed so all ranks run the same number of steps."""
    order = np.random.default_rng([seed, epoch]).permutation(size)
    order = order[: (size // dist.world) * dist.world]
    return order[dist.rank :: dist.world]


def train(settings: TrainSettings, resume: bool = False, force: bool = False, console=None,
          resume_epochs: int | None = None, given: set[str] | None = None) -> dict:
    """Train per ``settings``; returns the final metrics history. Resumable from ``out/last.pt``.

    On resume the run's saved settings apply; ``resume_epochs`` (when given) changes the total
    number of epochs, to extend or shorten the plan. A setting in ``given`` (what the user typed)
    that differs from the run's own is refused, not silently ignored. A run folder this call
    created is removed again if the run fails (diverges, is interrupted, ...) before its first
    checkpoint: nothing half-made is left behind.

    The run folder goes through the one output-safety path before anything is written (see
    :func:`_open_run`) and is locked for the whole run, so a second run on it is refused.
    """
    from contextlib import ExitStack

    dist = _distributed_from_env()
    out = Path(settings.out)
    with ExitStack() as held:
        locked = dist.main and out.is_dir()
        if locked:  # locked before it is looked at: another run may be writing it right now
            held.enter_context(folder_lock(out, "run folder"))
        settings, state = _open_run(settings, resume, force, given, resume_epochs)
        created = None
        if dist.main and not locked:
            created = _create_folder(out)
            held.enter_context(folder_lock(out, "run folder"))
        try:
            if dist.main:
                for name in RUN_FILES:  # left by a process killed mid-write; never a user's own .*.tmp file
                    for stale in stale_temporaries(out / name):
                        stale.unlink(missing_ok=True)
            return _train(settings, state, console)
        except BaseException:
            if created is not None and not (out / LAST).exists():
                shutil.rmtree(created, ignore_errors=True)
            raise


def _open_run(settings: TrainSettings, resume: bool, force: bool, given: set[str] | None,
              resume_epochs: int | None) -> tuple[TrainSettings, dict | None]:
    """Check the run folder (and load the run to resume) before anything is written; returns the settings
    that apply and the resumed state (None for a new run).

    A new run needs a new or empty folder; a folder holding a run of ours needs ``--resume`` (continue
    it) or ``--force`` (start over, writing only the run's own files); any other folder is refused, as
    are the current folder and a folder holding an input (data, teachers), even with ``--force``.
    """
    from avf.models import MODEL_NAMES

    if settings.model not in MODEL_NAMES:
        raise InputError(None, f"unknown model {settings.model!r}; known models: {', '.join(MODEL_NAMES)}")
    out = Path(settings.out)
    state = None
    if resume:
        if not (out / LAST).is_file():
            raise InputError(out, f"holds no run to resume (no {LAST}); drop --resume to start one")
        state = load_checkpoint(out / LAST)
        saved = TrainSettings(**state["settings"])
        _refuse_conflicts(saved, settings, given or set(), out / LAST)
        # the run continues where it lies now (a run folder may have been moved or copied since it started)
        settings = saved.model_copy(update={"out": settings.out, "epochs": resume_epochs or saved.epochs,
                                            "device": settings.device, "threads": settings.threads})
    empty = out.is_dir() and not any(out.iterdir())
    check_output(out, force=True, directory=True, inputs=[settings.train, settings.val, *settings.distill_from],
                 ours=lambda folder: empty or is_run_folder(folder), what="run folder")
    if out.exists() and not empty and not resume and not force:
        raise InputError(out, "already holds a run (pass --resume to continue it, or --force to start over)")
    for name in RUN_FILES:
        check_output(out / name, force=True, directory=False, what="run file")
    return settings, state


def _create_folder(out: Path) -> Path | None:
    """Make the run folder; returns the topmost folder made (to remove if the run fails before its first
    checkpoint), or None when another process made it first."""
    top = out
    while not top.parent.exists():
        top = top.parent
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        return None
    except OSError as exc:
        raise InputError(out, f"cannot create it: {exc.strerror or exc}") from None
    return top


def is_run_folder(folder: Path) -> bool:
    """A run folder avf train wrote: every checkpoint and metrics.json in it says so (a foreign best.pt
    dropped into it is never overwritten), and at least one of them is there."""
    recognizers = {LAST: _is_checkpoint_file, BEST: _is_checkpoint_file, METRICS_JSON: _is_metrics_log}
    present = [name for name in recognizers if (folder / name).exists() or (folder / name).is_symlink()]
    return bool(present) and all(recognizers[name](folder / name) for name in present)


def _is_checkpoint_file(path: Path) -> bool:
    """An avf checkpoint, told without unpickling anything: torch.save writes a zip whose pickle opens with
    the payload's first entry, our format tag."""
    import zipfile

    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next((name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.pkl"), None)
            if pickled is None:
                return False
            with archive.open(pickled) as fh:
                head = fh.read(256)
    except (OSError, zipfile.BadZipFile):
        return False
    return CHECKPOINT_FORMAT.encode() in head


def _is_metrics_log(path: Path) -> bool:
    """A metrics.json avf train wrote; anything the document reader refuses (not a regular file, not a JSON
    mapping) is simply not one."""
    from avf.documents import read_mapping

    try:
        log = read_mapping(path, "a training metrics log")
    except InputError:
        return False
    # runs written before the format tag have the same settings and history, and no format
    return log.get("format") == RUN_FORMAT or ("format" not in log and {"settings", "history"} <= log.keys())


@dataclass
class _Run:
    """What the stages of one run share (set up by :func:`_setup`, advanced by :func:`_train_epoch`, written by
    :func:`_save`), so that each stage reads, and changes, on its own."""

    settings: TrainSettings
    dist: _Distributed
    out: Path
    device: torch.device
    train_data: TrainingData
    val_data: TrainingData | None
    model: torch.nn.Module  # what the optimizer trains; its weights go in last.pt
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper: what the steps run
    scored: torch.nn.Module  # what is validated and saved in best.pt: the EMA model, or the model
    model_config: dict
    ema: _Ema | None
    teachers: list
    teacher_files: list[dict]
    smoothing_prior: torch.Tensor | None
    has_batch_norm: bool
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast: torch.dtype | None
    loss_fn: torch.nn.Module
    steps_per_epoch: int
    run_info: dict
    history: list[dict] = field(default_factory=list)
    best_gap: float = -1.0
    start_epoch: int = 1
    # TensorBoard's folder is made with the first checkpoint, never before: a run killed before it leaves
    # no folder that is neither empty nor recognisably a run (which even --force would refuse)
    writer: object | None = None


def _train(settings: TrainSettings, state: dict | None, console) -> dict:
    """Set the run up, then for each epoch: train, validate and save (on rank 0), stop early when validation
    GAP stalls."""
    import torch

    run = _setup(settings, state)
    try:
        result = _epochs(run, settings, console)
        if run.dist.world > 1:  # no rank leaves while another still writes or communicates
            torch.distributed.barrier()
        return result
    finally:  # a gloo group left to the interpreter's exit aborts the process now and then ("terminate called ...")
        if run.dist.world > 1 and torch.distributed.is_initialized():
            run.net = None  # the DDP wrapper's reducer holds the group: released first, so the group's threads are joined
            gc.collect()
            torch.distributed.destroy_process_group()


def _epochs(run: _Run, settings: TrainSettings, console) -> dict:
    import torch

    dist = run.dist
    if console is not None and dist.main:
        console.print(f"{settings.model}: {run.run_info['parameters']:,} parameters on {run.device}"
                      f" ({run.run_info['autocast']}, {dist.world} process{'es' if dist.world > 1 else ''}); "
                      f"train: {run.train_data.description}", soft_wrap=True, markup=False)
    for epoch in range(run.start_epoch, settings.epochs + 1):
        row = _train_epoch(run, epoch, console)
        if dist.main:
            _validate(run, row)
            _save(run, row, epoch)
            if console is not None:
                console.print(_epoch_line(row), soft_wrap=True, markup=False)
        # rank 0 holds the validation history: it decides, and every rank follows (a rank left waiting would hang)
        stop = None
        if dist.main:
            stalled = settings.early_stop and _stalled(run.history, settings.early_stop)
            stop = _collapse(run.history) or ("stalled" if stalled else None)
        if dist.world > 1:
            holder = [stop]
            torch.distributed.broadcast_object_list(holder, src=0)
            stop = holder[0]
        if isinstance(stop, dict):
            if dist.main:
                _write_history(run.out, run.history, settings, run.run_info, collapsed=stop)
            raise TrainingDiverged(settings.train, f"training collapsed: validation GAP fell from {stop['best_gap']:.4f} "
                                   f"(epoch {stop['best_epoch']}) to {stop['val_gap']:.4f} at epoch {epoch}, under half "
                                   f"of it; best.pt holds epoch {stop['best_epoch']}, but this run is not a result of "
                                   f"its settings: try a lower --lr or --warmup-epochs (this run: lr {settings.lr:g}, "
                                   f"warm-up {settings.warmup_epochs:g})")
        if stop == "stalled":
            if dist.main:
                _write_history(run.out, run.history, settings, run.run_info, stopped_early=epoch)
            if console is not None and dist.main:
                console.print(f"early stop: validation GAP has not improved for {settings.early_stop} epochs "
                              f"(best {run.best_gap:.4f})", soft_wrap=True, markup=False)
            break
    if run.writer is not None:
        run.writer.close()
    return {"history": run.history, "run": run.run_info, "settings": settings.model_dump()}


def _setup(settings: TrainSettings, state: dict | None) -> _Run:
    """Device, data, model, teachers, optimizer and schedule of a run; resumed where ``state`` (last.pt) left
    off. Every input is checked (and a resumed run's inputs compared with what it started on) before the
    first step."""
    import torch

    from avf.models import count_parameters

    dist = _distributed_from_env()
    out = Path(settings.out)
    if dist.world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if settings.device != "cpu" and torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    device = _device(settings, dist)
    train_data, val_data = _load_data(settings, state, out)
    torch.manual_seed(settings.seed)
    model, model_config = _build_model(settings, state, train_data, out)
    model.to(device)
    teachers, teacher_files = _load_teachers(settings, train_data, device)
    if state is not None:
        _refuse_changed_input("--distill-from", ", ".join(settings.distill_from), state.get("teachers"),
                              teacher_files, out / LAST)
    ema = _Ema(model, settings.ema, state) if settings.ema else None
    smoothing_prior = _label_prior(train_data, device) if settings.label_smoothing else None
    has_batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if settings.early_stop and val_data is None:
        raise InputError(None, "--early-stop watches validation GAP: give --val")
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler, steps_per_epoch = _optimizer(settings, model, len(train_data), dist)
    autocast = _autocast_dtype(settings, device)
    run_info = {
        "parameters": count_parameters(model),
        "device": str(device),
        "world_size": dist.world,
        "threads": torch.get_num_threads(),
        "autocast": str(autocast).replace("torch.", "") if autocast else "fp32",
        "train_data": train_data.description,
        "val_data": val_data.description if val_data else None,
    }
    run = _Run(settings=settings, dist=dist, out=out, device=device, train_data=train_data, val_data=val_data,
               model=model, net=net, scored=ema.model if ema is not None else model, model_config=model_config,
               ema=ema, teachers=teachers, teacher_files=teacher_files, smoothing_prior=smoothing_prior,
               has_batch_norm=has_batch_norm, optimizer=optimizer, scheduler=scheduler,
               scaler=torch.amp.GradScaler("cuda", enabled=autocast == torch.float16), autocast=autocast,
               loss_fn=torch.nn.BCEWithLogitsLoss(), steps_per_epoch=steps_per_epoch, run_info=run_info)
    if state is not None:  # go on exactly where last.pt left off: optimizer, schedule, history, random state
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.history = state["history"]
        run.best_gap = state.get("best_gap", -1.0)
        run.start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
    return run


def _optimizer(settings: TrainSettings, model, size: int, dist: _Distributed):
    """AdamW, its per-step learning-rate schedule over the whole run (warm-up, then constant or cosine), and the
    steps an epoch of ``size`` videos takes on each rank."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(_epoch_indices(size, 0, 0, dist)) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(settings.schedule, total_steps, round(settings.warmup_epochs * steps_per_epoch)))
    return optimizer, scheduler, steps_per_epoch


def _load_data(settings: TrainSettings, state: dict | None, out: Path) -> tuple[TrainingData, TrainingData | None]:
    """The training and validation data, made against one vocabulary; on resume, the very data the run
    started on."""
    train_data = load_training_data(settings.train, settings.num_classes)
    val_data = load_training_data(settings.val, train_data.num_classes) if settings.val else None
    if val_data is not None:
        check_same_vocabulary(train_data.vocabulary_sha256, settings.train, val_data.vocabulary_sha256, settings.val)
    if state is not None:
        recorded = state.get("data") or {}
        _refuse_changed_input("--train", settings.train, recorded.get("train"), train_data.sources, out / LAST)
        _refuse_changed_input("--val", settings.val, recorded.get("val"), val_data.sources if val_data else None,
                              out / LAST)
    return train_data, val_data


def _build_model(settings: TrainSettings, state: dict | None, data: TrainingData, out: Path):
    """The model and its config: refused before it is built when it cannot fit in memory; a new run's
    initialised (label priors, identity attention), a resumed run's weights loaded."""
    from avf.models import build_model, parameter_count
    from avf.models.blocks import identity_attention_init_

    model_kwargs = {k: v for k, v in {"width": settings.width, "attention_width": settings.attention_width}.items()
                    if v is not None}
    model_kwargs.update(num_classes=data.num_classes, dropout=settings.dropout, heads=settings.heads,
                        tokens=settings.tokens, batch_norm=settings.batch_norm)
    try:
        parameters = parameter_count(settings.model, **model_kwargs)
    except ValueError as exc:  # e.g. an attention width not divisible by the heads
        raise InputError(None, f"{settings.model}: {exc}") from None
    # weights, gradients and AdamW's two moments, float32
    check_fits(parameters * 4 * 4, f"{settings.model} with {parameters:,} parameters",
               "choose a smaller --width/--attention-width")
    model = build_model(settings.model, **model_kwargs)
    model_config = model.config()
    if settings.prior_init and state is None:
        _init_classifier_to_priors(model, data)
    if settings.identity_attention and state is None:
        identity_attention_init_(model)
    if state is not None:
        check_compatible(state, out / LAST, model_config, data.vocabulary_sha256, settings.train)
        model.load_state_dict(state.get("train_state_dict", state["state_dict"]))
    return model, model_config


def _train_epoch(run: _Run, epoch: int, console) -> dict:
    """One pass over this rank's share of the training data; returns the epoch's metrics row (mean loss over
    all ranks, speed). Stops the run (TrainingDiverged) at a non-finite loss, or a mean loss no model worth
    keeping has."""
    import torch

    settings, dist, device = run.settings, run.dist, run.device
    run.net.train()
    indices = _epoch_indices(len(run.train_data), settings.seed, epoch, dist)
    loss_sum, seen, load_seconds, step_seconds = 0.0, 0, 0.0, 0.0
    started = time.perf_counter()
    with _progress(console if dist.main else None, f"epoch {epoch}/{settings.epochs}", run.steps_per_epoch) as advance:
        for first in range(0, len(indices), settings.batch_size):
            t0 = time.perf_counter()
            rgb, audio, labels = run.train_data.batch(indices[first : first + settings.batch_size])
            rgb, audio, labels = (torch.from_numpy(a).to(device, non_blocking=True) for a in (rgb, audio, labels))
            t1 = time.perf_counter()
            if run.has_batch_norm and len(labels) < 2:  # BatchNorm cannot train on one sample
                continue
            rgb, audio, targets = _targets(run, rgb, audio, labels, epoch, first)
            loss = _step(run, rgb, audio, targets)
            batch = len(labels)
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(settings.train, f"training diverged: the loss became {loss.item()} at epoch "
                                    f"{epoch}, step {first // settings.batch_size + 1} (no checkpoint of it was "
                                    "written; try a lower --lr, or check the data for extreme values)")
            loss_sum += loss.item() * batch
            seen += batch
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            load_seconds += t1 - t0
            step_seconds += time.perf_counter() - t1
            advance(loss_sum / seen, seen * dist.world / (time.perf_counter() - started))
    epoch_seconds = time.perf_counter() - started
    row = {
        "epoch": epoch,
        "train_loss": _global_mean(loss_sum, seen, dist, device),
        "lr": run.scheduler.get_last_lr()[0],
        "samples_per_s": round(seen * dist.world / epoch_seconds, 1),
        "loader_ms_per_batch": round(1000 * load_seconds / max(1, run.steps_per_epoch), 3),
        "step_ms_per_batch": round(1000 * step_seconds / max(1, run.steps_per_epoch), 3),
        "epoch_seconds": round(epoch_seconds, 2),
    }
    if row["train_loss"] > DIVERGED_LOSS:
        kept = f"; best.pt still holds epoch {max(run.history, key=_score)['epoch']}" if run.history else ""
        raise TrainingDiverged(settings.train, f"training diverged: the mean training loss of epoch {epoch} was "
                               f"{row['train_loss']:.3g}, above {DIVERGED_LOSS:g} (predicting 0.5 for every class "
                               f"scores ln 2 = 0.693); nothing of this epoch was written{kept}; try a lower --lr "
                               f"(this run: {settings.lr:g})")
    return row


def _targets(run: _Run, rgb, audio, labels, epoch: int, first: int):
    """A batch's inputs and training targets: the labels smoothed towards the training label prior, mixed up
    with a shuffled copy of the batch (inputs too), and blended with the teachers' mean probabilities."""
    import torch

    settings = run.settings
    targets = labels
    if settings.label_smoothing:
        targets = (1 - settings.label_smoothing) * targets + settings.label_smoothing * run.smoothing_prior
    if settings.mixup:
        rgb, audio, targets = _mixup(rgb, audio, targets, settings, epoch, first)
    if run.teachers:
        with torch.no_grad():
            soft = torch.stack([torch.sigmoid(t(rgb, audio).float()) for t in run.teachers]).mean(0)
        targets = (1 - settings.distill_weight) * targets + settings.distill_weight * soft
    return rgb, audio, targets


def _step(run: _Run, rgb, audio, targets):
    """One optimizer step (mixed precision where asked, the schedule, the EMA); returns the batch's loss."""
    import torch

    run.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(run.device.type, dtype=run.autocast, enabled=run.autocast is not None):
        loss = run.loss_fn(run.net(rgb, audio).float(), targets)
    run.scaler.scale(loss).backward()
    if run.settings.clip_grad_norm:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not fp16's scaled ones
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.settings.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)
    return loss


def _validate(run: _Run, row: dict) -> None:
    """Add the validation metrics of the scored model (GAP, mAP, Hit@1, PERR, F1) to the epoch's row."""
    if run.val_data is not None:
        scores = evaluate_model(run.scored, run.val_data, run.settings.eval_batch_size, run.device)
        row.update({f"val_{k}": v for k, v in scores.items()})


def _save(run: _Run, row: dict, epoch: int) -> None:
    """The epoch's checkpoints (best.pt when it is the best so far, last.pt always, with what --resume
    needs), metrics.csv/metrics.json and TensorBoard scalars."""
    import torch

    run.history.append(row)
    gap = _score(row)
    payload = {
        "model": run.model_config,
        "state_dict": {k: v.detach().cpu() for k, v in run.scored.state_dict().items()},
        "num_classes": run.train_data.num_classes,
        "vocabulary_sha256": run.train_data.vocabulary_sha256,
        "data": {"train": run.train_data.sources, "val": run.val_data.sources if run.val_data else None},
        "teachers": run.teacher_files,
        "metrics": row,
        "epoch": epoch,
        "settings": run.settings.model_dump(),
        "run": run.run_info,
    }
    if gap > run.best_gap:
        run.best_gap = gap
        save_checkpoint(run.out / BEST, payload)
    extra = {} if run.ema is None else {"train_state_dict": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
                                        "ema_steps": run.ema.steps}
    save_checkpoint(run.out / LAST, {**payload, **extra, "history": run.history, "best_gap": run.best_gap,
                                     "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                                     "torch_rng": torch.get_rng_state()})
    _write_history(run.out, run.history, run.settings, run.run_info)
    run.writer = run.writer or _tensorboard(run.out)
    if run.writer is not None:
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch":
                run.writer.add_scalar(key, value, epoch)


def _refuse_changed_input(option: str, spec: str | None, recorded: list[dict] | None, current: list[dict] | None,
                          last: Path) -> None:
    """--resume goes on with the inputs the run started on, told by content (sha256), not by path: data or
    a teacher replaced at the same path would otherwise be trained on silently."""
    if not recorded or current is None:  # not used, or a run from before its inputs were recorded
        return
    before = sorted(str(source.get("sha256")) for source in recorded)
    if before == sorted(str(source.get("sha256")) for source in current):
        return
    changed = [source["path"] for source in current if str(source.get("sha256")) not in before]
    detail = (f"{changed[0]} is not what {last} recorded (sha256 differs)" if changed
              else f"{len(current)} files now, {len(recorded)} when the run started")
    raise InputError(spec, f"{option} changed since the run started: {detail}; --resume continues on the same "
                           "inputs: restore them, or start a new run in another --out")


def _refuse_conflicts(saved: TrainSettings, asked: TrainSettings, given: set[str], last: Path) -> None:
    conflicts = []
    for name in sorted(given - RESUMABLE_CHANGES):
        old, new = getattr(saved, name), getattr(asked, name)
        if old == new:
            continue
        if name in ("train", "val") and old and new and _same_data(old, new):
            continue
        conflicts.append(f"{name} {new!r} (the run has {old!r})")
    if conflicts:
        raise InputError(last, "--resume continues the run as it was started; these options differ: "
                         + "; ".join(conflicts) + ". Start a new run in another --out to change them")


def _same_data(old: str, new: str) -> bool:
    """Two data specs name the same data when they expand to the same files (or the same store)."""
    from avf.data.sources import expand_sources

    if Path(old).resolve() == Path(new).resolve():
        return True
    try:
        return [p.resolve() for p in expand_sources(old)] == [p.resolve() for p in expand_sources(new)]
    except InputError:
        return False


def _init_classifier_to_priors(model, data: TrainingData) -> None:
    import torch

    counts = np.bincount(data.label_indices, minlength=data.num_classes)[: data.num_classes]
    prior = np.clip(counts / max(len(data), 1), 1e-5, 1 - 1e-5)
    if hasattr(model.classifier, "init_to_priors"):  # a mixture-of-experts head
        model.classifier.init_to_priors(torch.from_numpy(prior).float())
        return
    with torch.no_grad():
        model.classifier.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).float())


def _label_prior(data: TrainingData, device):
    import torch

    counts = np.bincount(data.label_indices, minlength=data.num_classes)[: data.num_classes]
    return torch.from_numpy(counts / max(len(data), 1)).float().to(device)


def _mixup(rgb, audio, targets, settings: TrainSettings, epoch: int, first: int):
    """Mix every example with another of the batch (both modalities and targets, one lambda per batch)."""
    import torch

    rng = np.random.default_rng([settings.seed, epoch, first, 13])
    lam = float(rng.beta(settings.mixup, settings.mixup))
    order = torch.from_numpy(rng.permutation(len(targets))).to(targets.device)
    return (lam * rgb + (1 - lam) * rgb[order], lam * audio + (1 - lam) * audio[order],
            lam * targets + (1 - lam) * targets[order])


#: A validation GAP under this fraction of the run's best so far is a collapse, not noise: Self and Cross Modal
#: Attention at lr 1e-3 fell from 0.574 after epoch 1 to 0.058 after epoch 2 and stayed there (the model had
#: fallen back to the label priors), while its training loss stayed far below the divergence bound.
COLLAPSE_FRACTION = 0.5
#: ... once the best is worth collapsing from: early epochs of a hard task can move from 0.01 to 0.004 by chance.
COLLAPSE_FROM = 0.05


def _collapse(history: list[dict]) -> dict | None:
    """The last epoch's collapse (its GAP, the best epoch before it), or None."""
    gaps = [(row["epoch"], row["val_gap"]) for row in history if row.get("val_gap") is not None]
    if len(gaps) < 2:
        return None
    best_epoch, best_gap = max(gaps[:-1], key=lambda g: g[1])
    epoch, gap = gaps[-1]
    if best_gap >= COLLAPSE_FROM and gap < COLLAPSE_FRACTION * best_gap:
        return {"epoch": epoch, "val_gap": gap, "best_epoch": best_epoch, "best_gap": best_gap}
    return None


def _stalled(history: list[dict], patience: int) -> bool:
    """True when the best validation GAP is more than ``patience`` epochs old."""
    gaps = [row["val_gap"] for row in history if "val_gap" in row]
    return len(gaps) > patience and max(gaps[-patience:]) <= max(gaps[:-patience])


class _Ema:
    """Exponential moving average of a model's weights (buffers such as BN statistics are copied).

    The decay ramps up as min(decay, (1 + t) / (10 + t)) over steps t, as TensorFlow's
    ExponentialMovingAverage with num_updates does, so a short run is not dominated by its random start.
    """

    def __init__(self, model, decay: float, state: dict | None):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.steps = 0
        if state is not None and "train_state_dict" in state:
            self.model.load_state_dict(state["state_dict"])
            self.steps = state.get("ema_steps", 0)

    def update(self, model) -> None:
        import torch

        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            ema_params = list(self.model.parameters())
            torch._foreach_mul_(ema_params, decay)
            torch._foreach_add_(ema_params, [p.detach() for p in model.parameters()], alpha=1 - decay)
            for mine, theirs in zip(self.model.buffers(), model.buffers()):
                mine.copy_(theirs)


def _load_teachers(settings: TrainSettings, data: TrainingData, device) -> tuple[list, list[dict]]:
    """Teacher models for distillation, in eval mode, checked against the training data's classes; and each
    teacher's path and sha256 (recorded in the checkpoint, so --resume can tell a replaced teacher)."""
    from avf.train.checkpoint import model_from_checkpoint

    teachers, files = [], []
    for path in settings.distill_from:
        try:
            payload = load_checkpoint(path)  # says what is wrong: missing, a folder, not a checkpoint, ...
        except InputError as exc:
            raise InputError(exc.path, f"{exc.problem} (--distill-from)") from None
        if payload["num_classes"] != data.num_classes:
            raise InputError(path, f"teacher has {payload['num_classes']} classes, the data has {data.num_classes}")
        check_same_vocabulary(data.vocabulary_sha256, settings.train, payload.get("vocabulary_sha256"), path)
        teacher = model_from_checkpoint(payload, path).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        teachers.append(teacher)
        files.append({"path": str(path), "sha256": file_sha256(path)})
    return teachers, files


def _global_mean(total: float, count: int, dist: _Distributed, device) -> float:
    if dist.world == 1:
        return total / max(count, 1)
    import torch

    both = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(both)
    return float(both[0] / both[1])


def _epoch_line(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4f}"]
    for key in ("val_gap", "val_map", "val_hit_at_one", "val_perr", "val_f1"):
        if key in row:
            parts.append(f"{key[4:]} {row[key]:.4f}")
    parts.append(f"{row['samples_per_s']:.0f} samples/s (loader {row['loader_ms_per_batch']:.1f} ms, "
                 f"step {row['step_ms_per_batch']:.1f} ms per batch)")
    return "  ".join(parts)


def _write_history(out: Path, history: list[dict], settings: TrainSettings, run_info: dict,
                   stopped_early: int | None = None, collapsed: dict | None = None) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_file(out / METRICS_CSV) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    atomic_write_text(out / METRICS_JSON,
                      json.dumps({"format": RUN_FORMAT, "settings": settings.model_dump(), "run": run_info,
                                  "history": history,
                                  **({"stopped_early": stopped_early} if stopped_early else {}),
                                  **({"collapsed": collapsed} if collapsed else {})}, indent=2) + "\n")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


class _NoProgress:
    def __enter__(self):
        return lambda loss, rate: None

    def __exit__(self, *exc):
        return False


def _progress(console, description: str, total: int):
    if console is None:
        return _NoProgress()
    from avf.cli.progress import training_progress

    return training_progress(description, total)
