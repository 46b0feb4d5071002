"""What int4's MatMulNBits block size and accuracy level cost in GAP and buy in batch-1 latency, on real data.

Larger blocks read fewer scales (faster) and quantize coarser (they lose more GAP); accuracy level 4 multiplies
in INT8, level 1 in float32. For each --prune ratio R this builds, with avf-compress, fold + prune R as FP32 (the
baseline) and as int4 at every block (32, 64, 128, 256) and level (4, 1) -- the distilled model of each ratio is
built once and reused -- then measures:

* GAP retention against the FP32 PyTorch reference on --eval (the retention gate's own figure) and --test (held out);
* single-stream latency at batch 1 (p50, p99): interleaved rounds, each round timing every model once in a rotated
  order, so machine drift and other load hit every row alike; the checkpoint in PyTorch eager is timed alongside.

Writes RESULTS/int4_blocks.json and RESULTS/int4_blocks.md; the artifacts and the distillation cache stay in
RESULTS/work (delete it when done).

    python tools/int4_blocks.py --checkpoint RUN/best.pt --train 'TRAIN*.tfrecord' --eval 'EVAL*.tfrecord' \\
        --test 'TEST*.tfrecord' --prune 0.5 0.65 --threads 1 --results docs/results/int4_blocks
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avf.atomic import atomic_write_text  # noqa: E402
from avf.compress.pipeline import CompressionRejected, CompressOptions, compress  # noqa: E402
from avf.compress.quantize import INT4_ACCURACY_LEVELS, INT4_BLOCKS  # noqa: E402
from avf.data.vocabulary import check_same_vocabulary, file_sha256  # noqa: E402
from avf.deploy.bench import cpu_name  # noqa: E402
from avf.deploy.latency import measure_latency  # noqa: E402
from avf.runtime.onnxruntime_cpu import OnnxRuntimeCpuRunner  # noqa: E402
from avf.runtime.pytorch_model import PyTorchRunner  # noqa: E402
from avf.runtime.scoring import score  # noqa: E402
from avf.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from avf.train.data import load_training_data  # noqa: E402
from avf.tune.cache import DistillCache  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--train", required=True, help="distillation data after pruning")
    parser.add_argument("--eval", required=True, help="retention gate data (selection)")
    parser.add_argument("--test", required=True, help="held-out data")
    parser.add_argument("--prune", type=float, nargs="+", required=True, help="prune ratios, e.g. 0.5 0.65")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--blocks", type=int, nargs="+", default=list(INT4_BLOCKS))
    parser.add_argument("--levels", type=int, nargs="+", default=sorted(INT4_ACCURACY_LEVELS, reverse=True))
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--eval-size", type=int, help="gate on the first N --eval videos only")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved latency rounds")
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per model per round")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    payload = load_checkpoint(args.checkpoint)
    reference = model_from_checkpoint(payload, args.checkpoint).eval()
    test = load_training_data(args.test, payload["num_classes"])
    check_same_vocabulary(payload.get("vocabulary_sha256"), args.checkpoint, test.vocabulary_sha256, args.test)
    work = args.results / "work"
    cache = DistillCache(work / "cache", file_sha256(args.checkpoint))
    eager = PyTorchRunner(reference)
    reference_gap = score(eager, test)["gap"]
    rows = [{"name": "PyTorch FP32 eager (unfolded)", "ratio": None, "precision": "fp32", "block": None, "level": None,
             "parameters": sum(p.numel() for p in reference.parameters()), "bytes": None,
             "eval_retention": 1.0, "test_retention": 1.0, "run": eager}]
    for ratio in args.prune:
        builds = [("fp32", None, None)] + [("int4", b, level) for level in args.levels for b in args.blocks]
        for precision, block, level in builds:
            name = f"r{round(ratio * 100):02d}-{precision}" + (f"-b{block}-l{level}" if precision == "int4" else "")
            options = CompressOptions(checkpoint=args.checkpoint, out=work / name, force=True, prune=ratio,
                                      finetune_epochs=args.finetune_epochs, train=args.train, eval=args.eval,
                                      eval_size=args.eval_size, min_retention=0.0, precision=precision,
                                      int4_block=block, int4_accuracy_level=level)
            print(f"{name}: building", flush=True)
            try:
                report = compress(options, distill_cache=cache)
            except CompressionRejected as rejected:  # min_retention 0: never; the row stays honest if it happens
                report = rejected.report
            runner = OnnxRuntimeCpuRunner(work / name / "model.onnx", threads=args.threads)
            row = {"name": name, "ratio": ratio, "precision": precision, "block": block, "level": level,
                   "parameters": report.parameters, "bytes": report.files["model.onnx"].bytes,
                   "eval_retention": report.retention.ratios["gap"],
                   "test_retention": score(runner, test)["gap"] / reference_gap, "run": runner}
            rows.append(row)
            print(f"  GAP retention eval {row['eval_retention']:.5f}, test {row['test_retention']:.5f}", flush=True)
    time_rows(rows, test, args)
    write_results(args, payload, rows, test)


def time_rows(rows: list[dict], data, args) -> None:
    """p50 and p99 at batch 1: the median over rounds of each round's figure; each round times every row once,
    starting one row later than the round before, so drift and position in the round hit every row alike."""
    rgb, audio, _ = data.batch(np.arange(1))
    rounds: dict[int, list[dict]] = {i: [] for i in range(len(rows))}
    for r in range(args.rounds):
        for i in [(r + k) % len(rows) for k in range(len(rows))]:
            run = rows[i]["run"]
            rounds[i].append(measure_latency(lambda run=run: run(rgb, audio), warmup=10, min_iterations=50,
                                             min_seconds=args.seconds))
        print(f"latency round {r + 1}/{args.rounds} done", flush=True)
    for i, row in enumerate(rows):
        del row["run"]
        row.update(p50_ms=float(np.median([t["p50_ms"] for t in rounds[i]])),
                   p99_ms=float(np.median([t["p99_ms"] for t in rounds[i]])),
                   p50_ms_best_round=min(t["p50_ms"] for t in rounds[i]))


def write_results(args, payload, rows, test) -> None:
    import onnxruntime
    import torch

    eager = rows[0]["p50_ms"]
    conditions = {"command": " ".join(sys.argv), "processor": cpu_name(), "machine": platform.machine(),
                  "threads": args.threads, "batch": 1, "rounds": args.rounds, "seconds_per_round": args.seconds,
                  "load_average_at_end": os.getloadavg(), "torch": torch.__version__,
                  "onnxruntime": onnxruntime.__version__, "checkpoint": str(args.checkpoint),
                  "checkpoint_sha256": file_sha256(args.checkpoint), "model": payload["model"]["name"],
                  "classes": payload["num_classes"], "eval": args.eval, "eval_size": args.eval_size,
                  "test": test.description, "test_videos": len(test), "finetune_epochs": args.finetune_epochs,
                  "retention": "GAP of the artifact (ONNX Runtime CPU) / GAP of the FP32 PyTorch checkpoint",
                  "latency": "single-stream batch 1; median over interleaved rounds of each round's p50 / p99"}
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results / "int4_blocks.json",
                      json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    lines = [f"# int4 block size and accuracy level: {conditions['model']} ({conditions['classes']} classes), "
             f"batch 1, {args.threads} thread(s), {conditions['processor']}", "",
             f"GAP retention vs the FP32 PyTorch checkpoint on --eval ({args.eval}) and --test ({test.description}); "
             f"latency: median of {args.rounds} interleaved rounds (`tools/int4_blocks.py`).", "",
             "| model | block | level | MB | GAP retention eval | GAP retention test | p50 ms | p99 ms | vs eager |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    kept = lambda x: "n/a" if x is None else f"{x:.5f}"  # noqa: E731  (None: the reference GAP was 0)
    for row in rows:
        size = "" if row["bytes"] is None else f"{row['bytes'] / 1e6:.2f}"
        lines.append(f"| {row['name']} | {row['block'] or ''} | {row['level'] or ''} | {size} | "
                     f"{kept(row['eval_retention'])} | {kept(row['test_retention'])} | {row['p50_ms']:.4f} | "
                     f"{row['p99_ms']:.4f} | {eager / row['p50_ms']:.1f}x |")
    atomic_write_text(args.results / "int4_blocks.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
