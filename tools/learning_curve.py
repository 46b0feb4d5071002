"""Validation GAP against training-set size: one recipe, nested training subsets, one validation set.

    python tools/make_split.py tools/splits/yt8m_45k.json --data ../shared/data/yt8m-video --out /work/avf-real --all
    python tools/learning_curve.py --sizes /work/avf-real/train_6k,/work/avf-real/train_12k,/work/avf-real/train_23k,/work/avf-real/train \\
        --val /work/avf-real/val --models fc_visual,fc_early_fusion,fc_late_fusion,attend_fusion,attend_fusion_no_attention,moe \\
        --epochs 10 --lr 1e-3 --batch-norm --baseline-width 2048 --threads 1 --runs runs/curve --out docs/results/split45k/learning_curve

Each (model, size) is one ``avf train`` run in RUNS/MODEL/SIZE (a finished run with the same recipe is reused, so an
interrupted curve resumes and a curve can be extended by sizes or models later). Writes OUT/curve.csv, OUT/curve.md
and OUT/learning_curve.png (GAP against training videos, log axis, one line per model, parameters in the legend),
and for each model the slope of GAP per doubling of the data over its last two sizes, and where a model's line would
cross another's if both kept their last slope (an extrapolation, said as such).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path


def _finished(run: Path, epochs: int) -> bool:
    log = run / "metrics.json"
    if not log.is_file():
        return False
    from avf.documents import read_mapping

    data = read_mapping(log, "a training metrics log")
    return len(data["history"]) >= epochs or bool(data.get("stopped_early"))


def _settings(args, model: str, train: str, run: Path):
    from avf.models.zoo import BASELINE_WIDTH, REGISTRY
    from avf.train.loop import TrainSettings

    builder = REGISTRY[model].builder
    width = args.width or (args.baseline_width if builder.default_width == BASELINE_WIDTH else None)
    return TrainSettings(model=model, train=train, val=args.val, out=str(run), epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, schedule=args.schedule, seed=args.seed, width=width,
                         threads=args.threads, batch_norm=args.batch_norm, ema=args.ema, early_stop=args.early_stop,
                         identity_attention=args.identity_attention and builder.uses_attention)


def _videos(store: str) -> int:
    from avf.data.feature_store import is_store, read_manifest
    from avf.train.data import load_training_data

    if is_store(store):
        return read_manifest(store)[1].videos

    return len(load_training_data(store))


def run_curve(args) -> list[dict]:
    from avf.documents import read_mapping
    from avf.train.loop import train

    rows = []
    for model in args.models:
        for store in args.sizes:
            size = Path(store).name
            run = args.runs / model / size
            settings = _settings(args, model, store, run)
            saved = run / "metrics.json"
            if saved.is_file():
                old = read_mapping(saved, "a training metrics log")["settings"]
                differ = [k for k, v in settings.model_dump().items() if k not in ("out", "threads", "epochs")
                          and old.get(k, v) != v]
                if differ:
                    raise SystemExit(f"{run}: trained with another recipe ({', '.join(differ)}); use another --runs")
            if not _finished(run, args.epochs):
                if args.no_train:
                    print(f"== {model} @ {size}: not trained (--no-train), skipped", flush=True)
                    continue
                started = time.perf_counter()
                print(f"== {model} @ {size}: training", flush=True)
                train(settings, resume=(run / "last.pt").is_file(), resume_epochs=args.epochs, console=_console())
                print(f"== {model} @ {size}: {time.perf_counter() - started:.0f} s", flush=True)
            log = read_mapping(saved, "a training metrics log")
            best = max(log["history"], key=lambda r: r["val_gap"])
            rows.append({"model": model, "size": size, "videos": _videos(store), "gap": round(100 * best["val_gap"], 2),
                         "best_epoch": best["epoch"], "epochs": len(log["history"]),
                         "params_m": round(log["run"]["parameters"] / 1e6, 1),
                         "epoch_seconds": round(sum(r["epoch_seconds"] for r in log["history"]) / len(log["history"]), 1)})
    return rows


def _console():
    from rich.console import Console

    return Console()


def trends(rows: list[dict]) -> list[str]:
    """Per-model slope over the last two sizes (GAP points per doubling) and pairwise crossings, extrapolated."""
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    lines, fits = [], {}
    for model, points in by_model.items():
        points.sort(key=lambda r: r["videos"])
        if len(points) < 2:
            continue
        a, b = points[-2], points[-1]
        slope = (b["gap"] - a["gap"]) / math.log2(b["videos"] / a["videos"])
        fits[model] = (b["videos"], b["gap"], slope)
        lines.append(f"- {model}: {slope:+.2f} GAP points per doubling of the training set "
                     f"({a['videos']:,} -> {b['videos']:,} videos)")
    names = list(fits)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            (n1, g1, s1), (n2, g2, s2) = fits[first], fits[second]
            if n1 != n2 or s1 == s2:
                continue
            doublings = (g2 - g1) / (s1 - s2)  # where g1 + s1 d == g2 + s2 d
            if doublings > 0:
                lines.append(f"- {first} and {second} would cross after {doublings:.1f} more doublings "
                             f"(about {n1 * 2 ** doublings:,.0f} videos), if both kept their last slope")
    return lines


def write(rows: list[dict], args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "curve.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sizes = sorted({(r["videos"], r["size"]) for r in rows})
    lines = ["# Learning curve: validation GAP (%) against training videos", "", f"Recipe: {args.recipe}", "",
             "| model | params (M) | " + " | ".join(f"{n:,} ({s})" for n, s in sizes) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in sizes) + " |"]
    for model in dict.fromkeys(r["model"] for r in rows):
        cells = {r["videos"]: f"{r['gap']:.2f}" for r in rows if r["model"] == model}
        params = next(r["params_m"] for r in rows if r["model"] == model)
        lines.append(f"| {model} | {params:.1f} | " + " | ".join(cells.get(n, "-") for n, _ in sizes) + " |")
    lines += ["", "Trends (the last two sizes of each model):", "", *trends(rows), "",
              "![learning curve](learning_curve.png)", ""]
    (args.out / "curve.md").write_text("\n".join(lines))
    _plot(rows, args.out / "learning_curve.png")


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[plot]')", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in dict.fromkeys(r["model"] for r in rows):
        points = sorted((r for r in rows if r["model"] == model), key=lambda r: r["videos"])
        ax.plot([r["videos"] for r in points], [r["gap"] for r in points], marker="o",
                label=f"{model} ({points[0]['params_m']:.1f}M)")
    ax.set_xscale("log", base=2)
    sizes = sorted({r["videos"] for r in rows})
    ax.set_xticks(sizes, [f"{n / 1000:.1f}k" for n in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("training videos (log scale)")
    ax.set_ylabel("validation GAP@20 (%)")
    ax.set_title("Validation GAP against training-set size (same recipe, same validation set)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", required=True, type=lambda s: [x for x in s.split(",") if x],
                        help="comma-separated training stores, smallest first (nested subsets)")
    parser.add_argument("--val", required=True)
    parser.add_argument("--models", required=True, type=lambda s: [x for x in s.split(",") if x])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--baseline-width", type=int, default=2048)
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--ema", type=float, default=0.0)
    parser.add_argument("--early-stop", type=int, default=0)
    parser.add_argument("--identity-attention", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-train", action="store_true", help="only collect runs that are already finished")
    parser.add_argument("--runs", type=Path, default=Path("runs/curve"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/learning_curve"))
    args = parser.parse_args(argv)

    from avf.models import MODEL_NAMES

    unknown = [m for m in args.models if m not in MODEL_NAMES]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODEL_NAMES)}")
    args.recipe = (f"`avf train` per point, AdamW lr {args.lr} ({args.schedule}), batch {args.batch_size}, "
                   f"{args.epochs} epochs, FC baselines at width {args.width or args.baseline_width}"
                   + (", `--batch-norm`" if args.batch_norm else "") + (f", `--ema {args.ema:g}`" if args.ema else "")
                   + (f", `--early-stop {args.early_stop}`" if args.early_stop else "")
                   + (", `--identity-attention`" if args.identity_attention else "")
                   + f", seed {args.seed}; validation {args.val}; best epoch by validation GAP")
    rows = run_curve(args)
    if not rows:
        raise SystemExit("no finished runs to plot")
    write(rows, args)
    print((args.out / "curve.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
