"""Measure what avf-compress buys on this machine: latency (batch 1), size and GAP retention.

All rows are measured in one run, on the same machine and threads, so the ratios are the
result; absolute times depend on the CPU. Rows: PyTorch FP32 eager, ONNX Runtime FP32 and
dynamic INT8 of the unfolded model, then avf-compress artifacts (folded FP32, folded INT8, and
a pruning sweep with and without INT8), each gated against the FP32 reference on --eval.

    python tools/bench_compress.py RUN/best.pt --eval ../shared/data/yt8m-video/validate008*.tfrecord ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avf.compress.export import export_onnx  # noqa: E402
from avf.compress.pipeline import CompressionRejected, CompressOptions, compress  # noqa: E402
from avf.compress.quantize import quantize_int8_dynamic  # noqa: E402
from avf.compress.retention import compare_on_data  # noqa: E402
from avf.compress.runtime import OnnxModel  # noqa: E402
from avf.deploy.bench import cpu_name  # noqa: E402
from avf.deploy.latency import measure_latency  # noqa: E402
from avf.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from avf.train.data import load_training_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--eval", required=True, help="held-out data for retention")
    parser.add_argument("--train", help="calibration / fine-tune data (default: the checkpoint's)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/compress"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prune", default="0.25,0.5,0.75")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--calib-size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per latency row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    payload = load_checkpoint(args.checkpoint)
    reference = model_from_checkpoint(payload, args.checkpoint).eval()
    config = payload["model"]
    eval_data = load_training_data(args.eval, payload["num_classes"])
    rgb1, audio1, _ = eval_data.batch(np.arange(1))
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="bench_compress."))

    def latency(run):
        return measure_latency(run, warmup=20, min_iterations=100, min_seconds=args.seconds)

    reference_cache: dict[bytes, np.ndarray] = {}

    def torch_probabilities(rgb, audio):
        """The FP32 reference, computed once per evaluation batch however many rows compare against it."""
        key = hashlib.sha1(rgb.tobytes() + audio.tobytes()).digest()
        if key not in reference_cache or len(rgb) == 1:
            with torch.inference_mode():
                probabilities = torch.sigmoid(reference(torch.from_numpy(rgb), torch.from_numpy(audio))).numpy()
            if len(rgb) == 1:  # the latency row: time the model, not the cache
                return probabilities
            reference_cache[key] = probabilities
        return reference_cache[key]

    def add(name, run, size_bytes, params, retention, note=""):
        row = {"name": name, "latency": latency(run), "bytes": size_bytes, "params": params, "note": note}
        if retention is not None:
            row.update(gap=retention["compressed"]["gap"], gap_retention=retention["ratios"]["gap"],
                       f1=retention["compressed"]["f1"],
                       **{k: v for k, v in retention.items() if k.endswith("_agreement")})
        rows.append(row)
        print(f"{name:38s} p50 {row['latency']['p50_ms']:7.3f} ms  {size_bytes / 1e6:7.1f} MB  "
              f"GAP retention {row.get('gap_retention', float('nan')):.4f}", flush=True)

    try:
        params = sum(p.numel() for p in reference.parameters())
        reference_metrics = compare_on_data(torch_probabilities, torch_probabilities, eval_data)
        add("PyTorch FP32 eager (unfolded)", lambda: torch_probabilities(rgb1, audio1), params * 4, params,
            reference_metrics)
        unfolded = export_onnx(reference, work / "unfolded.onnx", config["rgb_dim"], config["audio_dim"], {})
        for name, path in [("ONNX Runtime FP32 (unfolded)", unfolded),
                           ("ONNX Runtime dynamic INT8 (unfolded)", quantize_int8_dynamic(unfolded, work / "dyn.onnx"))]:
            model = OnnxModel(path, threads=args.threads)
            add(name, lambda m=model: m(rgb1, audio1), path.stat().st_size, params,
                compare_on_data(torch_probabilities, model, eval_data))
        variants = [("avf-compress fold, FP32", None, "fp32"), ("avf-compress fold, INT8", None, "int8")]
        for ratio in (float(r) for r in args.prune.split(",") if r):
            variants += [(f"avf-compress fold + prune {ratio:.2f}, FP32", ratio, "fp32"),
                         (f"avf-compress fold + prune {ratio:.2f}, INT8", ratio, "int8")]
        for name, ratio, precision in variants:
            out = work / f"artifact_{len(rows)}"
            options = CompressOptions(checkpoint=args.checkpoint, out=out, prune=ratio, precision=precision,
                                      finetune_epochs=args.finetune_epochs, train=args.train, calib=args.train,
                                      calib_size=args.calib_size, eval=args.eval, min_retention=0.0)
            try:
                report = compress(options, say=lambda line: print("   ", line, flush=True))
            except CompressionRejected as rejected:  # min_retention 0: never, but keep the row honest if it happens
                report = rejected.report
            model = OnnxModel(out / "model.onnx", threads=args.threads)
            retention = report.retention.model_dump(mode="json") if report.retention else None
            add(name, lambda m=model: m(rgb1, audio1), report.files["model.onnx"].bytes, report.parameters,
                retention, note="; ".join(stage.stage for stage in report.stages))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(args, payload, rows, eval_data)


def write_results(args, payload, rows, eval_data) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    base = rows[0]["latency"]["p50_ms"]
    ort_fp32 = rows[1]["latency"]["p50_ms"]
    conditions = {"machine": platform.machine(), "processor": cpu_name(), "threads": args.threads, "batch": 1,
                  "python": platform.python_version(), "torch": torch.__version__,
                  "onnxruntime": __import__("onnxruntime").__version__, "checkpoint": str(args.checkpoint),
                  "model": payload["model"]["name"], "classes": payload["num_classes"],
                  "eval": eval_data.description, "finetune_epochs": args.finetune_epochs, "calib_size": args.calib_size}
    (args.out / "results.json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    lines = [f"# avf-compress on {conditions['model']} ({conditions['classes']} classes), batch 1, "
             f"{args.threads} threads, {conditions['processor']}", "",
             f"Retention: GAP on {eval_data.description} vs the PyTorch FP32 reference. Latency: single-stream "
             "p50 after warm-up, all rows in one run (`tools/bench_compress.py`).", "",
             "| Variant | p50 ms | p99 ms | vs PyTorch eager | vs ORT FP32 unfolded | MB | params (M) | GAP | GAP retention |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lat = row["latency"]
        lines.append(f"| {row['name']} | {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | {base / lat['p50_ms']:.1f}x | "
                     f"{ort_fp32 / lat['p50_ms']:.1f}x | {row['bytes'] / 1e6:.1f} | {row['params'] / 1e6:.1f} | "
                     f"{row.get('gap', float('nan')):.4f} | {row.get('gap_retention', float('nan')):.4f} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install 'avf[plot]')")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, key, label in ((axes[0], "latency", "p50 latency, batch 1 (ms)"), (axes[1], "bytes", "model size (MB)")):
        for row in rows:
            x = row["latency"]["p50_ms"] if key == "latency" else row["bytes"] / 1e6
            y = row.get("gap_retention")
            axis.scatter(x, y, marker="o" if "INT8" in row["name"] else "s")
            axis.annotate(row["name"].replace("avf-compress ", ""), (x, y), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("GAP retention vs FP32 reference")
        axis.axhline(0.995, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    fig.suptitle(f"{conditions['model']}: GAP retention against latency and size ({conditions['processor']})")
    fig.tight_layout()
    fig.savefig(args.out / "pareto.png", dpi=120)


if __name__ == "__main__":
    main()
