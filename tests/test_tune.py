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

from avf.data.synthetic import synthesize  # noqa: E402
from avf.deploy.artifact import open_artifact  # noqa: E402
from avf.deploy.manifest import read_manifest, verify_manifest  # noqa: E402
from avf.train.loop import TrainSettings, train  # noqa: E402
from cli_harness import cli  # noqa: E402

FAST = ["--ratio-step", "0.3", "--calib-size", "256", "--duration", "0.1", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(small_run):
    """The session's small Attend-Fusion: the searches write only under their own tmp_path."""
    return small_run


def tune(capsys, *args) -> tuple[int, str, str]:
    """``avf tune ARGS`` in this process, through the tests' one CLI harness: (exit code, stdout, stderr)."""
    return cli("tune", *args)


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
    variants = [r for r in records if "int4_block" in r and (r["int4_block"], r["int4_accuracy_level"]) != (32, 4)]
    assert len(records) - len(variants) < 4 * 3 + 4 and len(variants) <= 3 + 4
    # int4's block size and accuracy level are searched at its edge (x86-cpu is a CPU profile), each row stopping
    # at the first block that fails, its retention per block recorded.
    rows = state["strategy"]["int4_blocks"]
    assert rows and "int4_blocks" in state["space"] and "GAP retention by block size 32: " in stdout
    by_id = {r["id"]: r for r in records}
    for row in rows:
        built = [int(block) for block in row["retention"]]
        assert built == [32, 64, 128, 256][:len(built)]
        for block in built:
            suffix = (f"-b{block}" if block != 32 else "") + ("-l1" if row["accuracy_level"] == 1 else "")
            record = by_id[f"r{round(row['ratio'] * 100):02d}-int4{suffix}"]
            assert record["retention"] == row["retention"][str(block)]
            assert (record["int4_block"], record["int4_accuracy_level"]) == (block, row["accuracy_level"])
            stage = json.loads((out / record["artifact"] / "report.json").read_text())["stages"][-1]
            assert (stage["block_size"], stage["accuracy_level"]) == (block, row["accuracy_level"])
        passing = [b for b in built if row["retention"][str(b)] >= 0.99]
        assert passing == built[:len(passing)] and len(built) - len(passing) <= 1  # stops at the first failure
        assert row["largest_passing_block"] == (passing[-1] if passing else None)
    # The fast end of the front is filled in: INT8 from FP32's first failing ratio (or the grid's end) on.
    fill = state["strategy"]["front_fill"]
    by_id = {r["id"]: r for r in records}
    assert fill and all(i.endswith("-int8-percentile") for i in fill)
    assert by_id[fill[-1]]["ratio"] == max(r["ratio"] for r in records)  # the grid's last ratio
    # The choice: meets every constraint, best by latency among those that do.
    meeting = [r for r in records if r["meets"]]
    assert state["chosen"]["id"] == min(meeting, key=lambda r: r["cost"]["latency_p50_ms"])["id"]
    # A candidate is held to its retention's 95% lower bound (paired bootstrap over the selection videos), which
    # every record carries beside the measured retention.
    assert state["constraints"]["retention_held"].startswith("its one-sided 95% lower bound")
    for r in records:
        assert r["retention_lower"] is not None
        assert r["meets"] == (r["retention_lower"] >= 0.99 and r["cost"]["latency_p99_ms"] <= 1000
                              and r["cost"]["memory_mib"] <= 1024)
        assert r["meets"] or r["rejected_because"]
        if r["retention"] >= 0.99 > r["retention_lower"]:  # the estimate alone would have passed it
            assert any("95% lower bound" in reason for reason in r["rejected_because"])
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
    assert "held-out (--test" in stdout and test["retention_bound"]["confidence"] == 0.95
    assert (f"videos): GAP retention {test['retention']:.4f} (its 95% lower bound "
            f"{test['retention_bound']['lower']:.4f})") in stdout
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


# ----------------------------------------------------------------------------- a rerun trusts only what verifies

#: A two-candidate search (fold only, and prune 0.45, both FP32, no distillation): seconds per run.
TINY = ["--ratio-step", "0.45", "--finetune-epochs", "0", "--min-retention", "0.5", "--threads", "1"]


def tune_quietly(*args) -> tuple[int, str, str]:
    """``avf tune ARGS`` in this process, without capsys (module fixtures use it too): (exit code, stdout, stderr)."""
    return cli("tune", *args)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint (width 16, 200 videos, one epoch) and a profile that computes in FP32 only."""
    from avf.deploy.profiles import load_profile

    root = tmp_path_factory.mktemp("tiny")
    synthesize(root / "data", videos=200, classes=12, seed=3)
    train(TrainSettings(model="attend_fusion", train=str(root / "data" / "train*.tfrecord"),
                        val=str(root / "data" / "validate*.tfrecord"), out=str(root / "run"), epochs=1, batch_size=64,
                        lr=3e-3, width=16, attention_width=16, heads=2, seed=0, threads=1))
    profile = load_profile("jetson-orin-nano-8gb").model_dump()
    profile.update(name="fp32-only", precisions=["fp32"], peak_tflops={"fp32": profile["peak_tflops"]["fp32"]})
    (root / "fp32-only.yaml").write_text(json.dumps(profile))
    return root, root / "run" / "best.pt", root / "fp32-only.yaml"


@pytest.fixture(scope="module")
def finished(tiny):
    """A finished tiny search; each test works on its own copy."""
    root, checkpoint, profile = tiny
    out = root / "finished"
    code, _, stderr = tune_quietly(checkpoint, "--profile", profile, "-o", out, *TINY)
    assert code == 0, stderr
    assert len(list((out / "records").glob("r*.json"))) == 2
    return out


def copy_of(finished: Path, tmp_path: Path) -> tuple[Path, dict]:
    import shutil

    out = tmp_path / "tune"
    shutil.copytree(finished, out)
    return out, json.loads((out / "tune.json").read_text())


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def append_a_byte(out: Path, chosen: str, other: str) -> None:
    with (out / "candidates" / chosen / "model.onnx").open("ab") as fh:
        fh.write(b"\0")


def make_the_other_win(out: Path, chosen: str, other: str) -> None:
    def win(record):
        record["cost"].update(latency_p50_ms=0.0, latency_p99_ms=0.0)
        record.update(retention=1.0, meets=True, rejected_because=[])

    edit_json(out / "records" / f"{other}.json", win)


def reshape_the_record(out: Path, chosen: str, other: str) -> None:
    (out / "records" / f"{chosen}.json").write_text('{"id": 3}')  # valid JSON, not a record


def delete_the_candidate(out: Path, chosen: str, other: str) -> None:
    import shutil

    shutil.rmtree(out / "candidates" / chosen)


#: case -> (what is done to the finished folder, whose record the note names, what the note says)
TAMPERING = {
    "chosen model.onnx edited": (append_a_byte, "chosen", "does not match its recorded sha256"),
    "record edited to win": (make_the_other_win, "other", "edited since it was written"),
    "record of the wrong shape": (reshape_the_record, "chosen", "field 'id'"),
    "chosen candidate deleted": (delete_the_candidate, "chosen", "is missing"),
}


@pytest.mark.parametrize("tampering", TAMPERING, ids=list(TAMPERING))
def test_a_tampered_record_or_candidate_is_recomputed_and_never_shipped(tiny, finished, tmp_path, tampering):
    from avf.data.vocabulary import file_sha256
    from avf.tune.records import verified_record

    _, checkpoint, profile = tiny
    out, state = copy_of(finished, tmp_path)
    chosen = state["chosen"]["id"]
    other = next(p.stem for p in (out / "records").glob("r*.json") if p.stem != chosen)
    tamper, which, problem = TAMPERING[tampering]
    tamper(out, chosen, other)
    victim = chosen if which == "chosen" else other
    code, _, stderr = tune_quietly(checkpoint, "--profile", profile, "-o", out, *TINY)
    assert code == 0 and "Traceback" not in stderr, stderr
    notes = [line for line in stderr.splitlines() if line.startswith("note: records/")]
    assert len(notes) == 1 and f"records/{victim}.json" in notes[0] and problem in notes[0], stderr
    assert "recomputed" in notes[0] and f"candidate {victim}: building" in stderr
    # Rebuilt: its record verifies again, the choice is the honest one, and what is shipped is what was scored.
    for path in (out / "records").glob("r*.json"):
        assert verified_record(out, path)[1] is None
    assert json.loads((out / "tune.json").read_text())["chosen"]["id"] == chosen
    record = json.loads((out / "records" / f"{chosen}.json").read_text())
    assert file_sha256(out / "artifact" / "model.onnx") == record["files"]["model.onnx"]
    assert open_artifact(out / "artifact", deploying=True)["accepted"]
    assert verify_manifest(out / "manifest.json") == []
    assert json.loads((out / "records" / f"{other}.json").read_text())["cost"]["latency_p50_ms"] > 0


def test_a_candidate_changed_after_it_was_verified_is_not_shipped(tiny, finished, tmp_path):
    """The chosen candidate is checked as the copy that would replace OUT/artifact: a change after the
    search verified it (another process, a disk fault) keeps the previous artifact."""
    from avf.deploy.profiles import load_profile
    from avf.errors import InputError
    from avf.tune.records import verified_record
    from avf.tune.run import _ship
    from avf.tune.search import Context, TuneOptions

    _, checkpoint, profile = tiny
    out, state = copy_of(finished, tmp_path)
    chosen = state["chosen"]["id"]
    record, problem = verified_record(out, out / "records" / f"{chosen}.json")
    assert problem is None
    shipped = files_under(out / "artifact")
    with (out / "candidates" / chosen / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    ctx = Context(options=TuneOptions(checkpoint=checkpoint, profile=str(profile), out=out),
                  profile=load_profile(profile), out=out, data={"test": None}, max_latency_ms=10.0,
                  max_memory_mib=2048.0, measure_reason="predicted here", cache=None)
    with pytest.raises(InputError, match="changed during this run"):
        _ship(ctx, record, dict(state))
    assert files_under(out / "artifact") == shipped
    assert [p for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("identity", [None, ["checkpoint"]], ids=["null", "list"])
def test_a_tune_json_of_the_wrong_shape_is_one_error_line(tiny, finished, tmp_path, identity):
    _, checkpoint, profile = tiny
    out, _ = copy_of(finished, tmp_path)
    edit_json(out / "tune.json", lambda state: state.update(identity=identity))
    before = files_under(out)
    code, _, stderr = tune_quietly(checkpoint, "--profile", profile, "-o", out, *TINY)
    assert code == 2 and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error:"), stderr
    assert "tune.json" in stderr and "field 'identity'" in stderr
    assert files_under(out) == before


def test_an_input_replaced_at_the_same_path_is_named_not_mixed(tiny, tmp_path):
    import shutil

    root, _, profile = tiny
    inputs = tmp_path / "inputs"
    shutil.copytree(root / "data", inputs / "data")
    shutil.copy(root / "run" / "best.pt", inputs / "model.pt")
    out = tmp_path / "tune"
    args = [inputs / "model.pt", "--profile", profile, "-o", out, "--eval", inputs / "data" / "validate*.tfrecord",
            "--test", inputs / "data" / "test*.tfrecord", *TINY, "--time-budget", "0.00001"]
    code, _, stderr = tune_quietly(*args)
    assert code in (0, 3) and (out / "tune.json").is_file(), stderr  # the budget ends the search at once
    other_shard = sorted((inputs / "data").glob("train*.tfrecord"))[0].read_bytes()
    replacements = [(sorted((inputs / "data").glob("validate*.tfrecord"))[0], other_shard, "--eval data"),
                    (sorted((inputs / "data").glob("test*.tfrecord"))[0], other_shard, "--test data"),
                    (inputs / "model.pt", (root / "run" / "last.pt").read_bytes(), "checkpoint's content")]
    for path, replacement, named in replacements:
        original = path.read_bytes()
        path.write_bytes(replacement)
        before = files_under(out)
        code, _, stderr = tune_quietly(*args)
        assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
        assert "other settings" in stderr and named in stderr, stderr
        assert files_under(out) == before
        path.write_bytes(original)
    code, _, stderr = tune_quietly(*args)
    assert code in (0, 3) and "resuming:" in stderr, stderr


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tiny, tmp_path):
    _, checkpoint, _ = tiny
    out = tmp_path / "busy"
    args = [checkpoint, "--profile", "x86-cpu", "-o", out, *TINY, "--duration", "5"]  # 5 s per candidate
    first = subprocess.Popen([sys.executable, "-m", "avf", "tune", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "tune.json").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None and (out / "tune.json").is_file(), "the first run did not start its search"
        state = (out / "tune.json").read_bytes()
        code, _, stderr = tune_quietly(*args)
        assert first.poll() is None, "the first run ended before the second was tried"
        assert code == 2 and len(stderr.strip().splitlines()) == 1 and stderr.startswith("error:"), stderr
        assert "another avf process is using this tune folder" in stderr
        assert (out / "tune.json").read_bytes() == state
    finally:
        first.terminate()
        first.wait(timeout=120)


# ----------------------------------------------------------------------------- int4 block size and accuracy level


def test_int4_blocks_grow_until_one_fails_and_each_loss_is_recorded(monkeypatch):
    """At int4's largest passing ratio the blocks grow at accuracy level 4 until one fails retention; at its first
    failing ratio accuracy level 1 gets a chance; the ids stay those of earlier searches for the defaults."""
    from types import SimpleNamespace

    from avf.tune import search as searching
    from avf.tune.space import Setting

    # Retention falls with the ratio and the block; level 1 (float32 arithmetic) keeps 0.012 more.
    def retention(s):
        return 1.0 - s.ratio / 10 - {32: 0.0, 64: 0.001, 128: 0.004, 256: 0.02}[s.int4_block] \
            + (0.012 if s.int4_accuracy_level == 1 else 0.0)

    built = []
    monkeypatch.setattr(searching, "evaluate", lambda ctx, s: built.append(s.id) or {"retention": retention(s)})
    ctx = SimpleNamespace(options=SimpleNamespace(min_retention=0.97, retention_confidence=0.0))
    summary = {"boundaries": {}}
    grid = [0.0, 0.2, 0.4, 0.6]  # block 32 at level 4 passes up to 0.2 (0.98) and fails at 0.4 (0.96)
    searching._int4_blocks(ctx, grid, 1, 2, 4, summary)
    assert built == ["r20-int4", "r20-int4-b64", "r20-int4-b128", "r20-int4-b256",  # 256 fails: the row stops
                     "r40-int4-l1", "r40-int4-b64-l1", "r40-int4-b128-l1"]  # b128 at level 1 fails
    first, second = summary["int4_blocks"]
    assert first["accuracy_level"] == 4 and first["largest_passing_block"] == 128
    assert first["retention"]["256"] == pytest.approx(0.96)
    assert second["accuracy_level"] == 1 and second["ratio"] == 0.4 and second["largest_passing_block"] == 64
    assert summary["boundaries"]["int4 (accuracy level 1)"] == {"largest_passing_ratio": 0.4}
    assert Setting(0.2, "int4").id == Setting(0.2, "int4", int4_block=32, int4_accuracy_level=4).id == "r20-int4"
    # FP32 fails at 0.4 too (upper = 2): no level-1 row; int4 fails at 0 (low = -1): no block row.
    built.clear()
    summary = {"boundaries": {}}
    searching._int4_blocks(ctx, grid, -1, 0, 0, summary)
    assert built == [] and summary["int4_blocks"] == []
