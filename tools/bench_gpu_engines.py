"""Issue 22 on a CUDA GPU: the compiled PyTorch engine (torch-aot) of the tune pick and of the folded paper-size
Attend-Fusion, against PyTorch eager and CUDA graphs, side by side in one process.

Variants (each at batch 1 and 64, interleaved rounds so drift in the GPU's clocks hits all alike):
- the paper-size Attend-Fusion (69M parameters, seeded random weights: the cost of a model depends on its shapes,
  not its values) in PyTorch eager FP32 and FP16, and FP16 replayed from CUDA graphs;
- the same model folded (avf's lossless fold), as an AOTInductor package in FP16 and BF16, from CUDA graphs;
- the tune pick: the compressed model of a torch-aot artifact (its model.pt, real weights), in PyTorch eager
  FP32, and as AOTInductor packages in FP16 and BF16 (plain and from CUDA graphs) and weight-only INT8.

Per variant and batch: p50/p99 of end-to-end calls (numpy in, float32 probabilities back in host memory: the
host-device copies included, each call synchronised), the median over rounds of each round's p50; and for the
CUDA-graph variants the on-device time of one graph replay (CUDA events over 200 replays, no copies). With
--test, each pick variant's GAP on those held-out videos, as a ratio to --reference-gap (the unpruned FP32
checkpoint's GAP on the same videos, measured on the CPU machine).

    python3 tools/bench_gpu_engines.py --pick ARTIFACT --test STORE --reference-gap G --out OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed_calls(run, rgb, audio, calls: int) -> list[float]:
    for _ in range(10):
        run(rgb, audio)
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        run(rgb, audio)
        out.append((time.perf_counter() - started) * 1e3)
    return out


def replay_us(runner, batch: int, rgb_dim: int, audio_dim: int) -> float | None:
    """On-device time of one CUDA-graph replay (no copies), microseconds; None for a runner without graphs."""
    import torch

    graphs = getattr(getattr(runner, "_forward", None), "graphs", None)
    if not graphs:
        return None
    graph = graphs[(batch, rgb_dim, audio_dim)][0]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(20):
        graph.replay()
    start.record()
    for _ in range(200):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 200 * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pick", type=Path, required=True, help="a torch-aot artifact (its model.pt is compiled here)")
    parser.add_argument("--test", type=Path, help="held-out feature store for GAP on the GPU")
    parser.add_argument("--reference-gap", type=float, help="the unpruned FP32 checkpoint's GAP on --test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script (no CUDA graphs rows)")
    parser.add_argument("--paper-width", type=int, help=argparse.SUPPRESS)  # dry runs on a small model
    parser.add_argument("--package", type=Path, help="a model.pt2 of the pick compiled already (avf-deploy build): "
                        "timed as it is, and nothing is compiled here")
    args = parser.parse_args()
    import torch

    from avf.compress import torch_aot
    from avf.compress.fold import fold_model
    from avf.deploy.machine import cuda_bandwidth
    from avf.models import build_model
    from avf.runtime.pytorch_model import PyTorchRunner
    from avf.runtime.torch_aot_program import TorchAotRunner

    args.out.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    pick = torch_aot.load_weights(args.pick / torch_aot.WEIGHTS_FILE)
    rgb_dim, audio_dim, classes = pick.rgb_dim, pick.audio_dim, pick.num_classes
    width = {"width": args.paper_width, "attention_width": args.paper_width} if args.paper_width else {}
    paper = build_model("attend_fusion", num_classes=classes, rgb_dim=rgb_dim, audio_dim=audio_dim, **width).eval()
    folded = fold_model(paper).model
    device, graphs = args.device, args.device == "cuda"
    sizes = {"paper": sum(p.numel() for p in paper.parameters()), "folded": sum(p.numel() for p in folded.parameters()),
             "pick": sum(p.numel() for p in pick.parameters())}
    print(f"parameters: {sizes}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="aot."))
    compile_s: dict = {}

    def package(model, name: str, precision: str, cuda_graphs: bool):
        path = work / f"{name}-{precision}.pt2"
        if not path.exists():
            facts = torch_aot.compile_package(model, path, precision, device, rgb_dim, audio_dim)
            compile_s[f"{name} {precision}"] = facts["compile_seconds"]
            print(f"compiled {name} {precision} in {facts['compile_seconds']} s", flush=True)
        return TorchAotRunner(path, device, {"rgb": rgb_dim, "audio": audio_dim}, classes, precision,
                              cuda_graphs=graphs and cuda_graphs)

    def built(cuda_graphs: bool):
        return TorchAotRunner(args.package, device, {"rgb": rgb_dim, "audio": audio_dim}, classes, "fp16",
                              cuda_graphs=graphs and cuda_graphs)

    variants = {
        "paper: PyTorch eager FP32": lambda: PyTorchRunner(copy.deepcopy(paper), device, "fp32"),
        "paper: PyTorch eager FP16": lambda: PyTorchRunner(copy.deepcopy(paper), device, "fp16"),
        "paper: PyTorch FP16, CUDA graphs": lambda: PyTorchRunner(copy.deepcopy(paper), device, "fp16", cuda_graphs=graphs),
        "folded: torch-aot FP16, CUDA graphs": lambda: package(folded, "folded", "fp16", True),
        "folded: PyTorch FP16, CUDA graphs": lambda: PyTorchRunner(copy.deepcopy(folded), device, "fp16", cuda_graphs=graphs),
        "pick: PyTorch eager FP32": lambda: PyTorchRunner(copy.deepcopy(pick), device, "fp32"),
        "pick: PyTorch FP16, CUDA graphs": lambda: PyTorchRunner(copy.deepcopy(pick), device, "fp16", cuda_graphs=graphs),
        "pick: torch-aot FP16": lambda: package(pick, "pick", "fp16", False),
        "pick: torch-aot FP16, CUDA graphs": lambda: package(pick, "pick", "fp16", True),
        "pick: torch-aot BF16, CUDA graphs": lambda: package(pick, "pick", "bf16", True),
        "pick: torch-aot weight-only INT8, CUDA graphs": lambda: package(pick, "pick", "int8-dynamic", True),
        "pick: torch-aot FP8 (Hopper), CUDA graphs": lambda: package(pick, "pick", "fp8", True),
        "folded: torch-aot FP8 (Hopper), CUDA graphs": lambda: package(folded, "folded", "fp8", True),
    }
    if args.package:  # the compile-free plan: PyTorch baselines and the package avf-deploy build compiled
        variants = {name: make for name, make in variants.items() if "torch-aot" not in name}
        variants["pick: torch-aot FP16 (avf-deploy build)"] = lambda: built(False)
        if graphs:
            variants["pick: torch-aot FP16 (avf-deploy build), CUDA graphs"] = lambda: built(True)
    runners = {}
    for name, make in variants.items():
        try:
            runners[name] = make()
        except Exception as exc:  # one variant failing (a kernel PyTorch lacks) must not lose the others
            print(f"{name}: not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", flush=True)
            runners[name] = str(exc).splitlines()[0][:300]
    rng = np.random.default_rng(0)
    inputs = {b: (rng.standard_normal((b, rgb_dim), dtype=np.float32), rng.standard_normal((b, audio_dim),
                                                                                          dtype=np.float32))
              for b in batches}
    p50s = {(n, b): [] for n in runners for b in batches}
    p99s = {(n, b): [] for n in runners for b in batches}
    for round_ in range(args.rounds):
        for batch in batches:
            for name, runner in runners.items():
                if isinstance(runner, str):
                    continue
                times = timed_calls(runner.run, *inputs[batch], args.calls)
                p50s[(name, batch)].append(float(np.percentile(times, 50)))
                p99s[(name, batch)].append(float(np.percentile(times, 99)))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    rows = []
    for name, runner in runners.items():
        for batch in batches:
            if isinstance(runner, str):
                rows.append({"variant": name, "batch": batch, "not_measured": runner})
                continue
            replay = replay_us(runner, batch, rgb_dim, audio_dim)
            rows.append({"variant": name, "batch": batch, "p50_ms": statistics.median(p50s[(name, batch)]),
                         "p99_ms": statistics.median(p99s[(name, batch)]), "round_p50s_ms": p50s[(name, batch)],
                         "graph_replay_us": replay})
    eager = {r["batch"]: r["p50_ms"] for r in rows if r["variant"] == "paper: PyTorch eager FP32" and "p50_ms" in r}
    for row in rows:
        if "p50_ms" in row and row["batch"] in eager:
            row["vs_paper_eager_fp32"] = eager[row["batch"]] / row["p50_ms"]
    gaps = {}
    if args.test:
        from avf.runtime.scoring import score
        from avf.train.data import load_training_data

        data = load_training_data(str(args.test), classes)
        for name, runner in runners.items():
            if name.startswith("pick") and not isinstance(runner, str):
                metrics = score(runner.run, data)
                gaps[name] = {"gap": metrics["gap"], "f1": metrics.get("f1"),
                              "retention": metrics["gap"] / args.reference_gap if args.reference_gap else None}
                print(f"{name}: GAP {metrics['gap']:.5f}", flush=True)
    facts = {"gpu": torch.cuda.get_device_name(0) if graphs else None, "device": device, "torch": torch.__version__,
             "python": platform.python_version(), "cuda": torch.version.cuda,
             "bandwidth": cuda_bandwidth() if graphs else None, "parameters": sizes,
             "compile_seconds": compile_s, "rounds": args.rounds, "calls_per_round": args.calls,
             "method": "end-to-end: numpy in, probabilities back in host memory, each call synchronised; p50/p99 "
                       "per round, median over interleaved rounds; graph_replay_us: CUDA events over 200 replays, "
                       "no copies", "test": str(args.test) if args.test else None,
             "reference_gap": args.reference_gap}
    result = {"facts": facts, "rows": rows, "gap_on_gpu": gaps}
    (args.out / "gpu_engines.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"| variant | batch | p50 ms | p99 ms | graph replay us | vs paper eager FP32 |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "p50_ms" not in r:
            lines.append(f"| {r['variant']} | {r['batch']} | not measured: {r['not_measured'][:80]} | | | |")
            continue
        replay = f"{r['graph_replay_us']:.1f}" if r.get("graph_replay_us") else ""
        lines.append(f"| {r['variant']} | {r['batch']} | {r['p50_ms']:.4f} | {r['p99_ms']:.4f} | {replay} | "
                     f"{r.get('vs_paper_eager_fp32', 0):.1f}x |")
    (args.out / "gpu_engines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
