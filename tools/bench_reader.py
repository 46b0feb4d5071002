"""Video-level reading speed: avf's readers against TensorFlow's own batched parse, one run.

Both sides read the same shards into numpy arrays (ids, labels, mean_rgb, mean_audio), both
check TFRecord CRCs, and both are timed warm (best of --repeats passes after one warm-up pass,
so the page cache holds the files for everyone). TensorFlow is the reference only: install it
with `pip install -e .[tf]`.

    python tools/bench_reader.py ../shared/data/yt8m-video -o docs/results/reader_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from avf.data import expand_sources, iter_batches, iter_records


def _time(fn, repeats: int) -> tuple[float, int]:
    fn()  # warm-up: page cache, lazy imports, TF graph tracing
    best, count = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return best, count


def avf_records(files) -> int:
    return sum(1 for _ in iter_records(files, num_classes=None))


def avf_batches(files, batch_size: int) -> int:
    return sum(len(batch) for batch in iter_batches(files, batch_size, num_classes=None))


def tensorflow_batches(files, batch_size: int) -> int:
    import tensorflow as tf

    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
        "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
        "mean_audio": tf.io.FixedLenFeature([128], tf.float32),
    }
    dataset = (
        tf.data.TFRecordDataset([str(f) for f in files])
        .batch(batch_size)
        .map(lambda serialized: tf.io.parse_example(serialized, spec))
    )
    # Explicit .numpy() per tensor: as_numpy_iterator() converts the sparse labels tensor
    # ~200x slower (about 1.1k records/s here), which would make TensorFlow look bad unfairly.
    count = 0
    for parsed in dataset:
        ids = parsed["id"].numpy()
        parsed["mean_rgb"].numpy(), parsed["mean_audio"].numpy()
        parsed["labels"].values.numpy(), parsed["labels"].indices.numpy()
        count += len(ids)
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="video-level shards: file, directory or glob")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, help="write results as JSON here")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    files = expand_sources(args.data)
    results = {}
    runs = [
        ("tensorflow tf.data + parse_example (batched)", lambda: tensorflow_batches(files, args.batch_size)),
        ("avf iter_batches", lambda: avf_batches(files, args.batch_size)),
        ("avf iter_records (one record at a time)", lambda: avf_records(files)),
    ]
    for name, fn in runs:
        seconds, count = _time(fn, args.repeats)
        results[name] = {"records": count, "seconds": round(seconds, 4), "records_per_s": round(count / seconds)}
        print(f"{name:48s} {count:8d} records  {count / seconds:10,.0f} records/s", flush=True)

    tf_rate = results[runs[0][0]]["records_per_s"]
    for name, _ in runs[1:]:
        results[name]["ratio_to_tensorflow"] = round(results[name]["records_per_s"] / tf_rate, 3)
        print(f"{name:48s} {results[name]['ratio_to_tensorflow']:.2f}x TensorFlow")

    import tensorflow as tf

    report = {
        "benchmark": "video-level TFRecord read to numpy, warm page cache, best of repeats",
        "method": "each reader: one warm-up pass, then best wall time of --repeats full passes; "
        "both sides verify TFRecord CRCs; records/s = videos read / seconds",
        "conditions": {
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "tensorflow": tf.__version__,
            "protobuf": __import__("google.protobuf").protobuf.__version__,
        },
        "results": results,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
