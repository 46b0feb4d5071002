"""The finished Table 1 / Table 3 reproduction on the standard 45k split, and the distillation table, from run records.

    python tools/table45k.py --out docs/results/reproduction45k

Every figure comes from a run's own record, nothing typed by hand:
- the runs of issue 24 (docs/results/reproduction45k/runs/NAME/metrics.json: settings, history, device);
- the earlier GPU session's (docs/results/split45k/gpu/: table.csv, written by tools/reproduce_table.py from its
  runs' metrics.json, with each run's settings in runs/settings.json and per-epoch CSVs for seconds per epoch).

A model's row is its issue-24 run where there is one (the five the first table lacked; Residual Attention Early
Fusion's best setting that did not diverge; Self and Cross Modal Attention's rerun), else the earlier row. A
diverged or collapsed run is never a row: it is listed under the table with what replaced it.
Writes OUT/table.md, OUT/table.csv, OUT/gap_vs_params.png and OUT/distillation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import yaml  # noqa: E402
from reproduce_table import _plot, _row  # noqa: E402

from avf.recipes import recipe_path  # noqa: E402
from avf.train.loop import DIVERGED_LOSS, _collapse  # noqa: E402

EARLIER = REPO / "docs" / "results" / "split45k" / "gpu"
COMMON = yaml.safe_load(recipe_path("yt8m-best").read_text())  # the common recipe every row is compared with
# A row's columns: reproduce_table's best-epoch figures, then where and how the run was trained.
COLUMNS = ("model", "paper_name", "table", "gap", "f1", "params_m", "paper_gap", "paper_f1", "paper_params_m",
           "best_epoch", "epochs")
# Runs of issue 24 that stand for a model (the other issue-24 runs are teachers, students and settings tried).
STANDS_FOR = {"fc_residual_late_fusion": ["fc_residual_late_fusion"],
              "fc_residual_gated_late_fusion": ["fc_residual_gated_late_fusion"],
              "residual_attention_late_fusion": ["residual_attention_late_fusion"],
              "self_attended_cross_modal_fcrn": ["self_attended_cross_modal_fcrn"],
              "self_cross_modal_attention": ["scma_lr3e-4_warmup1", "self_cross_modal_attention"],
              "residual_attention_early_fusion": ["raef_lr3e-4_warmup1", "raef_lr3e-4_warmup1_clip1", "raef_lr1e-4",
                                                  "raef_lr1e-3_warmup1_clip1"]}


def load(run: Path) -> dict | None:
    path = run / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def first_collapse(history: list[dict]) -> dict | None:
    """The first epoch at which avf train's collapse stop (avf.train.loop._collapse) ends a run with this history:
    runs from before that stop existed trained on past it."""
    return next((found for end in range(2, len(history) + 1) if (found := _collapse(history[:end]))), None)


def failure(log: dict) -> str | None:
    """Why a run is not a result: it collapsed (recorded by avf train, or read from its history), or stopped short."""
    history = log["history"]
    if log.get("collapsed"):
        return f"collapsed at epoch {log['collapsed']['epoch']}"
    fell = first_collapse(history)
    if fell:
        return (f"collapsed at epoch {fell['epoch']} (validation GAP {fell['best_gap']:.4f} at epoch {fell['best_epoch']}, "
                f"{fell['val_gap']:.4f} after; it trained on to epoch {len(history)})")
    if len(history) < log["settings"]["epochs"] and not log.get("stopped_early"):
        return f"stopped after epoch {len(history)} of {log['settings']['epochs']} (its log says why)"
    return None


def extra_settings(settings: dict) -> str:
    """What a run set beyond the common recipe (width, dropout, epochs, lr, warm-up, clipping, distillation)."""
    parts = []
    for key, flag in (("lr", "--lr"), ("warmup_epochs", "--warmup-epochs"), ("clip_grad_norm", "--clip-grad-norm"),
                      ("epochs", "--epochs"), ("dropout", "--dropout")):
        if settings.get(key, COMMON[key]) != COMMON[key]:
            parts.append(f"{flag} {settings[key]:g}")
    if settings.get("width") and settings["width"] != 2048:  # 2048: the common recipe's FC baselines, the proposed models' own
        parts.append(f"--width {settings['width']}")
    if settings.get("distill_from"):
        parts.append(f"--distill-from x{len(settings['distill_from'])} --distill-weight {settings['distill_weight']:g}")
    return " ".join(parts)


def row_from_run(model: str, name: str, log: dict, where: Path) -> dict:
    row = {k: v for k, v in _row(model, where / name).items() if k in COLUMNS}
    history = log["history"]
    return row | {"epoch_seconds": round(sum(r["epoch_seconds"] for r in history) / len(history), 2),
                  "device": "H200 (shared)" if log["run"]["device"].startswith("cuda") else "CPU, 2 threads",
                  "settings": extra_settings(log["settings"]), "run": f"{where.name}/{name}"}


def earlier_rows() -> dict[str, dict]:
    """The earlier session's rows, with their runs' settings and mean seconds per epoch."""
    settings = json.loads((EARLIER / "runs" / "settings.json").read_text())
    rows = {}
    with open(EARLIER / "table" / "table.csv") as fh:
        for r in csv.DictReader(fh):
            model = r["model"]
            key = next(k for k in (f"table/{model}", f"curve/{model}/train") if k in settings)
            csv_path = EARLIER / "runs" / (key.replace("/train", "_train") + ".csv")
            with open(csv_path) as epochs_fh:
                seconds = [float(e["epoch_seconds"]) for e in csv.DictReader(epochs_fh)]
            rows[model] = {"model": model, "paper_name": r["paper_name"], "table": int(r["table"]),
                           "gap": float(r["gap"]), "f1": float(r["f1"]), "params_m": float(r["params_m"]),
                           "paper_gap": float(r["paper_gap"]) if r["paper_gap"] else None,
                           "paper_f1": float(r["paper_f1"]) if r["paper_f1"] else None,
                           "paper_params_m": float(r["paper_params_m"]) if r["paper_params_m"] else None,
                           "best_epoch": int(r["best_epoch"]), "epochs": int(r["epochs"]),
                           "epoch_seconds": round(sum(seconds) / len(seconds), 2), "device": "H200 (shared)",
                           "settings": extra_settings(settings[key]["settings"]),
                           "run": f"../split45k/gpu/runs/{csv_path.relative_to(EARLIER / 'runs')}"}
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "reproduction45k")
    args = parser.parse_args(argv)
    runs = args.out / "runs"
    rows, replaced = earlier_rows(), []
    for model, candidates in STANDS_FOR.items():
        if model in rows and failure_of_earlier(model):
            replaced.append(f"{rows[model]['paper_name']}, the earlier session's run: {failure_of_earlier(model)} "
                            f"({rows[model]['gap']:.2f} at its best epoch); its row is now an issue-24 run")
            del rows[model]
        for name in candidates:
            log = load(runs / name)
            if log is None:
                continue
            why = failure(log)
            if why:
                replaced.append(f"{name} ({extra_settings(log['settings']) or 'the common recipe'}): {why}")
                continue
            if model not in rows:
                rows[model] = row_from_run(model, name, log, runs)
    from avf.models import REGISTRY

    order = [name for name in REGISTRY if name in rows]
    table = [rows[name] for name in order]
    with open(args.out / "table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    lines = ["# Table 1 and Table 3 on the standard 45k split (written by tools/table45k.py)", "",
             "Common recipe (docs/results/split45k section 0): `avf train --recipe yt8m-best` = AdamW lr 1e-3 cosine, "
             "weight decay 0.01, batch 256, dropout 0.4, `--batch-norm`, `--identity-attention`, 10 epochs, seed 0; "
             "FC baselines at `--width 2048`. Train: 44,922 videos; validation: 5,701 (tools/splits/yt8m_45k.json). "
             "Best validation epoch by GAP; GAP@20 and micro F1 at 0.5. s/epoch: mean over the run's epochs, "
             "on a GPU shared by several trainings at once (tools/gpu_45k.py, tools/gpu_issue24.py) or on this "
             "machine's 2 CPU cores (README.md says what else ran there).", ""]
    for number, title in ((1, "Table 1: baselines and proposed models"), (3, "Table 3: Attend-Fusion ablations"),
                          (0, "YouTube-8M challenge anchors (not in the paper)")):
        members = [r for r in table if r["table"] == number or (number == 3 and r["model"] == "attend_fusion")]
        lines += [f"## {title}", "", "| Method | GAP % | F1 % | Params (M) | paper GAP % | paper F1 % | best epoch "
                  "| s/epoch | trained on | beyond the common recipe | run |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
        for r in members:
            paper = ["-" if r[k] is None else f"{r[k]:g}" for k in ("paper_gap", "paper_f1")]
            lines.append(f"| {r['paper_name']} | {r['gap']:.2f} | {r['f1']:.2f} | {r['params_m']:.1f} | {paper[0]} | "
                         f"{paper[1]} | {r['best_epoch']}/{r['epochs']} | {r['epoch_seconds']:.2f} | {r['device']} | "
                         f"{r['settings'] or '-'} | [{Path(r['run']).name}]({r['run']}) |")
        lines.append("")
    missing = [name for name, spec in REGISTRY.items() if spec.paper_table in (1, 3) and name not in rows]
    lines += ["## Runs that are not rows", ""] + [f"- {text}" for text in replaced] + (
        [f"- no finished run: {', '.join(missing)}"] if missing else []) + ["", "![GAP against parameters](gap_vs_params.png)", ""]
    (args.out / "table.md").write_text("\n".join(lines))
    _plot(table, args.out / "gap_vs_params.png")
    write_distillation(args.out, runs, rows)
    write_deployable(args.out)
    print((args.out / "table.md").read_text())
    return 0


def failure_of_earlier(model: str) -> str | None:
    """Why the earlier session's run of a model is not a result, read from its per-epoch CSV."""
    for path in (EARLIER / "runs" / "table" / f"{model}.csv", EARLIER / "runs" / "curve" / f"{model}_train.csv"):
        if path.is_file():
            with open(path) as fh:
                history = [{k: float(v) for k, v in r.items()} | {"epoch": int(r["epoch"])} for r in csv.DictReader(fh)]
            if max(r["train_loss"] for r in history) > DIVERGED_LOSS:
                return f"diverged (training loss above {DIVERGED_LOSS:g})"
            fell = first_collapse(history)
            if fell:
                return f"collapsed at epoch {fell['epoch']}"
            if len(history) < 10:
                return f"stopped after {len(history)} of 10 epochs"
    return None


