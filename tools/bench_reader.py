"""Video-level reading speed: avf's readers against TensorFlow's own batched parse, one run.

All readers read the same shards into numpy arrays (ids, labels, mean_rgb, mean_audio), all
check TFRecord CRCs, and all are timed warm: one warm-up pass each, then ``--repeats``
rounds in which every reader makes one full pass in turn (interleaved, so that a change in
machine load hits every reader alike); a reader's time is its best round, in wall time and
in CPU time of the whole process (all threads; far less disturbed by other jobs). avf runs with
every check on (labels against the 3,862-class vocabulary, finite features, schema).

``--baseline REV`` also times the readers of an earlier commit (e.g. the one before a
change), loaded side by side from ``git archive`` under another package name, so that
before and after are measured in the same run. TensorFlow is the reference only: install it
with `pip install -e .[tf]`.

    python tools/bench_reader.py ../shared/data/yt8m-video --baseline 0cdc9cb \\
        -o docs/results/reader_benchmark.json
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from avf.data import expand_sources, iter_batches, iter_records

ROOT = Path(__file__).resolve().parents[1]
#: What the readers import, at any revision (the data package whole: its modules change as it is reorganised).
_BASELINE_FILES = ("avf/__init__.py", "avf/errors.py", "avf/documents.py", "avf/data")


def load_baseline(rev: str, into: Path):
    """The avf.data of commit ``rev`` as package ``avf_baseline`` (imports rewritten)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    present = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", commit, "--", *_BASELINE_FILES],
                             capture_output=True, text=True, check=True).stdout.split()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, *present], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            text = tar.extractfile(member).read().decode()
            text = re.sub(r"\bavf\.", "avf_baseline.", text)
            target = into / member.name.replace("avf/", "avf_baseline/", 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("avf_baseline.data"), commit


def _head() -> str | None:
    """The commit measured (with "+dirty" when the reader has uncommitted changes)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *_BASELINE_FILES],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def count_records(reader, files, classes) -> int:
    return sum(1 for _ in reader(files, num_classes=classes))


def count_batches(reader, files, batch_size: int, classes) -> int:
    return sum(len(batch) for batch in reader(files, batch_size, num_classes=classes))


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
    parser.add_argument("--classes", type=int, default=3862, help="vocabulary size labels are checked against")
    parser.add_argument("--baseline", help="also time the readers of this git revision (before/after in one run)")
    parser.add_argument("-o", "--output", type=Path, help="write results as JSON here")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    files = expand_sources(args.data)
    tf_name = "tensorflow tf.data + parse_example (batched)"
    runs = [
        (tf_name, lambda: tensorflow_batches(files, args.batch_size)),
        ("avf iter_batches", lambda: count_batches(iter_batches, files, args.batch_size, args.classes)),
        ("avf iter_records", lambda: count_records(iter_records, files, args.classes)),
    ]
    baseline_commit = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            old, baseline_commit = load_baseline(args.baseline, Path(tmp))
            runs += [
                (f"avf iter_batches at {baseline_commit} (before)",
                 lambda: count_batches(old.iter_batches, files, args.batch_size, args.classes)),
                (f"avf iter_records at {baseline_commit} (before)",
                 lambda: count_records(old.iter_records, files, args.classes)),
            ]
        best = {name: float("inf") for name, _ in runs}
        best_cpu = dict(best)
        counts = {}
        for name, fn in runs:  # warm-up: page cache, lazy imports, TF graph tracing
            counts[name] = fn()
        for _ in range(args.repeats):
            for name, fn in runs:
                start, start_cpu = time.perf_counter(), time.process_time()
                count = fn()
                best[name] = min(best[name], time.perf_counter() - start)
                best_cpu[name] = min(best_cpu[name], time.process_time() - start_cpu)
                assert count == counts[name], f"{name}: {count} records, then {counts[name]}"
    results = {}
    tf_rate = counts[tf_name] / best[tf_name]
    tf_cpu_rate = counts[tf_name] / best_cpu[tf_name]
    for name, _ in runs:
        rate, cpu_rate = counts[name] / best[name], counts[name] / best_cpu[name]
        results[name] = {"records": counts[name], "seconds": round(best[name], 4), "records_per_s": round(rate),
                         "ratio_to_tensorflow": round(rate / tf_rate, 3), "cpu_seconds": round(best_cpu[name], 4),
                         "records_per_cpu_s": round(cpu_rate), "cpu_ratio_to_tensorflow": round(cpu_rate / tf_cpu_rate, 3)}
        print(f"{name:52s} {counts[name]:8d} records  {rate:10,.0f} records/s  {rate / tf_rate:5.2f}x TensorFlow"
              f"  {cpu_rate:10,.0f} records/CPU-s  {cpu_rate / tf_cpu_rate:5.2f}x", flush=True)

    import tensorflow as tf

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    report = {
        "benchmark": "video-level TFRecord read to numpy, warm page cache, best of interleaved rounds",
        "method": "each reader: one warm-up pass, then --repeats rounds in which every reader makes one full pass "
        "in turn; a reader's time is its best round; all readers verify TFRecord CRCs; avf checks labels against "
        "--classes, finite features and the schema; records/s = videos read / wall seconds (what a user waits); "
        "records/CPU-s = videos read / CPU seconds of the whole process, all threads (TensorFlow parses on several "
        "threads, avf decodes on one and reads ahead on a second), which other jobs on the machine disturb far less. "
        "Ratios are from one run on "
        "one machine: other processes may have been sharing it, absolute rates vary with that load, the ratios "
        "much less",
        "conditions": {
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "classes": args.classes,
            "avf_commit": _head(),
            "baseline_commit": baseline_commit,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_after": None if load is None else [round(x, 2) for x in load],
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
