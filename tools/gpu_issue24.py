"""Issue 24's trainings and searches on one CUDA GPU, in one call, under a deadline.

    python3 tools/gpu_issue24.py --stores STORES --runs RUNS --out OUT --deadline 560

STORES holds the standard split's feature stores (train, val) and val's halves (select, test:
tools/splits/yt8m_45k.json). Every training is `avf train` with the common recipe of
docs/results/split45k/ (AdamW lr 1e-3 cosine, batch 256, --batch-norm, --identity-attention, 10 epochs,
FC baselines at width 2048), several at a time on the one GPU (the models are small; the host's cores
feed the batches), so seconds per epoch are shared figures. Three stages:

1. side by side: the five teachers of docs/results/split45k section 0.1 (FC Early Fusion w2048 and w8192,
   context_gating_moe, Attend-Fusion without attention, FC Late Fusion), the five Table 1 models the
   first table lacked, and Residual Attention Early Fusion with the settings that stop a divergence
   (a lower lr, warm-up, gradient clipping);
2. once the teachers are done: their ensemble scored (tools/ensemble_eval.py) and students distilled from
   it the way the best model was (20 epochs, dropout 0.5, distillation weight 0.7): Attend-Fusion, its
   no-attention ablation and FC Early Fusion w4096, with undistilled controls of the same settings;
3. once the students are done: `avf tune` on the best student by validation GAP for x86-cpu (costs
   measured on this host's CPU at 2 threads) and for a Jetson (costs predicted), side by side.

Each stage stops starting commands at its own deadline and stops (Ctrl-C: the finished epochs stay)
what still runs at the next. OUT receives session.json (every command, exit code, seconds, the best
epoch of every run), runs.tar.gz (every run's metrics and settings, the tunes' records) and
pick_x86.tar.gz (the x86-cpu search's chosen artifact, to be measured again on the CPU machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_45k import avf_train, run_lane  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = ["--identity-attention"]  # avf_train gives lr 1e-3 cosine and --batch-norm; epochs per command
TEACHERS = {"t_ef_w2048": ["-m", "fc_early_fusion", "--width", "2048"],
            "t_ef_w8192": ["-m", "fc_early_fusion", "--width", "8192"],
            "t_cg_moe": ["-m", "context_gating_moe"],
            "t_af_no_attention": ["-m", "attend_fusion_no_attention"],
            "t_fc_late": ["-m", "fc_late_fusion", "--width", "2048"]}
MISSING = {"self_cross_modal_attention": [], "fc_residual_late_fusion": ["--width", "2048"],
           "fc_residual_gated_late_fusion": ["--width", "2048"], "residual_attention_late_fusion": [],
           "self_attended_cross_modal_fcrn": []}
# Residual Attention Early Fusion diverged at lr 1e-3 (train loss 2.6e7 in epoch 1): what the field does about it.
RAEF = {"raef_lr1e-4": ["--lr", "1e-4"],  # the paper's lr, with the rest of the common recipe
        "raef_lr3e-4_warmup1": ["--lr", "3e-4", "--warmup-epochs", "1"],
        "raef_lr3e-4_warmup1_clip1": ["--lr", "3e-4", "--warmup-epochs", "1", "--clip-grad-norm", "1.0"],
        "raef_lr1e-3_warmup1_clip1": ["--warmup-epochs", "1", "--clip-grad-norm", "1.0"]}
STUDENT = ["--dropout", "0.5", "--epochs", "20"]  # docs/results/split45k section 0.1's best student's settings
STUDENTS = {"af": ["-m", "attend_fusion"], "af_no_attention": ["-m", "attend_fusion_no_attention"],
            "ef_w4096": ["-m", "fc_early_fusion", "--width", "4096"]}
JETSON = "jetson-orin-nano-8gb"


def best_epoch(run: Path) -> dict | None:
    """The best validation epoch of a run (as best.pt is chosen), or None when it wrote none."""
    try:
        history = json.loads((run / "metrics.json").read_text())["history"]
    except (OSError, ValueError, KeyError):
        return None
    scored = [r for r in history if r.get("val_gap") is not None]
    if not scored:
        return None
    best = max(scored, key=lambda r: r["val_gap"])
    return {"epoch": best["epoch"], "epochs_done": len(history), "val_gap": best["val_gap"], "val_f1": best.get("val_f1"),
            "mean_epoch_seconds": round(sum(r["epoch_seconds"] for r in history) / len(history), 2)}


def run_stage(plan: dict[str, list[list[str]]], logs: Path, stop_at: float, kill_at: float, record: list) -> None:
    workers = [threading.Thread(target=run_lane, args=(name, commands, logs, stop_at, kill_at, record))
               for name, commands in plan.items()]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deadline", type=float, default=560.0, help="seconds for the whole call")
    parser.add_argument("--epochs", type=int, default=10, help="the common recipe's (20 for the students)")
    parser.add_argument("--student-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=3, help="avf tune's distillation epochs per ratio")
    parser.add_argument("--student-only", default=None, metavar="NAME",
                        help="a second call: the teachers, this one student (e.g. ef_w4096) and the searches only")
    args = parser.parse_args()
    start = time.monotonic()
    at = lambda fraction: start + fraction * args.deadline  # noqa: E731
    s, r = args.stores, args.runs
    r.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record: list[dict] = []

    def train(threads: int, name: str, *extra: str, epochs: int | None = None) -> list[str]:
        return [*avf_train(s, threads), *RECIPE, "--epochs", str(epochs or args.epochs), *extra, "--out", str(r / name)]

    teach = {name: train(3, name, *extra) for name, extra in TEACHERS.items()}
    table = {name: train(3, name, "-m", name, *extra) for name, extra in MISSING.items()}
    table |= {name: train(3, name, "-m", "residual_attention_early_fusion", *extra) for name, extra in RAEF.items()}
    tables = list(table.values())
    stage1_tables = {f"table_{i}": tables[i::3] for i in range(3)}
    teacher_lanes = {"teach_a": [teach["t_ef_w2048"], teach["t_ef_w8192"]],
                     "teach_b": [teach["t_cg_moe"], teach["t_af_no_attention"], teach["t_fc_late"]]}

    # the table lanes run on through stage 2; stage 2 starts when the teachers are done
    if args.student_only:  # every teacher in its own lane, no table lanes
        stage1_tables, teacher_lanes = {}, {name: [command] for name, command in teach.items()}
    tables_thread = threading.Thread(target=run_stage, args=(stage1_tables, r, at(0.55), at(0.62), record))
    tables_thread.start()
    run_stage(teacher_lanes, r, at(0.30), at(0.36), record)
    print(f"teachers done at {time.monotonic() - start:.0f} s", flush=True)

    soft = [a for name in TEACHERS for a in ("--distill-from", str(r / name / "best.pt"))
            if (r / name / "best.pt").is_file()]
    stage2 = {"ensemble": [[sys.executable, str(REPO / "tools" / "ensemble_eval.py"),
                            *[str(r / n / "best.pt") for n in TEACHERS], "--data", str(s / "val"), "--threads", "2"]]}
    students_run = {args.student_only: STUDENTS[args.student_only]} if args.student_only else STUDENTS
    if args.student_only:
        stage2 = {}
    for name, extra in students_run.items():
        stage2[f"d_{name}"] = [train(2, f"d_{name}", *extra, *STUDENT[:2], *soft, "--distill-weight", "0.7",
                                     epochs=args.student_epochs)]
        if name != "ef_w4096" and not args.student_only:  # FC Early Fusion's undistilled control is docs/results/split45k's h_ef_d05_25
            stage2[f"h_{name}"] = [train(2, f"h_{name}", *extra, *STUDENT[:2], epochs=args.student_epochs)]
    if len(soft) < 2 * len(TEACHERS):
        print(f"only {len(soft) // 2} teachers finished: the students learn from those", flush=True)
    run_stage(stage2, r, at(0.40), at(0.66), record)
    tables_thread.join()
    print(f"students done at {time.monotonic() - start:.0f} s", flush=True)

    students = {n: best_epoch(r / n) for n in (f"d_{k}" for k in students_run)}
    finished = {n: b for n, b in students.items() if b and (r / n / "best.pt").is_file()}
    tunes = {}
    if finished:
        chosen = max(finished, key=lambda n: finished[n]["val_gap"])
        minutes = max(0.5, (at(0.97) - time.monotonic()) / 60 - 0.6)
        tune = [sys.executable, "-m", "avf", "tune", str(r / chosen / "best.pt"), "--train", str(s / "train"),
                "--calib", str(s / "train"), "--eval", str(s / "select"), "--test", str(s / "test"),
                "--min-retention", "0.99", "--finetune-epochs", str(args.finetune_epochs),
                "--time-budget", f"{minutes:.2f}"]
        tunes = {"tune_x86": [[*tune, "--profile", "x86-cpu", "--threads", "2", "-o", str(r / "tune_x86")]],
                 "tune_jetson": [[*tune, "--profile", JETSON, "--threads", "4", "-o", str(r / "tune_jetson")]]}
        print(f"tuning {chosen} ({finished[chosen]['val_gap']:.4f}) for {minutes:.1f} minutes", flush=True)
        run_stage(tunes, r, at(0.98), at(0.985), record)

    import torch

    session = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "torch": torch.__version__, "seconds": round(time.monotonic() - start, 1), "commands": record,
               "best": {p.name: best_epoch(p) for p in sorted(r.iterdir()) if (p / "metrics.json").is_file()}}
    (args.out / "session.json").write_text(json.dumps(session, indent=2))
    with tarfile.open(args.out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted(r.rglob("*")):
            small = path.is_file() and path.stat().st_size < 2_000_000 and path.suffix not in (".pt", ".onnx", ".pt2")
            if small and "artifact" not in path.relative_to(r).parts and "candidates" not in path.relative_to(r).parts:
                tar.add(path, arcname=str(path.relative_to(r)))
    artifact = r / "tune_x86" / "artifact"  # the x86-cpu pick, measured again on the CPU machine (the Jetson's: records)
    if artifact.is_dir() and sum(f.stat().st_size for f in artifact.rglob("*") if f.is_file()) < 15_000_000:
        with tarfile.open(args.out / "pick_x86.tar.gz", "w:gz") as tar:
            tar.add(artifact, arcname="tune_x86/artifact")
    print(json.dumps(session["best"], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
