"""The ``avf`` command as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from avf import __version__
from cli_harness import avf_process as avf


def test_version_and_help():
    assert avf("--version").stdout.strip() == f"avf {__version__}"
    result = avf("data", "--help")
    assert result.returncode == 0 and "convert" in result.stdout and "inspect" in result.stdout


def test_synth_convert_inspect_end_to_end(tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    result = avf("data", "synth", data, "--videos", 300, "--classes", 30, "--seed", 4)
    assert result.returncode == 0, result.stderr
    assert "train 240 videos" in result.stdout
    result = avf("data", "convert", str(data / "train*.tfrecord"), store)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["videos"] == 240 and manifest["num_classes"] == 30
    for target in (data, store):
        result = avf("data", "inspect", target, "--json")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["num_classes"] == 30 and summary["labels"]["per_video_mean"] > 2
    assert json.loads(avf("data", "inspect", store, "--json").stdout)["videos"] == 240
    result = avf("data", "inspect", data / "validate0000.tfrecord")
    assert result.returncode == 0 and "labels per video" in result.stdout


def test_frame_level_end_to_end(tmp_path):
    data = tmp_path / "frames"
    assert avf("data", "synth", data, "--videos", 20, "--classes", 8, "--level", "frame").returncode == 0
    assert avf("data", "convert", data, tmp_path / "fstore").returncode == 0
    summary = json.loads(avf("data", "inspect", tmp_path / "fstore", "--json").stdout)
    assert summary["level"] == "frame" and 30 <= summary["frames"]["min"] <= summary["frames"]["max"] <= 300


def _one_line_error(result, *fragments):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_corrupt_shard_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "data"
    assert avf("data", "synth", data, "--videos", 100, "--classes", 10).returncode == 0
    shard = data / "train0000.tfrecord"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    shard.write_bytes(bytes(raw))
    _one_line_error(avf("data", "inspect", shard), str(shard), "record at byte", "CRC mismatch")
    result = avf("data", "convert", data, tmp_path / "store")
    _one_line_error(result, str(shard))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("data", "inspect", "{tmp}/missing.tfrecord"), ("missing.tfrecord", "file not found")),
        (("data", "inspect", "{tmp}/nothing*.tfrecord"), ("pattern matches no files",)),
        (("data", "synth", "{tmp}"), ("already exists",)),
    ],
)
def test_bad_paths(tmp_path, args, fragments):
    (tmp_path / "keep.txt").write_text("x")
    _one_line_error(avf(*(a.format(tmp=tmp_path) for a in args)), *fragments)
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_real_shard_corruption_via_cli(real_data, tmp_path):
    copy = tmp_path / "validate0007.tfrecord"
    raw = bytearray((real_data / "validate0007.tfrecord").read_bytes())
    raw[123_456] ^= 0x01
    copy.write_bytes(bytes(raw))
    _one_line_error(avf("data", "inspect", copy), str(copy), "record at byte")
