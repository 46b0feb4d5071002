"""Train registry models on one dataset and write the paper's Table 1 / Table 3 shape.

Each model is trained with ``avf train`` (same code path as the CLI) into RUNS/NAME; a model
whose run already finished its epochs is not retrained, so an interrupted reproduction resumes.
The best validation epoch (by GAP) of each run is reported beside the paper's numbers.

    python tools/reproduce_table.py --train STORE_OR_TFRECORDS --val STORE_OR_TFRECORDS \\
        --models fc_audio,fc_visual,fc_early_fusion,fc_late_fusion,attend_fusion,attend_fusion_no_attention \\
        --epochs 5 --lr 5e-4 --runs runs/table --out docs/results/table1

Writes OUT/table.md, OUT/table.csv and OUT/gap_vs_params.png (needs matplotlib: pip install -e '.[plot]').
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODELS = ("fc_audio,fc_visual,fc_early_fusion,fc_late_fusion,attend_fusion,attend_fusion_audio_only,"
                  "attend_fusion_visual_only,attend_fusion_no_attention")


def _finished(run: Path, epochs: int) -> bool:
    history = run / "metrics.json"
    if not history.is_file():
        return False
    from avf.documents import read_mapping

    log = read_mapping(history, "a training metrics log")
    return len(log["history"]) >= epochs or bool(log.get("stopped_early")) or bool(log.get("collapsed"))


def train_models(args) -> list[dict]:
    from avf.train.loop import TrainingDiverged, train

    rows = []
    for name in args.models:
        run = args.runs / name
        settings = _settings(args, name, run)
        _check_same_recipe(run, settings)
        if not _finished(run, args.epochs):
            if args.no_train:
                print(f"== {name}: not finished (--no-train), left out of the table", flush=True)
                continue
            started = time.perf_counter()
            resume = (run / "last.pt").is_file()
            print(f"== {name}: training ({'resuming' if resume else 'new run'})", flush=True)
            try:
                train(settings, resume=resume, console=_console(), resume_epochs=args.epochs)
            except TrainingDiverged as exc:  # a collapsed run is tabulated as such; a diverged one wrote nothing
                print(f"== {name}: {exc}", flush=True)
                if not _finished(run, args.epochs):
                    continue
            print(f"== {name}: {time.perf_counter() - started:.0f} s", flush=True)
        rows.append(_row(name, run))
    return rows


def _settings(args, name: str, run: Path):
    from avf.models.zoo import BASELINE_WIDTH, REGISTRY
    from avf.train.loop import TrainSettings

    is_baseline = REGISTRY[name].builder.default_width == BASELINE_WIDTH
    width = args.width or (args.baseline_width if is_baseline else None)
    return TrainSettings(model=name, train=args.train, val=args.val, out=str(run), epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
                         seed=args.seed, width=width, threads=args.threads, batch_norm=args.batch_norm, ema=args.ema,
                         early_stop=args.early_stop, label_smoothing=args.label_smoothing, mixup=args.mixup,
                         # a no-op without attention, so baseline runs are shared by both recipes
                         identity_attention=args.identity_attention and REGISTRY[name].builder.uses_attention)


# Settings a reused run must share with the requested recipe (out differs by design).
RECIPE_KEYS = ("model", "train", "val", "epochs", "lr", "batch_size", "schedule", "warmup_epochs", "seed", "width",
               "identity_attention", "dropout", "weight_decay", "prior_init", "batch_norm", "ema", "early_stop",
               "label_smoothing", "mixup", "distill_from", "distill_weight")


def _check_same_recipe(run: Path, settings) -> None:
    """A run left in --runs by another recipe must not land in this table under this recipe's name."""
    from avf.documents import read_mapping

    stored = read_mapping(run / "metrics.json", "a training metrics log")["settings"] if (run / "metrics.json").is_file() else None
    if stored is None:
        return
    wanted = settings.model_dump()
    defaults = type(settings)(model="x", train="x", out="x").model_dump()
    differ = [k for k in RECIPE_KEYS if stored.get(k, defaults[k]) != wanted[k]]
    if differ:
        raise SystemExit(f"{run}: trained with another recipe ({', '.join(f'{k}={stored.get(k)!r}' for k in differ)}); "
                         f"use another --runs folder")


