"""Training: real steps on small synthetic data, checkpoints, resume, eval, and DDP across 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from avf.data.synthetic import synthesize  # noqa: E402
from avf.errors import InputError  # noqa: E402
from avf.train.checkpoint import load_checkpoint  # noqa: E402
from avf.train.loop import TrainSettings, train  # noqa: E402
from cli_harness import avf_process as avf  # noqa: E402

SMALL = {"width": 64, "attention_width": 64, "heads": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "data"
    synthesize(root, videos=640, classes=20, seed=1)
    return root


def _settings(data, out, **overrides):
    base = {"model": "attend_fusion", "train": str(data / "train*.tfrecord"), "val": str(data / "validate*.tfrecord"),
            "out": str(out), "epochs": 2, "batch_size": 64, "lr": 3e-3, "seed": 0, **SMALL}
    base.update(overrides)
    return TrainSettings(**base)


def test_training_learns_and_eval_reproduces_validation(data, tmp_path):
    result = train(_settings(data, tmp_path / "run", epochs=3))
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_gap"] > 0.3  # far above chance on 20 classes
    for name in ("best.pt", "last.pt", "metrics.csv", "metrics.json"):
        assert (tmp_path / "run" / name).is_file()
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["model"]["name"] == "attend_fusion" and best["num_classes"] == 20
    assert best["vocabulary_sha256"] and all(len(s["sha256"]) == 64 for s in best["data"]["train"])
    # `avf eval` on the validation data reproduces the recorded numbers.
    out = avf("eval", tmp_path / "run" / "best.pt", "--data", data / "validate0000.tfrecord", "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)["metrics"]
    for key in ("gap", "map", "hit_at_one", "perr", "f1"):
        assert metrics[key] == pytest.approx(best["metrics"][f"val_{key}"], abs=1e-6)


def test_resume_continues_exactly(data, tmp_path):
    train(_settings(data, tmp_path / "full", epochs=2))
    train(_settings(data, tmp_path / "split", epochs=1))
    train(_settings(data, tmp_path / "split", epochs=1), resume=True, resume_epochs=2)
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    split = load_checkpoint(tmp_path / "split" / "last.pt")
    assert [r["epoch"] for r in split["history"]] == [1, 2]
    for key, value in full["state_dict"].items():
        assert torch.allclose(value, split["state_dict"][key], atol=1e-6), key
    assert split["metrics"]["val_gap"] == pytest.approx(full["metrics"]["val_gap"], abs=1e-6)


def test_refuses_mismatched_runs_and_checkpoints(data, tmp_path):
    train(_settings(data, tmp_path / "run", epochs=1))
    with pytest.raises(InputError, match="already holds a run"):
        train(_settings(data, tmp_path / "run", epochs=1))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    state["model"]["name"] = "fc_attention"
    torch.save(state, tmp_path / "run" / "last.pt")
    with pytest.raises(InputError, match="checkpoint is of model 'fc_attention', not 'attend_fusion'"):
        train(_settings(data, tmp_path / "run", epochs=2), resume=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = avf("eval", tmp_path / "junk.pt", "--data", data)
    assert result.returncode == 2 and "junk.pt" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    other = tmp_path / "other"
    synthesize(other, videos=40, classes=7, seed=2)
    result = avf("eval", tmp_path / "run" / "best.pt", "--data", other)
    assert result.returncode == 2 and "20 classes" in result.stderr


def test_cli_train_and_unknown_model(data, tmp_path):
    result = avf("train", "--model", "attend_fusion", "--train", data / "train0000.tfrecord", "--out", tmp_path / "r",
                 "--epochs", 1, "--width", 32, "--attention-width", 32, "--heads", 2, "--batch-size", 128)
    assert result.returncode == 0, result.stderr
    assert "epoch 1" in result.stderr and "epoch 1" not in result.stdout and (tmp_path / "r" / "last.pt").is_file()
    result = avf("train", "--model", "no_such_model", "--train", data, "--out", tmp_path / "x")
    assert result.returncode == 2 and "no_such_model" in result.stderr


def test_ddp_two_processes_match_single_process(data, tmp_path):
    """torchrun with 2 CPU (gloo) processes at batch B equals one process at batch 2B."""
    common = ["--model", "attend_fusion", "--train", data / "train*.tfrecord", "--epochs", 2, "--lr", 3e-3,
              "--dropout", 0.0, "--width", 64, "--attention-width", 64, "--heads", 4, "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29517", "-m", "avf", "train", *map(str, common), "--batch-size", "32", "--out",
                          str(tmp_path / "ddp")], capture_output=True, text=True, timeout=600, env=env)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = avf("train", *common, "--batch-size", 64, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    a = load_checkpoint(tmp_path / "ddp" / "last.pt")
    b = load_checkpoint(tmp_path / "single" / "last.pt")
    assert a["run"]["world_size"] == 2 and b["run"]["world_size"] == 1
    # Same batches, same averaged gradients: the per-epoch losses agree to float rounding.
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-4)
    # Adam turns rounding-level gradient differences on near-zero gradients into full-size
    # steps, so weights are compared against how far training moved them (2.4% when measured).
    from avf.models import build_model

    torch.manual_seed(0)
    init = build_model(**b["model"]).state_dict()
    gap = sum(((a["state_dict"][k] - b["state_dict"][k]) ** 2).sum() for k in init)
    moved = sum(((b["state_dict"][k] - init[k]) ** 2).sum() for k in init)
    assert (gap / moved).sqrt() < 0.1



def test_ddp_early_stop_stops_every_rank(data, tmp_path):
    """Rank 0 alone scores validation: its early-stop decision reaches rank 1 (which used to train on and hang)."""
    args = ["--model", "fc_early_fusion", "--train", data / "train*.tfrecord", "--val", data / "validate*.tfrecord",
            "--epochs", 6, "--lr", 1e-12, "--width", 32, "--device", "cpu", "--batch-size", 32, "--early-stop", 1,
            "--out", tmp_path / "ddp"]  # lr ~0: the validation GAP never improves, so epoch 2 stops the run
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29519", "-m", "avf", "train", *map(str, args)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    log = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert log["stopped_early"] == 2 and len(log["history"]) == 2


def test_kill_minus_nine_then_resume_loses_at_most_one_epoch(data, tmp_path):
    """SIGKILL a real training process mid-run; --resume continues from the last finished epoch."""
    import signal
    import time

    run = tmp_path / "killed"
    args = [sys.executable, "-m", "avf", "train", "--model", "attend_fusion", "--train", data / "train*.tfrecord",
            "--val", data / "validate*.tfrecord", "--out", run, "--epochs", 200, "--batch-size", 16,
            "--width", 64, "--attention-width", 64, "--heads", 4, "--lr", 3e-3]
    process = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").is_file():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.3)  # into the next epoch (or the middle of a checkpoint write)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    done = len(load_checkpoint(run / "last.pt")["history"])
    assert 1 <= done < 200
    result = avf("train", "--model", "attend_fusion", "--train", data / "train*.tfrecord",
                 "--val", data / "validate*.tfrecord", "--out", run, "--epochs", done + 1, "--resume")
    assert result.returncode == 0, result.stderr
    last = load_checkpoint(run / "last.pt")
    assert [row["epoch"] for row in last["history"]] == list(range(1, done + 2))
    assert not list(run.glob(".*.tmp")) and not list(run.glob("*.tmp"))
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == done + 2  # header + every epoch exactly once
    assert load_checkpoint(run / "best.pt")["model"]["name"] == "attend_fusion"


def test_lr_factor_warms_up_then_follows_the_schedule():
    from avf.train.loop import lr_factor

    cosine = lr_factor("cosine", total_steps=100, warmup_steps=10)
    ramp = [cosine(step) for step in range(10)]
    assert ramp == sorted(ramp) and ramp[0] == 0.1 and ramp[-1] == 1.0
    assert cosine(10) == 1.0 and 0.49 < cosine(55) < 0.51 and cosine(100) == 0.0
    assert [lr_factor("constant", 100, 4)(s) for s in (0, 3, 4, 99)] == [0.25, 1.0, 1.0, 1.0]
    assert lr_factor("cosine", 100)(0) == 1.0  # no warm-up: the plain schedule


# ----------------------------------------------------------------------------- the run folder and its inputs

TINY = ["--width", 16, "--attention-width", 16, "--heads", 2, "--epochs", 1, "--threads", 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize(root, videos=200, classes=12, seed=3)
    return root


def _tiny_train(data, *extra):
    return ["train", "-m", "attend_fusion", "--train", data / "train*.tfrecord", "--val", data / "validate*.tfrecord",
            *TINY, *extra]


def _ours(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "tensorboard")


def test_run_folder_is_new_empty_or_ours_and_force_writes_only_the_runs_files(tiny, tmp_path):
    from cli_harness import cli, snapshot

    run = tmp_path / "run"
    run.mkdir()  # an empty folder is a fine place for a new run
    code, _, err = cli(*_tiny_train(tiny, "-o", run, "--distill-weight", 0.3))
    assert code == 0, err
    assert "note: --distill-weight does nothing without --distill-from" in err
    assert json.loads((run / "metrics.json").read_text())["format"] == "avf-run"
    (run / "notes.txt").write_text("the user's own")
    (run / ".draft.tmp").write_text("the user's own, hidden")
    (run / ".best.pt.abcd_123.tmp").write_bytes(b"what a kill -9 mid-write leaves")
    code, _, err = cli(*_tiny_train(tiny, "-o", run))
    assert code == 2 and "already holds a run" in err and "--force" in err
    code, _, err = cli(*_tiny_train(tiny, "-o", run, "--force"))
    assert code == 0, err
    assert _ours(run) == [".draft.tmp", "best.pt", "last.pt", "metrics.csv", "metrics.json", "notes.txt"]
    # a folder avf did not write is refused, --force or not, and left as it was
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "best.pt").write_bytes(b"someone else's model")
    for force in ([], ["--force"]):
        before = snapshot(tmp_path)
        code, _, err = cli(*_tiny_train(tiny, "-o", foreign, *force))
        assert code == 2 and "not a run folder written by avf" in err and len(err.strip().splitlines()) == 1, err
        assert snapshot(tmp_path) == before
    # so is a run folder holding a checkpoint avf did not write: --force never overwrites it
    (run / "best.pt").write_bytes(b"someone else's model")
    code, _, err = cli(*_tiny_train(tiny, "-o", run, "--force"))
    assert code == 2 and "not a run folder" in err and (run / "best.pt").read_bytes() == b"someone else's model"


def test_resume_refuses_inputs_replaced_at_the_same_path(tmp_path):
    from avf.data.vocabulary import file_sha256

    data = tmp_path / "data"
    synthesize(data, videos=200, classes=12, seed=3)
    common = {"model": "fc_early_fusion", "train": str(data / "train*.tfrecord"), "epochs": 1, "width": 16,
              "threads": 1}
    teacher = tmp_path / "teacher" / "best.pt"
    train(TrainSettings(**common, out=str(teacher.parent)))
    run = tmp_path / "run"
    settings = TrainSettings(**common, val=str(data / "validate*.tfrecord"), out=str(run), distill_from=[str(teacher)])
    train(settings)
    assert load_checkpoint(run / "last.pt")["teachers"] == [{"path": str(teacher), "sha256": file_sha256(teacher)}]

    shard = data / "train0000.tfrecord"
    original = shard.read_bytes()
    shard.write_bytes((data / "validate0000.tfrecord").read_bytes())  # other videos, same path, same vocabulary
    with pytest.raises(InputError, match=r"--train changed since the run started: .*train0000\.tfrecord is not what"):
        train(settings, resume=True, resume_epochs=2)
    shard.write_bytes(original)
    (data / "train0001.tfrecord").write_bytes(original)  # one more shard, same glob
    with pytest.raises(InputError, match="2 files now, 1 when the run started"):
        train(settings, resume=True, resume_epochs=2)
    (data / "train0001.tfrecord").unlink()

    kept = teacher.read_bytes()
    train(TrainSettings(**{**common, "seed": 1}, out=str(teacher.parent)), force=True)  # a new teacher, same path
    with pytest.raises(InputError, match="--distill-from changed since the run started"):
        train(settings, resume=True, resume_epochs=2)
    teacher.write_bytes(kept)
    result = train(settings, resume=True, resume_epochs=2)  # the very inputs the run started on: it goes on
    assert [row["epoch"] for row in result["history"]] == [1, 2]


def test_a_second_run_on_a_busy_run_folder_is_refused(tiny, tmp_path):
    """Two real processes: while one trains in a folder, another run on it is refused at once."""
    import signal
    import time

    from cli_harness import cli

    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "avf", *map(str, _tiny_train(tiny, "--epochs", 100000, "-o", run))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not run.is_dir():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run made no folder within 120 s"
            time.sleep(0.05)
        for extra in ([], ["--force"], ["--resume"]):
            code, _, err = cli(*_tiny_train(tiny, "-o", run, *extra))
            errors = [line for line in err.splitlines() if line.strip()]
            assert code == 2 and len(errors) == 1 and errors[0].startswith("error:"), err
            assert "another avf process is using this run folder" in errors[0]
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.terminate()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM, err


def test_a_full_disk_is_one_error_line_naming_the_file(tiny, tmp_path):
    """Writes really fail (the file-size limit gives EFBIG, as a full disk gives ENOSPC): one line naming the
    file and the reason, exit 2, no traceback, no temporary left, for checkpoints and atomic folders alike."""
    import resource
    import signal

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    run = tmp_path / "run"
    run.mkdir()  # not made by this call, so it stays: and must hold no temporary
    synth = tmp_path / "synth"
    for args, named in ((_tiny_train(tiny, "-o", run), run / "best.pt"),
                        (["data", "synth", synth, "--videos", 2000, "--classes", 12], synth)):
        result = subprocess.run([sys.executable, "-m", "avf", *map(str, args)], capture_output=True, text=True,
                                timeout=300, preexec_fn=small_files)
        # training's header line is progress (stderr): what follows it is the one error line
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("attend_fusion: ")]
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0] == f"error: {named}: cannot write it: File too large"
    assert list(run.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_output_names_near_the_255_byte_limit(tiny, tmp_path):
    """Temporary names add a prefix and a suffix; an output named with 250 bytes still gets one beside it."""
    pytest.importorskip("onnxruntime")
    from cli_harness import cli

    run, artifact = tmp_path / ("r" * 250), tmp_path / ("a" * 250)
    bench, predictions = tmp_path / ("b" * 245 + ".json"), tmp_path / ("p" * 246 + ".csv")
    for args in (_tiny_train(tiny, "-o", run), ["compress", run / "best.pt", "-o", artifact],
                 ["bench", run / "best.pt", "--batch", 1, "--duration", 0.05, "--threads", 1, "-o", bench],
                 ["predict", artifact, "--data", tiny / "validate0000.tfrecord", "-o", predictions]):
        code, _, err = cli(*args)
        assert code == 0, (args[0], err)
    assert (artifact / "report.json").is_file() and bench.is_file() and predictions.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_resume_of_a_moved_run_folder_writes_where_it_lies_now(data, tmp_path):
    train(_settings(data, tmp_path / "first", epochs=1))
    (tmp_path / "first").rename(tmp_path / "moved")
    result = train(_settings(data, tmp_path / "moved", epochs=1), resume=True, resume_epochs=2)
    assert [row["epoch"] for row in result["history"]] == [1, 2]
    assert not (tmp_path / "first").exists()
    assert load_checkpoint(tmp_path / "moved" / "last.pt")["epoch"] == 2
