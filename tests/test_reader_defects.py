"""One regression test per defect class of the reader fuzz campaign, each from bytes it writes.

Every bad input must end in an InputError subclass naming the file and the byte offset of
the record (never a foreign exception), and both readers must apply the same checks.
"""

from __future__ import annotations

import gzip
import os
import signal
import struct
import threading
import tracemalloc
import zlib
from contextlib import contextmanager

import numpy as np
import pytest

import avf.data.tfrecord as tfrecord
from avf.data import iter_batches, iter_records
from avf.errors import InputError, RecordError, SchemaError
from test_reader_encoder import (
    bytes_feature,
    delimited,
    example,
    float_feature,
    frame_example,
    frame_record,
    int64_feature,
    record_spans,
    sequence_example,
    tag,
    tfrecord_bytes,
    video_example,
)

RNG = np.random.default_rng(10)
RGB = RNG.normal(size=1024).astype(np.float32)
AUDIO = RNG.normal(size=128).astype(np.float32)
CODES = RNG.integers(0, 256, (4, 1024), dtype=np.uint8)


def good(i=0):
    return video_example(f"v{i:03d}", [i % 7, 11], RGB + i, AUDIO - i)


def write(tmp_path, payloads, name="bad.tfrecord"):
    path = tmp_path / name
    path.write_bytes(tfrecord_bytes(payloads))
    return path


def refused(path, cls=InputError, readers=("records", "batches"), **kwargs):
    """Both readers refuse ``path`` with the same error class, problem and offset."""
    errors = []
    for reader in readers:
        with pytest.raises(InputError) as err:
            if reader == "records":
                list(iter_records(path, **kwargs))
            else:
                list(iter_batches(path, 8, **kwargs))
        assert isinstance(err.value, cls), err.value
        message = str(err.value)
        assert message.startswith(str(path)) and "\n" not in message
        errors.append((type(err.value), err.value.problem, err.value.offset))
    assert len(set(errors)) == 1, errors
    return errors[0]


def offset_of(path, index):
    return record_spans(path.read_bytes())[index][0]


# ----------------------------------------------------------------------------- 1. foreign exceptions


def test_packed_float_block_not_a_multiple_of_4(tmp_path):
    bad_rgb = delimited(2, delimited(1, RGB.tobytes()[:-2]))  # 4094 bytes
    payload = example([("id", bytes_feature([b"x"])), ("labels", int64_feature([1])), ("mean_rgb", bad_rgb),
                       ("mean_audio", float_feature(AUDIO))])
    path = write(tmp_path, [good(), payload])
    cls, problem, offset = refused(path, RecordError)
    assert "not a multiple of 4" in problem and offset == offset_of(path, 1)


def test_frame_segment_scores_not_a_multiple_of_4(tmp_path):
    payload = frame_example("f", [1], CODES, CODES[:, :128], segments=([0], [1], [1.0]))
    bad = payload.replace(delimited(1, np.float32(1.0).tobytes()), delimited(1, b"\x00\x00\x80"))
    assert bad != payload
    path = write(tmp_path, [bad])
    cls, problem, offset = refused(path, RecordError, readers=("records",))
    assert "not a multiple of 4" in problem and offset == 0


