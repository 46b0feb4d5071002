"""``avf demo``: the whole path on one folder -- data, train, compress, bench, manifest, summary.

Synthetic YouTube-8M-format data by default (CPU, minutes); ``--data DIR`` runs it on real
shards instead (the last fifth of the shards, in name order, is held out for validation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from avf.atomic import atomic_write_text, check_output, folder_lock, remove_temporaries
from avf.errors import InputError


def _is_demo_folder(folder: Path) -> bool:
    """A folder an earlier ``avf demo`` wrote (finished or not), which ``--force`` may reuse."""
    return any((folder / name).exists() for name in ("summary.json", "run/last.pt", "data/synthesis.json",
                                                      "train_store/manifest.json"))


def run_demo(out: Path, data: str | None = None, epochs: int = 3, videos: int = 4000, classes: int = 100,
             bench_seconds: float = 2.0, threads: int | None = None, force: bool = False,
             say: Callable[[str], None] = print) -> dict:
    """Run every stage into ``out``, a folder of ours kept between runs (``--force`` reuses it): checked like
    any output, locked for the whole run (a second demo on it is refused), swept of the temporaries a killed
    run left; every file and folder in it is written atomically by the stage that makes it."""
    check_output(out, force=force, directory=True, ours=_is_demo_folder, inputs=[data], what="demo folder")
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "demo folder"):
        remove_temporaries(out)
        return _run_stages(out, data, epochs, videos, classes, bench_seconds, threads, say)


def _run_stages(out: Path, data: str | None, epochs: int, videos: int, classes: int, bench_seconds: float,
                threads: int | None, say: Callable[[str], None]) -> dict:
    from avf.compress.pipeline import CompressionRejected, CompressOptions, compress
    from avf.data.feature_store import convert
    from avf.data.sources import expand_sources
    from avf.data.synthetic import synthesize
    from avf.deploy.bench_record import read_bench
    from avf.deploy.manifest import build_manifest, write_manifest
    from avf.deploy.profiles import load_profile
    from avf.train.loop import TrainSettings, train

    if data is None:
        say(f"1/6 data: {videos:,} synthetic YouTube-8M-format videos, {classes} classes -> {out / 'data'}")
        synthesize(out / "data", videos=videos, classes=classes, seed=0, force=True)
        train_spec, val_spec = str(out / "data" / "train*.tfrecord"), str(out / "data" / "validate*.tfrecord")
    else:
        shards = expand_sources(data)
        if len(shards) < 2:
            raise InputError(data, "need at least 2 shards (training and held-out)")
        cut = max(1, len(shards) * 4 // 5)
        say(f"1/6 data: {len(shards)} shards from {data}: {cut} to train, {len(shards) - cut} held out")
        convert(shards[:cut], out / "train_store", force=True)
        convert(shards[cut:], out / "val_store", force=True)
        train_spec, val_spec = str(out / "train_store"), str(out / "val_store")
    say(f"2/6 train: attend_fusion (paper size), {epochs} epochs, AdamW lr 1e-3 cosine")
    run = out / "run"
    train(TrainSettings(model="attend_fusion", train=train_spec, val=val_spec, out=str(run), epochs=epochs,
                        batch_size=256, lr=1e-3, schedule="cosine", seed=0), force=True)
    checkpoint = run / "best.pt"
    say("3/6 compress: fold + static INT8 (calibrated on the training data, gated on the held-out data)")
    options = CompressOptions(checkpoint=checkpoint, out=out / "attend_fusion.int8", precision="int8", force=True)
    try:
        report = compress(options, say=lambda line: say("    " + line))
    except CompressionRejected as rejected:
        report = rejected.report  # written and marked rejected: its figures still go into the summary
    say("4/6 bench: PyTorch FP32 eager checkpoint and the INT8 artifact, the same way")
    benches = {}
    for name, target in (("fp32", checkpoint), ("int8", out / "attend_fusion.int8")):
        # A fresh process per target, so resident memory and warm caches belong to that model alone.
        bench_json = out / f"bench_{name}.json"
        command = [sys.executable, "-m", "avf", "bench", str(target), "--duration", str(bench_seconds),
                   "-o", str(bench_json), "--force"] + (["--threads", str(threads)] if threads else [])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"avf bench {target} failed: {result.stderr.strip()[-500:]}")
        benches[name] = read_bench(bench_json)
    say("5/6 manifest: x86-cpu profile, measured figures from the INT8 bench")
    profile = load_profile("x86-cpu")
    deployable, reasons = False, [f"rejected by the retention gate: {report.reason}; no manifest was written"]
    (out / "manifest.json").unlink(missing_ok=True)  # one from an earlier run must not pass for this one's
    if report.accepted:
        manifest = build_manifest(out / "attend_fusion.int8", profile, benches["int8"], manifest_path=out / "manifest.json")
        write_manifest(manifest, out / "manifest.json", force=True)
        deployable, reasons = manifest.decision.deployable, manifest.decision.reasons
    retention = report.retention
    fp32_ms = benches["fp32"]["scenarios"]["single-stream"]["p50_ms"]
    int8_ms = benches["int8"]["scenarios"]["single-stream"]["p50_ms"]
    summary = {
        "gap_fp32": retention.reference["gap"], "gap_int8": retention.compressed["gap"],
        "gap_retention": retention.ratios["gap"], "f1_fp32": retention.reference["f1"],
        "f1_int8": retention.compressed["f1"],
        "size_fp32_mb": checkpoint.stat().st_size / 1e6,
        "size_int8_mb": report.model_file.bytes / 1e6,
        "latency_fp32_p50_ms": fp32_ms, "latency_int8_p50_ms": int8_ms, "speedup": fp32_ms / int8_ms,
        "deployable": deployable, "reasons": reasons, "profile": profile.name, "folder": str(out),
        "eval_videos": retention.videos,
        "files": sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if not p.name.startswith(".")),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    say("6/6 summary")
    return summary
