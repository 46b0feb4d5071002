"""``avf data inspect`` and ``avf data convert`` on each kind of malformed file: one ``error:``
line naming the file (and the record's byte offset where a record is to blame), exit 2, and
nothing left behind."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from avf.cli.app import run
from test_reader_encoder import (
    bytes_feature,
    delimited,
    example,
    float_feature,
    frame_example,
    int64_feature,
    record_spans,
    tfrecord_bytes,
    video_example,
)

RNG = np.random.default_rng(3)
RGB = RNG.normal(size=1024).astype(np.float32)
AUDIO = RNG.normal(size=128).astype(np.float32)
CODES = RNG.integers(0, 256, (3, 1024), dtype=np.uint8)


def good(i):
    return video_example(f"g{i}", [1, 2], RGB, AUDIO)


def _files(tmp_path):
    """name -> (bytes, offset of the record to blame or None, words the message must hold)."""
    base = tfrecord_bytes([good(i) for i in range(5)])
    spans = record_spans(base)
    flipped = bytearray(base)
    flipped[spans[3][0] + 200] ^= 4
    odd_block = example([("id", bytes_feature([b"x"])), ("mean_rgb", delimited(2, delimited(1, RGB.tobytes()[:-1]))),
                         ("mean_audio", float_feature(AUDIO))])
    float_labels = example([("id", bytes_feature([b"y"])), ("labels", float_feature([1.0])),
                            ("mean_rgb", float_feature(RGB)), ("mean_audio", float_feature(AUDIO))])
    two_ids = example([("id", bytes_feature([b"a", b"b"])), ("mean_rgb", float_feature(RGB)),
                       ("mean_audio", float_feature(AUDIO))])
    nan = video_example("n", [1], np.r_[RGB[:-1], np.nan], AUDIO)
    bad_gz = bytearray(gzip.compress(base))
    bad_gz[30:50] = bytes(20)
    with_bad = lambda payload: tfrecord_bytes([good(0), payload])  # noqa: E731
    second = spans[1][0]
    frames = [frame_example("f", [1], CODES, CODES[:, :128], segments=([0, 5], [1, 9999], [1.0, 0.0]))]
    return {
        "truncated.tfrecord": (base[: spans[4][0] + 50], spans[4][0], "truncated"),
        "flipped.tfrecord": (bytes(flipped), spans[3][0], "data CRC mismatch"),
        "notes.tfrecord": (b"Index,Name\n0,Game\n" * 5, 0, "not a TFRecord file"),
        "oddblock.tfrecord": (with_bad(odd_block), second, "not a multiple of 4"),
        "floatlabels.tfrecord": (with_bad(float_labels), second, "expected an int64 list"),
        "twoids.tfrecord": (with_bad(two_ids), second, "must hold one bytes value"),
        "nan.tfrecord": (with_bad(nan), second, "NaN"),
        "corrupt.tfrecord.gz": (bytes(bad_gz), None, "GZIP"),
        "segments.tfrecord": (tfrecord_bytes(frames), 0, "segment label 9999 outside"),
        "labels.tfrecord": (with_bad(video_example("l", [5000], RGB, AUDIO)), second, "label index 5000"),
        "groups.tfrecord": (with_bad(int64_feature([1]) + b"\x0b"), second, "not a tf.train.Example"),
    }


def _run(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        run([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def test_inspect_and_convert_refuse_each_malformed_file(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name, (content, offset, words) in _files(tmp_path).items():
        path = data / name
        path.write_bytes(content)
        for command in (["data", "inspect", path], ["data", "convert", path, tmp_path / "store"]):
            code, err = _run(capsys, *command)
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1, (name, command, err)
            assert lines[0].startswith(f"error: {path}") and words in lines[0], (name, lines)
            if offset is not None:
                assert f"(record at byte {offset})" in lines[0], (name, lines)
            else:
                assert "(record at byte " in lines[0]  # GZIP: the offset in the inflated stream
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], name  # no store, no temp store
        path.unlink()


def test_convert_keeps_nothing_when_a_later_shard_is_bad(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a0000.tfrecord").write_bytes(tfrecord_bytes([good(i) for i in range(30)]))
    spans_bytes = tfrecord_bytes([good(i) for i in range(30)])
    (data / "a0001.tfrecord").write_bytes(spans_bytes[: len(spans_bytes) - 7])
    code, err = _run(capsys, "data", "convert", data, tmp_path / "store", "--classes", 10)
    assert code == 2 and "a0001.tfrecord (record at byte" in err and "truncated" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_inspect_fifo_exits_at_once_in_a_real_process(tmp_path):
    fifo = tmp_path / "pipe.tfrecord"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path):
        result = subprocess.run([sys.executable, "-m", "avf", "data", "inspect", str(target)], capture_output=True,
                                text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {fifo}")
        assert "FIFO" in lines[0]


def test_decompression_bomb_of_valid_records(tmp_path, capsys):
    """A small .gz of valid (all-zero) records that would inflate to ~100 MiB: refused at the
    cap, with the offset reached in the inflated stream; no store left behind."""
    import zlib

    record = tfrecord_bytes([video_example("z", [1], np.zeros(1024, np.float32), np.zeros(128, np.float32))])
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = record * 256
    path = tmp_path / "bomb.tfrecord.gz"
    path.write_bytes(b"".join([deflate.compress(block) for _ in range(100 * (1 << 20) // len(block))] + [deflate.flush()]))
    assert path.stat().st_size < 1 << 20
    for command in (["data", "inspect", path], ["data", "convert", path, tmp_path / "store"]):
        code, err = _run(capsys, *command)
        assert code == 2 and err.startswith(f"error: {path} (record at byte ") and "decompressed size exceeds" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.tfrecord.gz"]