def test_corrupt_deflate_stream_in_gzip_shard(tmp_path):
    data = gzip.compress(tfrecord_bytes([good(i) for i in range(20)]))
    corrupt = bytearray(data)
    for i in range(40, 60):
        corrupt[i] ^= 0xFF
    path = tmp_path / "bad.tfrecord.gz"
    path.write_bytes(bytes(corrupt))
    cls, problem, offset = refused(path, RecordError)
    assert "GZIP" in problem and offset is not None
    truncated = tmp_path / "short.tfrecord.gz"
    truncated.write_bytes(data[: len(data) // 2])
    cls, problem, offset = refused(truncated, RecordError)
    assert "truncated" in problem or "GZIP" in problem


def _bomb(records: int, record_bytes: int) -> bytes:
    one = frame_record(b"\x00" * record_bytes)  # valid framing, highly compressible
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join([deflate.compress(one) for _ in range(records)] + [deflate.flush()])


def test_decompression_bomb_is_refused_with_bounded_memory(tmp_path):
    path = tmp_path / "bomb.tfrecord.gz"
    path.write_bytes(_bomb(160, 1 << 20))  # ~160 KB inflating to 160 MiB
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(RecordError, match="decompressed size exceeds") as err:
            for _ in tfrecord.iter_payloads(path):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak  # streamed: a chunk and a record, never the whole
    assert err.value.offset is not None and str(path) in str(err.value)


@pytest.mark.slow
def test_one_mb_gzip_inflating_to_a_gib_under_a_memory_limit(tmp_path):
    import resource
    import subprocess
    import sys

    path = tmp_path / "bomb.tfrecord.gz"
    path.write_bytes(_bomb(1024, 1 << 20))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
            "from avf.data.tfrecord import iter_payloads; from avf.errors import RecordError\n"
            "try:\n    [None for _ in iter_payloads(sys.argv[1])]\nexcept RecordError as e:\n    print(e); sys.exit(2)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "decompressed size exceeds" in result.stdout, result.stderr
    assert resource  # the limit is set in the child


def _frame_bomb(path, frames: int) -> None:
    """One SequenceExample of ``frames`` all-zero frames in a GZIP member, then a second member of
    incompressible bytes that lifts the file's 100x inflation cap above the record's size."""
    rgb, audio = bytes_feature([bytes(1024)]), bytes_feature([bytes(128)])
    payload = sequence_example([("id", bytes_feature([b"long"])), ("labels", int64_feature([1]))],
                               [("rgb", [rgb] * frames), ("audio", [audio] * frames)])
    noise = np.random.default_rng(0).integers(0, 256, len(payload) // 120, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(frame_record(payload), 9) + gzip.compress(noise, 1))


def _peak_rss_mib(code: str, *args) -> tuple[int, str, float]:
    """Run ``code`` in a fresh interpreter; (exit code, output, its peak resident memory in MiB).

    The peak is the process's own high-water mark (VmHWM): getrusage's ru_maxrss would also count
    the test process it was forked from, which exec does not reset."""
    import subprocess
    import sys

    peak = "[int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')][0] / 1024"
    wrapper = ("import sys\ntry:\n" + "".join(f"    {line}\n" for line in code.splitlines())
               + f"finally:\n    print('PEAK', {peak}, flush=True)\n")
    result = subprocess.run([sys.executable, "-c", wrapper, *map(str, args)], capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    peak = float(output.rsplit("PEAK", 1)[1].split()[0])
    return result.returncode, output, peak


def test_a_video_longer_than_the_frame_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "long.tfrecord.gz"
    _frame_bomb(path, 200_000)  # 2.7 MB holding a 232 MB record
    assert path.stat().st_size < 3 << 20
    baseline = _peak_rss_mib("from avf.data import iter_records\nimport avf.cli.app")[2]
    for code in ("from avf.data import iter_records\nfrom avf.errors import InputError\ntry:\n"
                 "    list(iter_records(sys.argv[1]))\nexcept InputError as exc:\n    sys.exit(f'error: {exc}')",
                 "from avf.cli.app import run\nrun(['data', 'inspect', sys.argv[1]])",
                 "from avf.cli.app import run\nrun(['data', 'convert', sys.argv[1], sys.argv[2]])"):
        returncode, output, peak = _peak_rss_mib(code, path, tmp_path / "store")
        assert returncode != 0 and "more than the 300 frames a video may have" in output, output
        assert "AVF_MAX_FRAMES" in output and "Traceback" not in output
        assert peak - baseline < 64, (code, peak, baseline)  # it was 1 to 4.5 GB
    assert not (tmp_path / "store").exists()


def test_the_frame_cap_is_a_setting(tmp_path, monkeypatch):
    codes = RNG.integers(0, 256, (301, 1024), dtype=np.uint8)
    path = write(tmp_path, [frame_example("long", [1], codes, codes[:, :128])])
    cls, problem, offset = refused(path, SchemaError, readers=("records",))
    assert "301 frames, more than the 300 a video may have" in problem and offset == 0
    monkeypatch.setenv("AVF_MAX_FRAMES", "400")
    (record,) = iter_records(path, dequantize_frames=False)
    assert np.array_equal(record.rgb, codes)
    monkeypatch.setenv("AVF_MAX_FRAMES", "many")
    with pytest.raises(InputError, match="AVF_MAX_FRAMES='many'"):
        list(iter_records(path))


# ----------------------------------------------------------------------------- 2. iter_batches misalignment


def test_1023_then_1025_floats_are_refused_by_both_readers(tmp_path):
    short = example([("id", bytes_feature([b"a"])), ("mean_rgb", float_feature(RGB[:1023])),
                     ("mean_audio", float_feature(AUDIO))])
    long = example([("id", bytes_feature([b"b"])), ("mean_rgb", float_feature(np.r_[RGB, 1.0])),
                    ("mean_audio", float_feature(AUDIO))])
    path = write(tmp_path, [good(), short, long])
    cls, problem, offset = refused(path, SchemaError)
    assert "'mean_rgb' has 1023 values, expected 1024" in problem and offset == offset_of(path, 1)


def test_two_id_values_are_refused_by_both_readers(tmp_path):
    payload = example([("id", bytes_feature([b"a", b"b"])), ("mean_rgb", float_feature(RGB)),
                       ("mean_audio", float_feature(AUDIO))])
    path = write(tmp_path, [good(), payload])
    cls, problem, offset = refused(path, SchemaError)
    assert "'id' must hold one bytes value, found 2" in problem and offset == offset_of(path, 1)


# ----------------------------------------------------------------------------- 3. wrong types


@pytest.mark.parametrize("labels, kind", [(float_feature([1.0, 2.0]), "a float list"),
                                          (bytes_feature([b"1"]), "a bytes list")])
def test_labels_of_the_wrong_kind(tmp_path, tf, labels, kind):
    payload = example([("id", bytes_feature([b"a"])), ("labels", labels), ("mean_rgb", float_feature(RGB)),
                       ("mean_audio", float_feature(AUDIO))])
    path = write(tmp_path, [payload])
    cls, problem, offset = refused(path, SchemaError)
    assert f"'labels' is {kind}, expected an int64 list" in problem
    spec = {"labels": tf.io.VarLenFeature(tf.int64)}
    with pytest.raises(tf.errors.InvalidArgumentError):  # TensorFlow refuses it too
        tf.io.parse_single_example(payload, spec)


def test_frame_feature_with_two_byte_strings(tmp_path, tf):
    frames = [bytes_feature([row.tobytes()]) for row in CODES]
    frames[2] = bytes_feature([CODES[2].tobytes(), CODES[3].tobytes()])
    audio = [bytes_feature([row[:128].tobytes()]) for row in CODES]
    payload = sequence_example([("id", bytes_feature([b"f"]))], [("rgb", frames), ("audio", audio)])
    path = write(tmp_path, [payload])
    cls, problem, offset = refused(path, SchemaError, readers=("records",))
    assert "'rgb' frame 2 holds 2 byte strings, expected 1" in problem


def test_ambiguous_encodings_tensorflow_and_protobuf_disagree_on(tmp_path):
    base = [("id", bytes_feature([b"a"])), ("mean_rgb", float_feature(RGB)), ("mean_audio", float_feature(AUDIO))]
    cases = {
        "appears more than once": example(base + [("id", bytes_feature([b"z"]))]),
        "more than one value list": example(base + [("labels", int64_feature([1]) + bytes_feature([b"x"]))]),
        "several packed blocks": example(base + [("labels", delimited(3, delimited(1, b"\x01") + delimited(1, b"\x02")))]),
        "float list is split": example(base[:1] + [("mean_rgb", float_feature(RGB, blocks=2)), base[2]]),
    }
    for i, (fragment, payload) in enumerate(cases.items()):
        path = write(tmp_path, [payload], f"amb{i}.tfrecord")
        cls, problem, offset = refused(path)
        assert fragment in problem, problem


def test_a_key_repeated_with_the_same_value_is_read_as_tensorflow_reads_it(tmp_path, tf):
    base = [("id", bytes_feature([b"a"])), ("labels", int64_feature([3, 1])), ("mean_rgb", float_feature(RGB)),
            ("mean_audio", float_feature(AUDIO))]
    payload = example(base + [("id", bytes_feature([b"a"])), ("labels", int64_feature([3, 1]))])
    path = write(tmp_path, [good(), payload])
    records = list(iter_records(path))
    (batch,) = iter_batches(path, 8)
    assert records[1].id == "a" and records[1].labels.tolist() == [3, 1]
    assert batch.ids[1] == "a" and batch.label_indices[batch.label_indptr[1]:batch.label_indptr[2]].tolist() == [3, 1]
    spec = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    parsed = tf.io.parse_single_example(payload, spec)
    assert parsed["id"].numpy() == b"a" and tf.sparse.to_dense(parsed["labels"]).numpy().tolist() == [3, 1]
    lists = [(key, [bytes_feature([row.tobytes()]) for row in codes]) for key, codes in
             (("rgb", CODES), ("audio", CODES[:, :128]))]
    frames = sequence_example([("id", bytes_feature([b"f"])), ("id", bytes_feature([b"f"]))], lists + lists[:1])
    (record,) = iter_records(write(tmp_path, [frames], "frames.tfrecord"), dequantize_frames=False)
    assert record.id == "f" and np.array_equal(record.rgb, CODES)


# ----------------------------------------------------------------------------- 4. legal encodings


def test_unpacked_segment_scores_and_labels_are_read(tmp_path, tf):
    context = [("id", bytes_feature([b"f"])), ("labels", int64_feature([4, 2], packed=False)),
               ("segment_start_times", int64_feature([0, 5], packed=False)),
               ("segment_labels", int64_feature([4, 2])),
               ("segment_scores", float_feature([1.0, 0.5], packed=False))]
    lists = [(key, [bytes_feature([row.tobytes()]) for row in codes]) for key, codes in
             (("rgb", CODES), ("audio", CODES[:, :128]))]
    payload = sequence_example(context, lists)
    path = write(tmp_path, [payload])
    (record,) = iter_records(path)
    assert record.labels.tolist() == [4, 2] and record.segment_start_times.tolist() == [0, 5]
    assert record.segment_scores.tolist() == [1.0, 0.5]
    spec = {"segment_scores": tf.io.VarLenFeature(tf.float32)}
    ctx, _ = tf.io.parse_single_sequence_example(payload, spec, {})
    assert np.array_equal(tf.sparse.to_dense(ctx["segment_scores"]).numpy(), record.segment_scores)


def test_unpacked_video_features_read_by_both_readers(tmp_path):
    payload = example([("mean_audio", float_feature(AUDIO, packed=False)), ("labels", int64_feature([9], packed=False)),
                       ("id", bytes_feature([b"u"])), ("mean_rgb", float_feature(RGB, packed=False))])
    path = write(tmp_path, [good(), payload, good(2)])
    records = list(iter_records(path))
    (batch,) = iter_batches(path, 8)
    assert np.array_equal(records[1].rgb, RGB) and np.array_equal(batch.rgb[1], RGB)
    assert records[1].labels.tolist() == [9] and batch.label_indices[batch.label_indptr[1]] == 9


# ----------------------------------------------------------------------------- 5. segments


@pytest.mark.parametrize("segments, fragment", [
    (([0, 5], [1, 2], [1.0, np.nan]), "'segment_scores' holds NaN or inf"),
    (([0, 5], [1, 2], [np.inf, 0.0]), "'segment_scores' holds NaN or inf"),
    (([0, 5], [1, 3862], [1.0, 0.0]), "segment label 3862 outside the vocabulary"),
    (([0, 5], [1, -2], [1.0, 0.0]), "negative segment label -2"),
    (([0, -5], [1, 2], [1.0, 0.0]), "negative segment start time -5"),
    (([0, 5, 10], [1, 2], [1.0, 0.0]), "segment annotations of different lengths"),
    (([0], [1], [1.0, 0.0]), "segment annotations of different lengths"),
])
def test_segment_annotations_are_validated(tmp_path, segments, fragment):
    path = write(tmp_path, [frame_example("ok", [1], CODES, CODES[:, :128]),
                            frame_example("seg", [1], CODES, CODES[:, :128], segments=segments)])
    cls, problem, offset = refused(path, SchemaError, readers=("records",))
    assert fragment in problem and offset == offset_of(path, 1)


def test_partial_segment_annotations(tmp_path):
    payload = sequence_example([("id", bytes_feature([b"s"])), ("segment_labels", int64_feature([1]))],
                               [("rgb", [bytes_feature([CODES[0].tobytes()])]),
                                ("audio", [bytes_feature([CODES[0, :128].tobytes()])])])
    cls, problem, _ = refused(write(tmp_path, [payload]), SchemaError, readers=("records",))
    assert "segment annotations without 'segment_start_times'" in problem


# ----------------------------------------------------------------------------- 6. compression by content


def _payload_of_length(length):
    """A valid video-level record of exactly ``length`` bytes (padded with an ignored feature)."""
    def build(pad):
        return example([("id", bytes_feature([b"p"])), ("mean_rgb", float_feature(RGB)),
                        ("mean_audio", float_feature(AUDIO)), ("padding", bytes_feature([b"\0" * pad]))])

    guess = length - len(build(0))
    for pad in range(guess, guess - 32, -1):
        if len(build(pad)) == length:
            return build(pad)
    raise AssertionError("no padding gives that length")


def test_plain_shard_whose_first_length_starts_with_gzip_magic(tmp_path):
    payload = _payload_of_length(0x8B1F)
    data = tfrecord_bytes([payload, good()])
    assert data[:2] == b"\x1f\x8b"
    for name in ("magic.tfrecord", "magic.tfrecord.gz"):  # the name does not decide, the framing does
        path = tmp_path / name
        path.write_bytes(data)
        assert [r.id for r in iter_records(path)] == ["p", "v000"]
        assert [len(b) for b in iter_batches(path, 8)] == [2]
    gz = tmp_path / "real.tfrecord"  # and GZIP content without a .gz name is still found
    gz.write_bytes(gzip.compress(data))
    assert [r.id for r in iter_records(gz)] == ["p", "v000"]


# ----------------------------------------------------------------------------- 7. files that change


def test_shard_truncated_while_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(tfrecord, "CHUNK_BYTES", 16 << 10)  # read in small steps
    path = write(tmp_path, [good(i) for i in range(40)], "shrinking.tfrecord")
    spans = record_spans(path.read_bytes())
    payloads = tfrecord.iter_payloads(path)  # what both readers read through
    with pytest.raises(RecordError, match="truncated") as err:
        for i, _ in enumerate(payloads):
            if i == 0:
                os.truncate(path, spans[20][0] + 100)  # another process cuts the file
    assert err.value.offset == spans[20][0]
    with pytest.raises(RecordError, match="truncated"):
        list(iter_records(path))


@contextmanager
def _deadline(seconds):
    def fail(*_):
        raise TimeoutError("blocked")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.tfrecord"
    os.mkfifo(fifo)
    with _deadline(10):
        for spec in (fifo, str(tmp_path / "pipe*.tfrecord"), tmp_path):
            with pytest.raises(InputError, match="FIFO"):
                list(iter_records(spec))
        with pytest.raises(RecordError, match="not a regular file"):
            list(tfrecord.iter_payloads(fifo))
    assert threading.active_count() >= 1


def test_literal_path_with_glob_characters(tmp_path):
    path = write(tmp_path, [good(1)], "clip[1].tfrecord")
    assert [r.id for r in iter_records(path)] == ["v001"]
    assert [r.id for r in iter_records(str(path))] == ["v001"]
    write(tmp_path, [good(2)], "clip1.tfrecord")  # as a pattern it would match this one instead
    assert [r.id for r in iter_records(str(path))] == ["v001"]


# ----------------------------------------------------------------------------- errors in file order


def test_first_bad_record_is_blamed_whatever_the_kind_of_damage(tmp_path):
    """A schema error early in a batch wins over a CRC error later in it, and the good records
    before it come out of iter_records first."""
    payloads = [good(i) for i in range(6)]
    payloads[2] = video_example("bad", [1], np.r_[RGB[:-1], np.nan], AUDIO)
    data = bytearray(tfrecord_bytes(payloads))
    spans = record_spans(bytes(data))
    data[spans[4][0] + 40] ^= 1  # payload CRC error in record 4
    path = tmp_path / "two.tfrecord"
    path.write_bytes(bytes(data))
    seen = []
    with pytest.raises(SchemaError, match="NaN") as err:
        for record in iter_records(path):
            seen.append(record.id)
    assert seen == ["v000", "v001"] and err.value.offset == spans[2][0]
    with pytest.raises(SchemaError) as err:
        list(iter_batches(path, 4))
    assert err.value.offset == spans[2][0]


def test_garbage_varints_and_groups_are_record_errors(tmp_path):
    cases = [
        example([("id", bytes_feature([b"a"]))]) + tag(3, 3),  # group wire type
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # varint longer than 10 bytes
        b"\x0a\x05\x0a\x03",  # length past the end
        struct.pack("<B", 0x0A) + b"\x80",  # truncated varint
    ]
    for i, payload in enumerate(cases):
        path = write(tmp_path, [good(), payload], f"g{i}.tfrecord")
        cls, problem, offset = refused(path, RecordError)
        assert offset == offset_of(path, 1) and "not a tf.train.Example" in problem


def test_readers_abandoned_mid_way_never_hang(tmp_path):
    """A reader dropped after an error (or by a consumer that stops) is collected without
    waiting on anything (a read-ahead thread pool once deadlocked here)."""
    import gc

    bad = [good(0), video_example("nan", [1], np.r_[RGB[:-1], np.nan], AUDIO)]
    for i in range(4):
        write(tmp_path, bad if i == 0 else [good(j) for j in range(30)], f"s{i}.tfrecord")
    with _deadline(60):
        for round_ in range(60):
            with pytest.raises(SchemaError):
                list(iter_batches(tmp_path, 8))
            records = iter_records(tmp_path)
            next(records)
            del records
            if round_ % 10 == 0:
                gc.collect()
    assert threading.active_count() < 20