def write_distillation(out: Path, runs: Path, rows: dict) -> None:
    """Students of the five-model ensemble against undistilled runs of the same settings and the 10-epoch rows."""
    ensemble = (out / "gpu" / "call1_logs" / "ensemble.log").read_text().strip().splitlines()[-1]
    lines = ["# Distillation from the five-model ensemble (written by tools/table45k.py)", "",
             f"Teachers: t_ef_w2048, t_ef_w8192, t_cg_moe, t_af_no_attention, t_fc_late (the common recipe). Their "
             f"ensemble, mean of probabilities on the 5,701 validation videos (tools/ensemble_eval.py): `{ensemble}`.",
             "Students and controls: the common recipe with `--dropout 0.5 --epochs 20`; students add "
             "`--distill-from` the five teachers and `--distill-weight 0.7` (the settings of the best model of "
             "docs/results/split45k section 0.1). All on one H200 shared by several trainings.", "",
             "| model | params (M) | 10 epochs, common recipe: GAP % / F1 % | undistilled, dropout 0.5, 20 epochs | "
             "distilled | distilled - undistilled (GAP points) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for model, name in (("attend_fusion", "af"), ("attend_fusion_no_attention", "af_no_attention"),
                        ("fc_early_fusion", "ef_w4096")):
        student, control = load(runs / f"d_{name}"), load(runs / f"h_{name}")
        best = max(student["history"], key=lambda r: r["val_gap"])
        if control is None:  # FC Early Fusion w4096's control is the earlier session's h_ef_d05_25 (width 2048)
            control_text, delta = "-", "-"
        else:
            c = max(control["history"], key=lambda r: r["val_gap"])
            control_text = f"{100 * c['val_gap']:.2f} / {100 * c['val_f1']:.2f}"
            delta = f"{100 * (best['val_gap'] - c['val_gap']):+.2f}"
        base = rows.get(model)
        base_text = f"{base['gap']:.2f} / {base['f1']:.2f}" if base and model != "fc_early_fusion" else (
            f"{base['gap']:.2f} / {base['f1']:.2f} (width 2048)" if base else "-")
        lines.append(f"| {rows[model]['paper_name'] if model in rows else model}"
                     f"{' (width 4096)' if name == 'ef_w4096' else ''} | {student['run']['parameters'] / 1e6:.1f} | "
                     f"{base_text} | {control_text} | **{100 * best['val_gap']:.2f} / {100 * best['val_f1']:.2f}** | "
                     f"{delta} |")
    (out / "distillation.md").write_text("\n".join(lines) + "\n")


