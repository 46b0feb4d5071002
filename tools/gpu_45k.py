"""Issue 13's trainings on one CUDA GPU: several `avf train` runs side by side, under a deadline.

    python tools/make_split.py tools/splits/yt8m_45k.json --data ../shared/data/yt8m-video --out /work/avf-real
    python tools/make_split.py tools/splits/yt8m_45k.json --data - --out /work/avf-real --all --from-store train
    python tools/gpu_45k.py --stores /work/avf-real --deadline 330 --threads 4

One lane per concern, each a list of commands run one after another; the lanes run at the same time
on the one GPU (the models are small: one alone leaves the GPU mostly idle, and the host cores feed
the batches). They share the GPU and the host's cores, so seconds per epoch are shared figures; GAP
is not affected. Every command is `avf train` itself or a tool that calls the same training code
(`tools/learning_curve.py`, `tools/reproduce_table.py`), with the recipe of docs/results/split45k/:
AdamW lr 1e-3 cosine, 10 epochs, batch 256, `--batch-norm`, FC baselines at width 2048,
identity-initialised attention, bf16 autocast (avf train's default on a GPU that has it).

- bar: FC Early Fusion + BN (width 2048, then 8192), `context_gating_moe`, and a student distilled
  from the first two (the recipe candidates for the 0.75 validation GAP bar);
- curve_a, curve_b: the learning curve (6k, 12k, 23k, 45k nested subsets) of six models;
- table: the other Table 1 / Table 3 models on the 45k split.

``--plan distill`` (after the main plan, on the same machine: it reads its checkpoints) is the second
step, the one that reached 0.75: the mean-probability ensemble of five 45k models (FC Early Fusion
w2048 and w8192, context_gating_moe, Attend-Fusion without attention, FC Late Fusion) is scored, and
students are trained on its soft targets (`avf train --distill-from` x5) beside longer plain runs;
``--plan seeds`` repeats the best student with seeds 1 and 2.

A lane starts no command after --deadline seconds; at --deadline + --grace every command still
running is stopped (its finished epochs stay in its metrics.json). RUNS/gpu_session_PLAN.json records
each command, its exit code, its seconds and the GPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = ["--epochs", "10", "--lr", "1e-3", "--batch-norm"]
SIZES = ("train_6k", "train_12k", "train_23k", "train")
CURVE_A = "fc_early_fusion,attend_fusion_no_attention,attend_fusion"
CURVE_B = "fc_visual,fc_late_fusion,context_gating_moe"
TABLE = ("fc_audio,moe,attend_fusion_audio_only,attend_fusion_visual_only,fc_residual_early_fusion,"
         "fc_residual_gated_early_fusion,fc_attention,residual_attention_early_fusion,audio_visual_attention,"
         "self_cross_modal_attention,fc_residual_late_fusion,residual_attention_late_fusion,"
         "self_attended_cross_modal_fcrn,fc_residual_gated_late_fusion")


def avf_train(stores: Path, threads: int) -> list[str]:
    """`avf train` on the 45k split with the common recipe's optimiser and batch norm (epochs left to the caller)."""
    return [sys.executable, "-m", "avf", "train", "--train", str(stores / "train"), "--val", str(stores / "val"),
            "--schedule", "cosine", "--threads", str(threads), "--lr", "1e-3", "--batch-norm"]


def lanes(stores: Path, runs: Path, threads: int) -> dict[str, list[list[str]]]:
    py, train, val = sys.executable, str(stores / "train"), str(stores / "val")
    avf = [*avf_train(stores, threads), "--epochs", "10"]
    bar = runs / "bar"
    sizes = ",".join(str(stores / s) for s in SIZES)
    curve = [py, str(REPO / "tools" / "learning_curve.py"), "--sizes", sizes, "--val", val, *RECIPE,
             "--identity-attention", "--baseline-width", "2048", "--threads", str(threads), "--runs", str(runs / "curve")]
    return {
        "bar": [
            [*avf, "--model", "fc_early_fusion", "--width", "2048", "--out", str(bar / "fc_early_fusion_bn_w2048")],
            [*avf, "--model", "context_gating_moe", "--out", str(bar / "context_gating_moe")],
            [*avf, "--model", "fc_early_fusion", "--out", str(bar / "fc_early_fusion_bn_w8192")],
            [*avf, "--model", "fc_early_fusion", "--width", "2048", "--out", str(bar / "fc_early_fusion_bn_w2048_distilled"),
             "--distill-from", str(bar / "fc_early_fusion_bn_w2048" / "best.pt"),
             "--distill-from", str(bar / "context_gating_moe" / "best.pt")],
        ],
        "curve_a": [[*curve, "--models", CURVE_A, "--out", str(runs / "curve_out_a")]],
        "curve_b": [[*curve, "--models", CURVE_B, "--out", str(runs / "curve_out_b")]],
        "table": [[py, str(REPO / "tools" / "reproduce_table.py"), "--train", train, "--val", val, "--models", TABLE,
                   *RECIPE, "--identity-attention", "--baseline-width", "2048", "--threads", str(threads),
                   "--runs", str(runs / "table"), "--out", str(runs / "table_out"), "--dataset-name", "YouTube-8M 45k split",
                   "--note", "one CUDA GPU shared by four lanes of training at once (seconds per epoch are shared)"]],
    }


