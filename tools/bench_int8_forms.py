"""Time an INT8 artifact's two ONNX forms on ONNX Runtime CPU, side by side, in one run.

An INT8 artifact ships ``model.onnx`` (INT32 bias dequantization folded into float constants, so that
TensorRT's parser takes it) and ``model.cpu.onnx`` (ONNX Runtime's own graph, which its CPU kernels
fuse). This measures why both are kept: single-stream latency at batch 1 of each, in interleaved
rounds (so drift and other load hit both alike), and the largest probability difference between them.

    python tools/bench_int8_forms.py ARTIFACT [--threads 1] [--rounds 15] [--seconds 0.5] [-o result.json]
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

from avf.deploy.artifact import open_artifact  # noqa: E402
from avf.deploy.bench import cpu_name  # noqa: E402
from avf.deploy.latency import measure_latency  # noqa: E402
from avf.runtime.onnxruntime_cpu import open_session  # noqa: E402

FORMS = ("model.cpu.onnx", "model.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="an INT8 avf-compress artifact (it holds both forms)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per form per round")
    parser.add_argument("-o", "--out", type=Path)
    args = parser.parse_args()
    report = open_artifact(args.artifact, deploying=False)  # both files hashed against report.json
    missing = [name for name in FORMS if name not in report.files]
    if missing:
        sys.exit(f"error: {args.artifact}: no {missing[0]} (only INT8 artifacts ship both forms)")
    sessions = {name: open_session(args.artifact, args.threads, ["CPUExecutionProvider"], args.artifact / name)
                for name in FORMS}
    rng = np.random.default_rng(0)
    one = {"rgb": rng.standard_normal((1, 1024), dtype=np.float32),
           "audio": rng.standard_normal((1, 128), dtype=np.float32)}
    many = {"rgb": rng.standard_normal((256, 1024), dtype=np.float32),
            "audio": rng.standard_normal((256, 128), dtype=np.float32)}
    outputs = {name: session.run(None, many)[0] for name, session in sessions.items()}
    p50 = {name: [] for name in FORMS}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            p50[name].append(measure_latency(lambda s=session: s.run(None, one), warmup=10, min_iterations=50,
                                             min_seconds=args.seconds)["p50_ms"])
    result = {"artifact": str(args.artifact), "model": report.model.name, "parameters": report.parameters,
              "bytes": {name: report.files[name].bytes for name in FORMS},
              "p50_ms_best_round": {name: min(times) for name, times in p50.items()},
              "p50_ms_median_round": {name: float(np.median(times)) for name, times in p50.items()},
              "max_probability_difference": float(np.abs(outputs[FORMS[0]] - outputs[FORMS[1]]).max()),
              "conditions": {"threads": args.threads, "rounds": args.rounds, "batch": 1, "cpu": cpu_name(),
                             "machine": platform.machine(), "load_average_at_end": os.getloadavg(),
                             "onnxruntime": __import__("onnxruntime").__version__}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
