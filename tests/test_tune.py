"""avf tune: a small search end to end (measured on x86-cpu, predicted for a Jetson), the exit codes,
the working folder's rules, a kill -9 in mid-search resumed, and INT8 rescued at the edge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from avf.cli.app import run  # noqa: E402
from avf.data.synthetic import synthesize  # noqa: E402
from avf.deploy.artifact import open_artifact  # noqa: E402
from avf.deploy.manifest import read_manifest, verify_manifest  # noqa: E402
from avf.train.loop import TrainSettings, train  # noqa: E402

FAST = ["--ratio-step", "0.3", "--calib-size", "256", "--bench-duration", "0.1", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    synthesize(root / "data", videos=800, classes=24, seed=3)
    train(TrainSettings(model="attend_fusion", train=str(root / "data" / "train*.tfrecord"),
                        val=str(root / "data" / "validate*.tfrecord"), out=str(root / "run"), epochs=3,
                        batch_size=64, lr=3e-3, width=64, attention_width=64, heads=4, seed=0))
    checkpoint = root / "attend_fusion.pt"
    checkpoint.write_bytes((root / "run" / "best.pt").read_bytes())
    return root, checkpoint


def tune(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        run(["tune", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def candidates(out: Path) -> list[dict]:
    return json.loads((out / "candidates.json").read_text())["candidates"]


def test_small_search_measured_on_this_cpu(trained, tmp_path, capsys):
    root, checkpoint = trained
    out = tmp_path / "tune"
    started = time.monotonic()
    code, stdout, stderr = tune(capsys, checkpoint, "--profile", "x86-cpu", "-o", out, "--max-latency-ms", "1000",
                                "--test", root / "data" / "test*.tfrecord", *FAST)
    assert code == 0, stderr
    assert time.monotonic() - started < 120
    records = candidates(out)
    state = json.loads((out / "tune.json").read_text())
    # Every candidate: measured by avf-bench here, an ordinary artifact, one CSV row.
    assert records and all(r["cost"]["status"] == "measured" for r in records)
    assert all((out / r["artifact"] / "report.json").is_file() and (out / r["bench"]).is_file() for r in records)
    assert len((out / "candidates.csv").read_text().strip().splitlines()) == len(records) + 1
    assert {r["precision"] for r in records} == {"fp32", "int8", "int8-dynamic", "int4"}  # x86-cpu: no fp16
    assert "fp16" in state["space"]["not_searched"]
    # Bisection, not the grid: at most log2 probes per precision plus the edge variants and the front's fill.
    assert len(records) < 4 * 3 + 4
    # The fast end of the front is filled in: INT8 from FP32's first failing ratio (or the grid's end) on.
    fill = state["strategy"]["front_fill"]
    by_id = {r["id"]: r for r in records}
    assert fill and all(i.endswith("-int8-percentile") for i in fill)
    assert by_id[fill[-1]]["ratio"] == max(r["ratio"] for r in records)  # the grid's last ratio
    # The choice: meets every constraint, best by latency among those that do.
    meeting = [r for r in records if r["meets"]]
    assert state["chosen"]["id"] == min(meeting, key=lambda r: r["cost"]["latency_p50_ms"])["id"]
    for r in records:
        assert r["meets"] == (r["retention"] >= 0.99 and r["cost"]["latency_p99_ms"] <= 1000
                              and r["cost"]["memory_mib"] <= 1024)
        assert r["meets"] or r["rejected_because"]
    # The chosen artifact is an ordinary avf-compress artifact, its manifest verifies, its bench is its own.
    report = open_artifact(out / "artifact", deploying=True)
    assert report["files"]["model.onnx"]["sha256"] == \
        json.loads((out / state["chosen"]["artifact"] / "report.json").read_text())["files"]["model.onnx"]["sha256"]
    assert verify_manifest(out / "manifest.json") == []
    manifest = read_manifest(out / "manifest.json")
    assert manifest.artifact_dir == "artifact" and manifest.latency_p50.status == "measured"
    assert (out / "pareto.png").stat().st_size > 1000
    assert "Pareto front: retention vs latency" in stdout and "(measured)" in stdout
    # Held-out retention is reported separately from the selection figure.
    test = state["chosen"]["test"]
    assert test["videos"] > 0 and 0 < test["retention"] and test["data"]["files"] == 1
    assert "held-out (--test" in stdout
    # Pareto fronts: nothing on them is dominated by another candidate.
    for cost, key in (("latency", "latency_p50_ms"), ("size", "size_bytes")):
        front = [r for r in records if r["id"] in state["pareto"][cost]]
        for f in front:
            assert not any(o["retention"] > f["retention"] and o["cost"][key] < f["cost"][key] for o in records)

    # A rerun of the same command builds nothing again.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("r*.json")}
    code, _, stderr = tune(capsys, checkpoint, "--profile", "x86-cpu", "-o", out, "--max-latency-ms", "1000",
                           "--test", root / "data" / "test*.tfrecord", *FAST)
    assert code == 0 and f"resuming: {len(records)} candidates already done" in stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("r*.json")} == before
    # Other settings in the same folder: refused (one line, exit 2) unless --force starts over.
    code, _, stderr = tune(capsys, checkpoint, "--profile", "x86-cpu", "-o", out, "--min-retention", "0.5", *FAST)
    assert code == 2 and stderr.startswith("error:") and "other settings" in stderr and len(stderr.splitlines()) == 1


def test_jetson_costs_are_predicted_and_labelled(trained, tmp_path, capsys):
    _, checkpoint = trained
    out = tmp_path / "jetson"
    code, stdout, stderr = tune(capsys, checkpoint, "--profile", "jetson-orin-nano-8gb", "-o", out, *FAST)
    assert code == 0, stderr
    records = candidates(out)
    assert records and all(r["cost"]["status"] == "predicted" for r in records)
    assert {r["precision"] for r in records} <= {"fp32", "fp16", "int8"}  # TensorRT formats only
    assert {"int8-dynamic", "int4"} <= set(json.loads((out / "tune.json").read_text())["space"]["not_searched"])
    state = json.loads((out / "tune.json").read_text())
    assert state["costs"].startswith("predicted") and "int8-dynamic" in state["space"]["not_searched"]
    assert "torch-tensorrt" in state["space"]["backends"]
    assert "PREDICTED" in stdout and "(predicted)" in stdout
    manifest = read_manifest(out / "manifest.json")
    assert manifest.latency_p99.status == "predicted" and manifest.memory.status == "predicted"
    # It chose by the prediction: the smallest predicted latency among those meeting every constraint.
    meeting = [r for r in records if r["meets"]]
    assert state["chosen"]["id"] == min(meeting, key=lambda r: (r["cost"]["latency_p50_ms"], -r["retention"]))["id"]

    # Nothing can meet a 1 ns budget: exit 3, the closest candidate and what it misses, no artifact.
    out2 = tmp_path / "impossible"
    code, _, stderr = tune(capsys, checkpoint, "--profile", "jetson-orin-nano-8gb", "-o", out2,
                           "--max-latency-ms", "0.000001", *FAST)
    assert code == 3
    assert "no candidate meets every constraint" in stderr and "closest:" in stderr and "p99 latency" in stderr
    assert not (out2 / "artifact").exists() and not (out2 / "manifest.json").exists()
    assert (out2 / "candidates.csv").is_file()


def test_int8_is_rescued_at_the_edge_by_calibration_or_mixed_precision(trained, tmp_path, capsys):
    """Where INT8 falls short but FP32 passes, the other calibrations and then INT8 with the most
    sensitive layers kept float are tried (sensitivity measured per layer)."""
    _, checkpoint = trained
    first = tmp_path / "first"
    assert tune(capsys, checkpoint, "--profile", "jetson-orin-nano-8gb", "-o", first, *FAST)[0] == 0
    records = {r["id"]: r for r in candidates(first)}
    fp32, int8 = records["r00-fp32"]["retention"], records["r00-int8-percentile"]["retention"]
    if not int8 < fp32:
        pytest.skip(f"INT8 kept as much GAP as FP32 here ({int8} >= {fp32}): nothing to rescue")
    threshold = (fp32 + int8) / 2  # FP32 passes at ratio 0, INT8 with percentile calibration does not
    out = tmp_path / "edge"
    code, _, stderr = tune(capsys, checkpoint, "--profile", "jetson-orin-nano-8gb", "-o", out,
                           "--min-retention", f"{threshold:.9f}", *FAST)
    assert code == 0, stderr
    ids = {r["id"]: r for r in candidates(out)}
    assert "r00-int8-entropy" in ids
    rescued = [r for r in ids.values() if r["precision"] == "int8" and r["meets"]]
    if not ids["r00-int8-entropy"]["meets"]:
        assert "r00-int8-minmax" in ids
    if not any(ids[f"r00-int8-{m}"]["meets"] for m in ("entropy", "minmax") if f"r00-int8-{m}" in ids):
        sensitivity = json.loads((out / "records" / "sensitivity-r00.json").read_text())
        losses = [layer["gap_lost"] for layer in sensitivity["layers"]]
        assert losses == sorted(losses, reverse=True) and len(losses) >= 5
        kept = [r for r in ids.values() if r["keep_float"]]
        assert kept and kept[0]["keep_float"] == [sensitivity["layers"][0]["node"]]
        report = json.loads((out / kept[0]["artifact"] / "report.json").read_text())
        assert report["stages"][-1]["kept_float"] == kept[0]["keep_float"]
    for record in rescued:
        assert record["retention"] >= threshold


def test_kill_9_mid_search_then_the_same_command_resumes(trained, tmp_path):
    _, checkpoint = trained
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "avf", "tune", str(checkpoint), "--profile", "x86-cpu", "-o", str(out),
               "--max-latency-ms", "1000", *FAST]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out / "records").glob("r*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the search finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = {p.name: p.read_bytes() for p in (out / "records").glob("r*.json")}
    assert len(done) >= 2
    assert not (out / "candidates.json").exists()  # it died mid-search

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(done)} candidates already done" in resumed.stderr
    after = {p.name: p.read_bytes() for p in (out / "records").glob("r*.json")}
    assert all(after[name] == data for name, data in done.items())  # finished work kept, not redone
    assert len(after) > len(done)
    leftovers = [p for p in out.rglob(".*") if ".tmp" in p.name or p.name.endswith(".old")]
    assert leftovers == []
    assert verify_manifest(out / "manifest.json") == []


def test_out_that_is_not_ours_is_refused_even_with_force(trained, tmp_path, capsys):
    _, checkpoint = trained
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        code, _, stderr = tune(capsys, checkpoint, "--profile", "x86-cpu", "-o", foreign, *FAST, *extra)
        assert code == 2 and stderr.startswith("error:") and len(stderr.splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    code, _, stderr = tune(capsys, checkpoint, "--profile", "no-such-board", "-o", tmp_path / "x", *FAST)
    assert code == 2 and "no such profile" in stderr
    code, _, stderr = tune(capsys, checkpoint, "--profile", "x86-cpu", "-o", tmp_path / "y", "--objective", "speed")
    assert code == 2 and stderr.startswith("error: --objective")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_ctrl_c_keeps_every_finished_candidate_and_leaves_nothing_partial(trained, tmp_path):
    _, checkpoint = trained
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "avf", "tune", str(checkpoint), "--profile", "jetson-orin-nano-8gb", "-o", str(out),
               *FAST]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out / "records").glob("r*.json"))) >= 1:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the search finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted (SIGINT)" in stderr, stderr
    records = list((out / "records").glob("r*.json"))
    assert records and all((out / json.loads(p.read_text())["artifact"] / "report.json").is_file() for p in records)
    assert [p for p in out.rglob(".*") if ".tmp" in p.name] == []
    finished = {p.name for p in (out / "candidates").iterdir()}
    assert finished >= {json.loads(p.read_text())["id"] for p in records}
