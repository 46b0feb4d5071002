"""Artifacts and Triton repositories that try to escape: external weights, links, hostile names, full disks.

All on a real artifact (``avf compress`` of a tiny trained model) and the real commands: every
refusal is exit 2 with one ``error:`` line, and nothing is written anywhere, also not beside or
above the output folder.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from hostile_artifacts import with_external_data, with_linked_model, with_model_name  # noqa: E402
from cli_harness import cli, snapshot  # noqa: E402


@pytest.fixture(scope="module")
def built(tiny_run, tiny_artifact):
    """Synthetic data, a tiny Attend-Fusion run and its accepted FP32 artifact ``run/best.fp32`` (the session's:
    these tests only read them)."""
    return tiny_run


def refused(args, where: Path, *mentions: str) -> str:
    """Run ``avf ARGS``; assert exit 2, one error line mentioning ``mentions``, nothing changed under ``where``."""
    before = snapshot(where)
    code, out, err = cli(*args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, f"exit {code}: {args}\n{out}\n{err}"
    assert len(errors) == 1 and len([line for line in err.splitlines() if line.strip()]) == 1, err
    for mention in mentions:
        assert mention in errors[0], (mention, errors[0])
    assert snapshot(where) == before, f"files changed on disk: {args}"
    return errors[0]


def consumers(artifact: Path, data: Path, out: Path) -> list[list]:
    """Every command that opens an artifact, each with an output that must not appear."""
    return [["deploy", "manifest", artifact, "-p", "x86-cpu", "-o", artifact.parent / "manifest.json"],
            ["deploy", "triton", artifact, "-o", out / "repo"],
            ["bench", artifact, "--duration", 0.05, "--threads", 1, "-o", out / "bench.json"],
            ["predict", artifact, "--data", data / "validate0000.tfrecord", "-o", out / "predictions.csv"],
            ["deploy", "plan", artifact, "-p", "x86-cpu"]]


@pytest.mark.parametrize("variant", ["initializers", "constants"])
def test_external_weights_are_refused_by_every_consumer(built, tmp_path, variant):
    """ONNX external data is hashed nowhere and shipped by nothing: avf artifacts keep weights in model.onnx."""
    artifact = with_external_data(built / "run" / "best.fp32", tmp_path / "external", location="weights.bin",
                                  constants=variant == "constants")
    assert (artifact / "weights.bin").is_file()
    import onnxruntime

    onnxruntime.InferenceSession(str(artifact / "model.onnx"))  # a valid model, that ONNX Runtime would run
    for args in consumers(artifact, built / "data", tmp_path):
        refused(args, tmp_path, "model.onnx", "'weights.bin'", "inside model.onnx")


def test_a_linked_model_is_refused_by_every_consumer(built, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    artifact = with_linked_model(built / "run" / "best.fp32", tmp_path / "linked", outside / "model.onnx")
    for args in consumers(artifact, built / "data", tmp_path):
        refused(args, tmp_path, "model.onnx", "symbolic link")


def test_a_linked_report_or_a_fifo_model_is_refused(built, tmp_path):
    linked_report = tmp_path / "linked_report"
    shutil.copytree(built / "run" / "best.fp32", linked_report)
    shutil.move(linked_report / "report.json", tmp_path / "report.json")
    (linked_report / "report.json").symlink_to(tmp_path / "report.json")
    refused(["deploy", "manifest", linked_report, "-p", "x86-cpu", "-o", tmp_path / "m.json"], tmp_path,
            "report.json", "symbolic link")
    fifo = tmp_path / "fifo"
    shutil.copytree(built / "run" / "best.fp32", fifo)
    (fifo / "model.onnx").unlink()
    os.mkfifo(fifo / "model.onnx")
    result = subprocess.run([sys.executable, "-m", "avf", "deploy", "triton", fifo, "-o", tmp_path / "repo"],
                            capture_output=True, text=True, timeout=120)  # hashing a FIFO would block forever
    assert result.returncode == 2 and "is a FIFO, not a regular file" in result.stderr, result.stderr
    assert not (tmp_path / "repo").exists()


def test_verify_refuses_a_model_replaced_by_a_link(built, tmp_path):
    ship = tmp_path / "ship"
    shutil.copytree(built / "run" / "best.fp32", ship / "best.fp32")
    code, _, err = cli("deploy", "manifest", ship / "best.fp32", "-p", "x86-cpu", "-o", ship / "manifest.json")
    assert code in (0, 3), err
    assert cli("deploy", "verify", ship / "manifest.json")[0] == 0
    model = ship / "best.fp32" / "model.onnx"
    for target in (tmp_path / "outside.onnx", ship / "same_bytes_inside.onnx"):  # same bytes, so the hash matches
        shutil.copy2(built / "run" / "best.fp32" / "model.onnx", target)
        model.unlink()
        model.symlink_to(target)
        code, _, err = cli("deploy", "verify", ship / "manifest.json")
        assert code == 1 and "model.onnx" in err and "symbolic link" in err, err


def _parsed_config(folder: Path):
    from google.protobuf import text_format

    from avf.deploy.triton import ModelConfig

    return text_format.Parse((folder / "config.pbtxt").read_text(), ModelConfig())


def test_triton_config_is_protobuf_text_that_parses_back(built, tmp_path):
    repo = tmp_path / "repo"
    code, _, err = cli("deploy", "triton", built / "run" / "best.fp32", "-o", repo)
    assert code == 0, err
    config = _parsed_config(repo / "attend_fusion")
    assert (config.name, config.platform, config.max_batch_size) == ("attend_fusion", "onnxruntime_onnx", 64)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("rgb", 11, [1024]), ("audio", 11, [128])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("probabilities", 11, [12])]
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, 1)]  # KIND_GPU
    assert (repo / "attend_fusion" / "1" / "model.onnx").read_bytes() == (
        built / "run" / "best.fp32" / "model.onnx").read_bytes()
    code, _, err = cli("deploy", "triton", built / "run" / "best.fp32", "-o", repo, "--name", "yt8m.attend-v2",
                       "--cpu", "--max-batch", 16)
    assert code == 0, err
    config = _parsed_config(repo / "yt8m.attend-v2")
    assert (config.name, config.max_batch_size, config.instance_group[0].kind) == ("yt8m.attend-v2", 16, 2)  # KIND_CPU
    assert list(config.dynamic_batching.preferred_batch_size) == [8]  # 32 exceeds the maximum batch
    assert sorted(p.name for p in repo.iterdir()) == ["attend_fusion", "yt8m.attend-v2"]


HOSTILE_NAMES = ["../../X", "ABSOLUTE", 'a"\nplatform: "x', ".", "..", "", " padded", "x/y", ".hidden", "-o",
                 "a\x00b", "ü", "n" * 201]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n)[:20] for n in HOSTILE_NAMES])
def test_hostile_model_names_are_refused_and_write_nothing_anywhere(built, tmp_path, name):
    """A name from report.json or --name must not leave the repository nor inject lines into config.pbtxt."""
    name = str(tmp_path / "abs" / "path") if name == "ABSOLUTE" else name
    repo = tmp_path / "a" / "b" / "repo"  # ../../X would land in tmp_path/a: still watched
    hostile = with_model_name(built / "run" / "best.fp32", tmp_path / "hostile", name)
    refused(["deploy", "triton", hostile, "-o", repo], tmp_path, "report.json", "model.name",
            "cannot name a folder", "--name")
    refused(["deploy", "triton", built / "run" / "best.fp32", "-o", repo, "--name", name], tmp_path, "--name",
            "cannot name a folder")
    assert not (tmp_path / "a").exists()
    code, _, err = cli("deploy", "triton", hostile, "-o", repo, "--name", "renamed")  # the way out
    assert code == 0, err
    assert _parsed_config(repo / "renamed").name == "renamed"
    assert sorted(p.name for p in repo.iterdir()) == ["renamed"]


def _file_size_limit(limit: int):
    def apply():  # in the child: writes past ``limit`` bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_leaves_nothing_and_names_the_output(built, tmp_path):
    """A write that fails midway (here: RLIMIT_FSIZE, EFBIG) removes the model folder, its temporary and a
    repository this call created, and the one error line names the output, not the model copied from."""
    artifact = built / "run" / "best.fp32"
    assert (artifact / "model.onnx").stat().st_size > 4096
    existing = tmp_path / "existing"
    (existing / "their_model" / "1").mkdir(parents=True)
    (existing / "their_model" / "config.pbtxt").write_text('name: "their_model"\n')
    for repo in (tmp_path / "new" / "repo", existing):
        before = snapshot(tmp_path)
        result = subprocess.run([sys.executable, "-m", "avf", "deploy", "triton", artifact, "-o", repo],
                                capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(4096))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: {repo / 'attend_fusion'}: cannot write it: File too large"), lines
        assert str(artifact) not in lines[0]
        after = snapshot(tmp_path)  # the repository's own mtime moves: a temporary came and went in it
        assert after.keys() == before.keys()
        assert {k: v for k, v in after.items() if v[0] >= 0} == {k: v for k, v in before.items() if v[0] >= 0}
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in existing.iterdir()) == ["their_model"]
