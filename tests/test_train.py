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


def avf(*args):
    return subprocess.run([sys.executable, "-m", "avf", *map(str, args)], capture_output=True, text=True, timeout=300)


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
    assert "epoch 1" in result.stdout and (tmp_path / "r" / "last.pt").is_file()
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