def _console():
    from rich.console import Console

    return Console()


def _row(name: str, run: Path) -> dict:
    from avf.models import REGISTRY

    from avf.documents import read_mapping

    log = read_mapping(run / "metrics.json", "a training metrics log")
    best = max(log["history"], key=lambda r: r["val_gap"])
    spec = REGISTRY[name]
    return {
        "model": name,
        "paper_name": spec.paper_name,
        "table": spec.paper_table,
        "gap": round(100 * best["val_gap"], 2),
        "f1": round(100 * best["val_f1"], 2),
        "map": round(100 * best["val_map"], 2),
        "hit_at_one": round(100 * best["val_hit_at_one"], 2),
        "params_m": round(log["run"]["parameters"] / 1e6, 1),
        "paper_gap": spec.paper_gap,
        "paper_f1": spec.paper_f1,
        "paper_params_m": spec.paper_params_m,
        "best_epoch": best["epoch"],
        "epochs": len(log["history"]),
        "samples_per_s": best["samples_per_s"],
        "loader_ms_per_batch": best["loader_ms_per_batch"],
        "step_ms_per_batch": best["step_ms_per_batch"],
        "epoch_seconds": best["epoch_seconds"],
        "device": log["run"]["device"],
        "collapsed_at": log.get("collapsed", {}).get("epoch"),
    }


