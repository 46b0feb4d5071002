"""Files received from elsewhere: checkpoints that would run code, data of another vocabulary, FIFOs.

A checkpoint is a pickle, and unpickling can call any function, so every command that loads one
must refuse a file holding anything but tensors and plain data, before any of it runs. Data (or a
vocabulary.csv) made with another vocabulary of the same class count must not be scored or named
as if its classes were the model's. And a FIFO or a device given where a file is read must fail at
once instead of blocking forever. Every case runs the real command and checks the CLI contract:
exit 2, one ``error:`` line naming the file, and nothing created, changed or removed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cli_harness import cli, snapshot, working_in  # noqa: E402

TINY = ["--width", 16, "--attention-width", 16, "--heads", 2, "--epochs", 1, "--threads", 1]
TRAIN = ["train", "-m", "attend_fusion", "--train", "data/train*.tfrecord"]


class _RunsOnLoad:
    """Unpickled, this calls ``function(*args)``: what a hostile checkpoint hides in its pickle."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _hostile_checkpoint(path: Path, real: Path, function, *args) -> Path:
    """A real checkpoint of ours with one call hidden in its metrics, saved by torch.save itself."""
    payload = torch.load(real, map_location="cpu", weights_only=True)
    torch.save({**payload, "metrics": _RunsOnLoad(function, *args)}, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic data, a trained run (with --val and --ema), its FP32 artifact, and a store of another vocabulary."""
    root = tmp_path_factory.mktemp("received")
    with working_in(root):
        assert cli("data", "synth", "data", "--videos", 200, "--classes", 12, "--seed", 3)[0] == 0
        code, _, err = cli(*TRAIN, "--val", "data/validate*.tfrecord", "-o", "run", "--ema", 0.9, *TINY)
        assert code == 0, err
        code, _, err = cli("compress", "run/best.pt", "-o", "run/best.fp32")
        assert code == 0, err
        # The same class count, one class renamed: another vocabulary the class count cannot tell apart.
        lines = Path("data/vocabulary.csv").read_text().splitlines(keepends=True)
        lines[1] = lines[1].replace("Synthetic class 0", "Renamed class 0")
        assert lines[1] != Path("data/vocabulary.csv").read_text().splitlines(keepends=True)[1]
        Path("other_vocab.csv").write_text("".join(lines))
        code, _, err = cli("data", "convert", "data/validate*.tfrecord", "store_other", "--vocabulary", "other_vocab.csv")
        assert code == 0, err
        code, _, err = cli("data", "convert", "data/validate*.tfrecord", "store_same")
        assert code == 0, err
        # The hostile checkpoint: as the CHECKPOINT argument, as a teacher, and as a run's last.pt.
        marker = root / "PWNED"
        _hostile_checkpoint(root / "hostile.pt", root / "run" / "best.pt", pathlib.Path.touch, marker)
        Path("hostile_run").mkdir()
        shutil.copy(root / "hostile.pt", root / "hostile_run" / "last.pt")
        yield root


def _refused(world, args, mentions: str) -> str:
    """Run ``avf ARGS``: exit 2, one error line mentioning ``mentions``, nothing on disk changed."""
    before = snapshot(world)
    code, out, err = cli(*args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert len(errors) == 1 and "Traceback" not in err, err
    assert mentions in errors[0], errors[0]
    assert snapshot(world) == before, "files changed on disk"
    return errors[0]


# --------------------------------------------------------------------------- checkpoints that run code


def test_the_hostile_checkpoint_does_run_code_when_unpickled_unsafely(world, tmp_path):
    """The payload is real: loaded the unsafe way, it creates its marker (here, in a copy aimed elsewhere)."""
    marker = tmp_path / "ran"
    probe = _hostile_checkpoint(tmp_path / "probe.pt", world / "run" / "best.pt", pathlib.Path.touch, marker)
    torch.load(probe, weights_only=False)
    assert marker.exists()


HOSTILE = [
    ("eval", ["eval", "hostile.pt", "--data", "data/validate*.tfrecord"], "hostile.pt"),
    ("bench", ["bench", "hostile.pt", "--duration", 0.05, "-o", "b.json"], "hostile.pt"),
    ("predict", ["predict", "hostile.pt", "--data", "data/validate*.tfrecord", "-o", "p.csv"], "hostile.pt"),
    ("compress", ["compress", "hostile.pt", "-o", "artifact"], "hostile.pt"),
    ("train-distill-from", [*TRAIN, "-o", "student", "--distill-from", "hostile.pt", *TINY], "hostile.pt"),
    ("train-resume", [*TRAIN, "-o", "hostile_run", "--resume"], "hostile_run/last.pt"),
    ("tune", ["tune", "hostile.pt", "-p", "x86-cpu", "-o", "tuned"], "hostile.pt"),
]


@pytest.mark.parametrize("case, args, names", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_a_checkpoint_holding_code_is_refused_unrun(world, case, args, names):
    line = _refused(world, args, names)
    assert "not loaded" in line and "tensors and plain data" in line, line
    assert not (world / "PWNED").exists(), f"{case}: the checkpoint's code ran"


@pytest.mark.parametrize("function, args", [(os.system, ("touch {marker}",)),
                                            (exec, ("open({marker!r}, 'w').close()",))], ids=["os.system", "exec"])
def test_load_checkpoint_refuses_any_callable(world, tmp_path, function, args):
    from avf.errors import InputError
    from avf.train.checkpoint import load_checkpoint

    marker = str(tmp_path / "ran")
    path = _hostile_checkpoint(tmp_path / "h.pt", world / "run" / "best.pt", function,
                               *(a.format(marker=marker) for a in args))
    with pytest.raises(InputError, match="not loaded, so none of its code ran"):
        load_checkpoint(path)
    assert not Path(marker).exists()


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_every_checkpoint_avf_train_writes_loads_weights_only(world, name):
    """--val and --ema: metrics rows, history, EMA and optimizer/scheduler state are all plain data."""
    from avf.train.checkpoint import load_checkpoint

    path = world / "run" / name
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    torch.load(path, weights_only=True)  # no safe_globals needed
    payload = load_checkpoint(path)
    assert payload["metrics"]["val_gap"] > 0 and payload["settings"]["ema"] == 0.9
    if name == "last.pt":
        assert {"optimizer", "scheduler", "history", "train_state_dict", "torch_rng"} <= set(payload)


def test_checkpoints_of_earlier_avf_versions_still_load(world, tmp_path):
    """Before, ``versions.torch`` was torch.__version__ itself (a TorchVersion, a str subclass): allowed by name."""
    from avf.train.checkpoint import load_checkpoint

    payload = torch.load(world / "run" / "best.pt", weights_only=True)
    payload["versions"]["torch"] = torch.__version__
    assert type(payload["versions"]["torch"]) is not str
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["versions"]["torch"] == str(torch.__version__)


def test_what_is_saved_is_made_plain_or_refused(tmp_path):
    import numpy as np

    from avf.train.checkpoint import load_checkpoint, plain, save_checkpoint

    row = {"gap": np.float32(0.5), "videos": np.int64(7), "ok": np.bool_(True), "betas": (0.9, 0.999)}
    assert plain(row) == {"gap": 0.5, "videos": 7, "ok": True, "betas": (0.9, 0.999)}
    assert [type(v) for v in plain(row).values()] == [float, int, bool, tuple]
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "state_dict": {"w": torch.zeros(2)}, "num_classes": 2,
                                        "metrics": row})
    assert load_checkpoint(tmp_path / "c.pt")["metrics"]["gap"] == 0.5
    with pytest.raises(TypeError, match=r"payload\['settings'\]\['out'\] holds a PosixPath"):
        save_checkpoint(tmp_path / "d.pt", {"settings": {"out": tmp_path}})
    assert not (tmp_path / "d.pt").exists()


def test_resume_and_distillation_load_what_train_wrote(world, tmp_path):
    """A run without --ema (the other shape of last.pt) resumes, and its best.pt teaches: both load weights-only."""
    from avf.train.checkpoint import load_checkpoint

    train = [*TRAIN[:-1], world / "data" / "train*.tfrecord"]
    run = tmp_path / "run"
    code, _, err = cli(*train, "-o", run, *TINY)
    assert code == 0, err
    code, _, err = cli(*train, "-o", run, "--resume", "--epochs", 2, "--threads", 1)
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 2 and len(load_checkpoint(run / "last.pt")["history"]) == 2
    code, _, err = cli(*train, "-o", tmp_path / "student", "--distill-from", run / "best.pt", *TINY)
    assert code == 0, err
    for path in (run / "best.pt", run / "last.pt", tmp_path / "student" / "best.pt", tmp_path / "student" / "last.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path


# --------------------------------------------------------------------------- data of another vocabulary


OTHER = [
    ("eval", ["eval", "run/best.pt", "--data", "store_other"], "store_other"),
    ("train-val", [*TRAIN, "--val", "store_other", "-o", "new_run", *TINY], "store_other"),
    ("train-teacher", ["train", "-m", "attend_fusion", "--train", "store_other", "--distill-from", "run/best.pt",
                       "-o", "new_run", *TINY], "run/best.pt"),
    ("predict-data-artifact", ["predict", "run/best.fp32", "--data", "store_other", "-o", "p.csv"], "store_other"),
    ("predict-data-checkpoint", ["predict", "run/best.pt", "--data", "store_other", "-o", "p.csv"], "store_other"),
    ("predict-vocab", ["predict", "run/best.fp32", "--data", "data/validate*.tfrecord", "--vocab", "other_vocab.csv",
                       "-o", "p.csv"], "other_vocab.csv"),
    ("compress-eval", ["compress", "run/best.pt", "--eval", "store_other", "-o", "artifact"], "store_other"),
    ("compress-calib", ["compress", "run/best.pt", "--int8", "--calib", "store_other", "-o", "artifact"], "store_other"),
    ("compress-train", ["compress", "run/best.pt", "--prune", 0.5, "--train", "store_other", "-o", "artifact"],
     "store_other"),
    ("tune-eval", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "tuned", "--eval", "store_other"], "store_other"),
    ("tune-test", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "tuned", "--test", "store_other"], "store_other"),
]


@pytest.mark.parametrize("case, args, names", OTHER, ids=[case[0] for case in OTHER])
def test_another_vocabulary_of_the_same_class_count_is_refused(world, case, args, names):
    line = _refused(world, args, names)
    assert "vocabulary" in line, line


def test_the_same_vocabulary_passes(world, tmp_path):
    code, _, err = cli("eval", world / "run" / "best.pt", "--data", world / "store_same")
    assert code == 0, err
    code, _, err = cli("predict", world / "run" / "best.fp32", "--data", world / "store_same", "--vocab",
                       world / "data" / "vocabulary.csv", "--top-k", 3, "-o", tmp_path / "p.csv")
    assert code == 0, err
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "VideoId,LabelConfidencePairs,LabelNames"


def test_data_without_a_vocabulary_has_nothing_to_compare(world, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for shard in (world / "data").glob("validate*.tfrecord"):
        shutil.copy(shard, bare / shard.name)
    code, _, err = cli("eval", world / "run" / "best.pt", "--data", bare)
    assert code == 0, err


def test_check_same_vocabulary_names_both_files():
    from avf.data.vocabulary import check_same_vocabulary
    from avf.errors import InputError

    check_same_vocabulary("a" * 64, "model.pt", None, "data")  # nothing recorded on one side: allowed
    check_same_vocabulary(None, "model.pt", "b" * 64, "data")
    check_same_vocabulary("a" * 64, "model.pt", "a" * 64, "data")
    with pytest.raises(InputError) as caught:
        check_same_vocabulary("a" * 64, "model.pt", "b" * 64, "store")
    assert str(caught.value).startswith("store: ") and "model.pt" in str(caught.value)
    assert "bbbbbbbbbbbb" in str(caught.value) and "aaaaaaaaaaaa" in str(caught.value)


# --------------------------------------------------------------------------- FIFOs and devices


def _fifo(folder: Path, name: str) -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


# (case id, arguments with {fifo} for the FIFO's path, the FIFO's file name)
SPECIAL = [
    ("verify-manifest", ["deploy", "verify", "{fifo}"], "manifest.json"),
    ("plan-bench", ["deploy", "plan", "run/best.fp32", "-p", "x86-cpu", "--bench", "{fifo}"], "bench.json"),
    ("plan-profile", ["deploy", "plan", "run/best.fp32", "-p", "{fifo}"], "profile.yaml"),
    ("predict-vocab", ["predict", "run/best.fp32", "--data", "data/validate0000.tfrecord", "--vocab", "{fifo}",
                       "-o", "{tmp}/p.csv"], "vocabulary.csv"),
    ("eval-checkpoint", ["eval", "{fifo}", "--data", "data/validate0000.tfrecord"], "best.pt"),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("case, args, name", SPECIAL, ids=[case[0] for case in SPECIAL])
def test_a_fifo_is_refused_at_once(world, tmp_path, case, args, name):
    """In a subprocess with a deadline: without the check, opening the FIFO would block forever."""
    fifo = _fifo(tmp_path, name)
    args = [str(a).format(fifo=fifo, tmp=tmp_path) for a in args]
    result = subprocess.run([sys.executable, "-m", "avf", *args], cwd=world, capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert errors == [f"error: {fifo}: is a FIFO, not a regular file"], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_device_is_refused_at_once(world):
    """/dev/zero never ends: read whole, it would fill the memory."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    result = subprocess.run([sys.executable, "-m", "avf", "deploy", "verify", "/dev/zero"], cwd=world,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "error: /dev/zero: is a device, not a regular file", \
        result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_one_regular_file_check_for_every_reader(tmp_path):
    """Documents, vocabularies, checkpoints and shards all refuse a FIFO through avf.documents (in-process,
    under an alarm: a reader that opened the FIFO would block)."""
    import signal

    from avf.data import iter_records
    from avf.data.vocabulary import file_sha256, load_vocabulary
    from avf.documents import read_text
    from avf.errors import InputError
    from avf.train.checkpoint import load_checkpoint

    def blocked(signum, frame):
        raise TimeoutError("a reader opened the FIFO and blocked")

    fifo = _fifo(tmp_path, "pipe")
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        for read in (lambda p: read_text(p, "a document"), load_vocabulary, file_sha256, load_checkpoint,
                     lambda p: list(iter_records(p))):
            with pytest.raises(InputError, match="is a FIFO, not a regular file"):
                read(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