def write_deployable(out: Path) -> None:
    """The searches' chosen artifacts (OUT/tune_*/tune.json): what an edge user would ship, with how each cost was got."""
    lines = ["# Best deployable (written by tools/table45k.py from tune_*/tune.json)", "",
             "| profile | costs | chosen | GAP % selection (retention) | GAP % held-out (retention) | p50 / p99 ms "
             "| size MB | memory MiB | candidates done |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for folder in sorted(out.glob("tune_*")):
        tune = json.loads((folder / "tune.json").read_text())
        chosen, cost, test = tune["chosen"], tune["chosen"]["cost"], tune["chosen"]["test"]
        how = (f"measured: {cost['source'].removeprefix('avf-bench on ')}" if cost["status"] == "measured"
               else "**predicted** (roofline), not measured")
        lines.append(f"| {tune['profile']} | {how} | {chosen['id']} ({chosen['parameters'] / 1e6:.1f}M parameters) | "
                     f"{100 * chosen['gap']:.2f} ({chosen['retention']:.4f}) | {100 * test['gap']:.2f} "
                     f"({test['retention']:.4f}) | {cost['latency_p50_ms']:.3f} / {cost['latency_p99_ms']:.3f} | "
                     f"{cost['size_bytes'] / 1e6:.2f} | {cost['memory_mib']:.1f} | {tune['candidates']} |")
    (out / "deployable.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