def write_tables(rows: list[dict], args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Paper tables reproduced on {args.dataset_name}", "",
             f"Recipe: {args.recipe}", "", f"Conditions: {args.conditions}", "",
             "Ours: best validation epoch by GAP; GAP@20 and micro F1 at threshold 0.5 (`avf.metrics`). "
             "Paper: YouTube-8M (2017, 4716 classes, full training set, 20 epochs on GPUs).", ""]
    for table, title in ((1, "Table 1 shape: baselines and proposed models"),
                         (3, "Table 3 shape: Attend-Fusion ablations"),
                         (0, "YouTube-8M challenge anchors (not in the paper)")):
        members = [r for r in rows if r["table"] == table or (table == 3 and r["model"] == "attend_fusion")]
        if not members:
            continue
        lines += [f"## {title}", "",
                  "| Method | GAP % | F1 % | Params (M) | paper GAP % | paper F1 % | paper Params (M) | best epoch |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in members:
            paper = [r[k] if r[k] is not None else "-" for k in ("paper_gap", "paper_f1", "paper_params_m")]
            gap = (f"**collapsed** at epoch {r['collapsed_at']} ({r['gap']:.2f} before)" if r.get("collapsed_at")
                   else f"{r['gap']:.2f}")
            lines.append(f"| {r['paper_name']} | {gap} | {r['f1']:.2f} | {r['params_m']:.1f} | {paper[0]} "
                         f"| {paper[1]} | {paper[2]} | {r['best_epoch']}/{r['epochs']} |")
        lines.append("")
    lines += ["## Training throughput (data loader alone vs training step, per batch)", "",
              "| Method | samples/s | loader ms/batch | step ms/batch | epoch s |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['paper_name']} | {r['samples_per_s']:.0f} | {r['loader_ms_per_batch']:.2f} "
                     f"| {r['step_ms_per_batch']:.1f} | {r['epoch_seconds']:.0f} |")
    lines += ["", "![GAP against parameters](gap_vs_params.png)", ""]
    (args.out / "table.md").write_text("\n".join(lines))
    _plot(rows, args.out / "gap_vs_params.png")


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[plot]')", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    left, left_below = None, False
    for r in sorted(rows, key=lambda r: r["params_m"]):
        ax.scatter(r["params_m"], r["gap"], color="tab:blue")
        # a label goes below its point when the label of a close neighbour on the left sits at the same height
        below = (left is not None and not left_below and r["params_m"] < 2 * left["params_m"]
                 and abs(r["gap"] - left["gap"]) < 1.0)
        ax.annotate(r["model"], (r["params_m"], r["gap"]), fontsize=7, xytext=(4, -9 if below else 3),
                    textcoords="offset points")
        left, left_below = r, below
        if r["paper_gap"] is not None:
            ax.scatter(r["paper_params_m"], r["paper_gap"], color="tab:gray", marker="x")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:g}"[0] in "235" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("parameters (M, log scale)")
    ax.set_ylabel("GAP@20 (%)")
    ax.set_title("GAP against model size: ours (dots) and the paper's (crosses)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _width_text(args) -> str:
    if args.width is not None:
        return f"{args.width} for every model"
    if args.baseline_width is not None:
        return f"{args.baseline_width} for the FC baselines (paper: 8192), 2048 for the proposed models (paper)"
    return "the paper's (8192 baselines, 2048 proposed models)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--models", default=DEFAULT_MODELS, type=lambda s: [m.strip() for m in s.split(",") if m.strip()])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--warmup-epochs", type=float, default=0.0)
    parser.add_argument("--identity-attention", action="store_true",
                        help="start attention value/output projections at the identity (attention models)")
    parser.add_argument("--width", type=int, default=None, help="override every model's FC width (default: paper's)")
    parser.add_argument("--baseline-width", type=int, default=None,
                        help="FC width of the FC baselines only (paper: 8192; smaller to fit a CPU budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: all)")
    parser.add_argument("--batch-norm", action="store_true", help="BatchNorm in the FC stacks (avf train --batch-norm)")
    parser.add_argument("--ema", type=float, default=0.0, help="avf train --ema")
    parser.add_argument("--early-stop", type=int, default=0, help="avf train --early-stop")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="avf train --label-smoothing")
    parser.add_argument("--mixup", type=float, default=0.0, help="avf train --mixup")
    parser.add_argument("--no-train", action="store_true",
                        help="only tabulate runs that already finished (e.g. trained on another machine)")
    parser.add_argument("--note", default="", help="a sentence added to the conditions (e.g. a shared machine)")
    parser.add_argument("--runs", type=Path, default=Path("runs/table"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/table1"))
    parser.add_argument("--dataset-name", default="the given data")
    args = parser.parse_args(argv)

    import torch

    from avf.models import MODEL_NAMES

    unknown = [m for m in args.models if m not in MODEL_NAMES]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODEL_NAMES)}")
    extras = "".join([f", {args.warmup_epochs:g} warm-up epochs" if args.warmup_epochs else "",
                      ", identity-initialised attention (`--identity-attention`)" if args.identity_attention else "",
                      ", batch norm in the FC stacks (`--batch-norm`)" if args.batch_norm else "",
                      f", weight EMA {args.ema:g} (`--ema`)" if args.ema else "",
                      f", early stop after {args.early_stop} epochs without a better GAP" if args.early_stop else "",
                      f", label smoothing {args.label_smoothing:g}" if args.label_smoothing else "",
                      f", mixup {args.mixup:g}" if args.mixup else ""])
    args.recipe = (f"`avf train` per model, AdamW lr {args.lr} ({args.schedule} schedule{extras}), weight decay 0.01, "
                   f"batch {args.batch_size}, {args.epochs} epochs (the paper: 20), dropout 0.4, "
                   f"FC width {_width_text(args)}, classifier bias initialised to the label priors, "
                   f"seed {args.seed}; train {args.train}, validate {args.val}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    if args.no_train:
        machine = "runs trained elsewhere, tabulated here with --no-train (each run's device is in its metrics.json)"
    else:
        machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
                   f"CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}, "
                   f"torch {torch.__version__}, python {platform.python_version()}, avf commit {commit or 'unknown'}"
                   + (f", {args.threads} training thread(s)" if args.threads else ""))
    args.conditions = machine + (f". {args.note}" if args.note else "")
    rows = train_models(args)
    if not rows:
        raise SystemExit("no finished run to tabulate")
    write_tables(rows, args)
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