def teachers(runs: Path) -> list[Path]:
    return [runs / "bar" / "fc_early_fusion_bn_w2048" / "best.pt", runs / "bar" / "context_gating_moe" / "best.pt",
            runs / "bar" / "fc_early_fusion_bn_w8192" / "best.pt",
            runs / "curve" / "attend_fusion_no_attention" / "train" / "best.pt",
            runs / "curve" / "fc_late_fusion" / "train" / "best.pt"]


BEST_STUDENT = ["--model", "fc_early_fusion", "--width", "4096", "--dropout", "0.5", "--epochs", "20",
                "--distill-weight", "0.7"]


def distill_lanes(stores: Path, runs: Path, threads: int, seeds: bool) -> dict[str, list[list[str]]]:
    py, base = sys.executable, avf_train(stores, threads)
    soft = [arg for t in teachers(runs) for arg in ("--distill-from", str(t))]
    if seeds:
        return {f"seed{s}": [[*base, *BEST_STUDENT, *soft, "--seed", str(s), "--out",
                              str(runs / "bar3" / f"s_ef4096_w07_seed{s}")]] for s in (1, 2)}
    out = runs / "bar2"
    ef = ["--model", "fc_early_fusion", "--width", "2048"]
    cg = ["--model", "context_gating_moe"]
    return {
        "ensemble": [[py, str(REPO / "tools" / "ensemble_eval.py"), *map(str, teachers(runs)), "--data",
                      str(stores / "val"), "--threads", str(threads)]],
        "s_ef_w05": [[*base, *ef, "--epochs", "20", *soft, "--distill-weight", "0.5", "--out", str(out / "s_ef_w05")]],
        "s_ef_w08": [[*base, *ef, "--epochs", "20", *soft, "--distill-weight", "0.8", "--out", str(out / "s_ef_w08")]],
        "s_cg_w05": [[*base, *cg, "--epochs", "15", *soft, "--distill-weight", "0.5", "--out", str(out / "s_cg_w05")]],
        "h_ef_d05_25": [[*base, *ef, "--epochs", "25", "--dropout", "0.5", "--out", str(out / "h_ef_d05_25")]],
        "h_ef_mix_20": [[*base, *ef, "--epochs", "20", "--mixup", "0.2", "--out", str(out / "h_ef_mix_20")]],
        "h_cg_20": [[*base, *cg, "--epochs", "20", "--out", str(out / "h_cg_20")]],
        "s_ef4096_w07": [[*base, *BEST_STUDENT, *soft, "--out", str(out / "s_ef4096_w07")]],
    }


def run_lane(name: str, commands: list[list[str]], logs: Path, stop_at: float, kill_at: float, record: list) -> None:
    for command in commands:
        if time.monotonic() > stop_at:
            record.append({"lane": name, "command": command, "skipped": "deadline"})
            continue
        started = time.monotonic()
        with open(logs / f"{name}.log", "a") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
            while proc.poll() is None:
                if time.monotonic() > kill_at:
                    os.killpg(proc.pid, signal.SIGINT)  # avf train keeps the finished epochs on Ctrl-C
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(1)
        record.append({"lane": name, "command": command, "exit": proc.wait(),
                       "seconds": round(time.monotonic() - started, 1)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=Path, required=True, help="folder with train, val and the nested subsets")
    parser.add_argument("--runs", type=Path, default=None, help="default: STORES/runs/gpu45k")
    parser.add_argument("--deadline", type=float, default=330.0, help="seconds after which no command starts")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds after the deadline before stopping runs")
    parser.add_argument("--threads", type=int, default=4, help="host threads per training")
    parser.add_argument("--only", default=None, help="comma-separated lanes (default: all)")
    parser.add_argument("--plan", choices=("main", "distill", "seeds"), default="main")
    args = parser.parse_args()
    runs = args.runs or args.stores / "runs" / "gpu45k"
    runs.mkdir(parents=True, exist_ok=True)
    plan = (lanes(args.stores, runs, args.threads) if args.plan == "main"
            else distill_lanes(args.stores, runs, args.threads, seeds=args.plan == "seeds"))
    if args.plan != "main":
        missing = [str(t) for t in teachers(runs) if not t.is_file()]
        if missing:
            raise SystemExit(f"error: {missing[0]}: teacher checkpoint not found (run --plan main first)")
    if args.only:
        plan = {k: v for k, v in plan.items() if k in args.only.split(",")}
    now = time.monotonic()
    record: list[dict] = []
    workers = [threading.Thread(target=run_lane, args=(name, commands, runs, now + args.deadline,
                                                       now + args.deadline + args.grace, record))
               for name, commands in plan.items()]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    (runs / f"gpu_session_{args.plan}.json").write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "lanes": list(plan),
                                                       "threads_per_lane": args.threads, "commands": record}, indent=2))
    print(json.dumps([{k: v for k, v in r.items() if k != "command"} | {"what": r["command"][3:8]} for r in record]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
