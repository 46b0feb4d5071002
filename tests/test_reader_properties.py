"""Property tests: valid records round-trip exactly; mutated shards end in identical records or
an InputError naming the file and a record offset, never another exception, never other data.

Records are written by the independent encoder in ``test_reader_encoder`` (every legal
encoding variant TensorFlow reads: any entry order, packed or unpacked values, extra
features, the empty ``feature_lists`` real shards carry). TensorFlow is the reference for
mutated records: whatever we accept, it must accept with the same values.

The default run is short and seeded (derandomized); ``-m slow`` runs the long campaign.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avf.data.youtube8m as y8m
from avf.data import iter_batches, iter_records
from avf.errors import InputError
from test_reader_encoder import (
    bytes_feature,
    example,
    float_feature,
    frame_example,
    int64_feature,
    record_spans,
    reframe,
    tfrecord_bytes,
)

SHORT = settings(max_examples=25, derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LONG = settings(max_examples=1500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLASSES = 3862


@st.composite
def video_records(draw):
    """(id, labels, rgb, audio, payload) with a random legal encoding."""
    video_id = draw(st.text(min_size=1, max_size=12))
    labels = draw(st.lists(st.integers(0, CLASSES - 1), max_size=8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rgb = rng.normal(0, draw(st.sampled_from([0.5, 1e-30, 1e30])), 1024).astype(np.float32)
    audio = rng.normal(0, 1, 128).astype(np.float32)
    special = draw(st.sampled_from([None, -0.0, np.float32(1e-45), np.float32(3.4e38)]))
    if special is not None:
        rgb[draw(st.integers(0, 1023))] = special
    entries = [("id", bytes_feature([video_id.encode()])),
               ("mean_rgb", float_feature(rgb, packed=draw(st.booleans()))),
               ("mean_audio", float_feature(audio, packed=draw(st.booleans())))]
    if labels or draw(st.booleans()):
        entries.append(("labels", int64_feature(labels, packed=draw(st.booleans()))))
    for key in draw(st.lists(st.sampled_from(["extra", "segment_x", "mean_rgbx", "i", "labelz"]), max_size=2, unique=True)):
        entries.append((key, draw(st.sampled_from([bytes_feature([b"x"]), float_feature([1.5]), int64_feature([3])]))))
    entries = draw(st.permutations(entries))
    payload = example(entries, empty_feature_lists=draw(st.booleans()))
    return video_id, np.array(labels, np.int64), rgb, audio, payload


@st.composite
def frame_records(draw):
    video_id = draw(st.text(min_size=1, max_size=8))
    labels = draw(st.lists(st.integers(0, CLASSES - 1), max_size=5))
    frames = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rgb = rng.integers(0, 256, (frames, 1024), dtype=np.uint8)
    audio = rng.integers(0, 256, (frames, 128), dtype=np.uint8)
    segments = None
    if draw(st.booleans()):
        k = draw(st.integers(0, 3))
        segments = (rng.integers(0, 300, k), rng.integers(0, CLASSES, k), rng.random(k).astype(np.float32))
    return video_id, np.array(labels, np.int64), rgb, audio, segments, frame_example(video_id, labels, rgb, audio, segments)


def _bits(array):
    return np.ascontiguousarray(array, np.float32).view(np.uint32)


def _read_all(path, level):
    """Everything both readers give for ``path`` (both paths of the decoder): ('ok', records)
    or ('error', class, problem, offset). Any exception other than InputError fails the test."""
    outcomes = []
    for exact in (False, True):
        y8m.FORCE_EXACT = exact
        try:
            try:
                records = [(r.id, r.labels.tolist(), _bits(r.rgb).tobytes() if r.level == "video" else r.rgb.tobytes(),
                            _bits(r.audio).tobytes() if r.level == "video" else r.audio.tobytes(), r.level)
                           for r in iter_records(path, dequantize_frames=False)]
                outcomes.append(("ok", records))
            except InputError as err:
                assert str(err).startswith(str(path)) and "\n" not in str(err)
                outcomes.append(("error", type(err), err.problem, err.offset))
            if level == "video":
                try:
                    batched = []
                    for batch in iter_batches(path, 3):
                        for i, video_id in enumerate(batch.ids):
                            labels = batch.label_indices[batch.label_indptr[i] : batch.label_indptr[i + 1]].tolist()
                            batched.append((video_id, labels, _bits(batch.rgb[i]).tobytes(),
                                            _bits(batch.audio[i]).tobytes(), "video"))
                    outcomes.append(("ok", batched))
                except InputError as err:
                    outcomes.append(("error", type(err), err.problem, err.offset))
        finally:
            y8m.FORCE_EXACT = False
    if outcomes[0][0] == "ok" and any(r[4] == "frame" for r in outcomes[0][1]):
        outcomes = outcomes[::2]  # iter_batches refuses frame-level records by design
    assert all(outcome == outcomes[0] for outcome in outcomes), outcomes
    return outcomes[0]


# ----------------------------------------------------------------------------- round trips


def _check_round_trip(tmp_path, records, compress):
    data = tfrecord_bytes([r[-1] for r in records])
    path = tmp_path / ("rt.tfrecord.gz" if compress else "rt.tfrecord")
    path.write_bytes(gzip.compress(data) if compress else data)
    outcome = _read_all(path, "video")
    assert outcome[0] == "ok", outcome
    got = outcome[1]
    assert len(got) == len(records)
    for (video_id, labels, rgb, audio, _), (gid, glabels, grgb, gaudio, level) in zip(records, got):
        assert gid == video_id and glabels == labels.tolist() and level == "video"
        assert grgb == _bits(rgb).tobytes() and gaudio == _bits(audio).tobytes()  # bit for bit


#: Each property runs short and seeded by default, and as a long campaign with ``-m slow``.
RUNS = ["short", pytest.param("campaign", marks=pytest.mark.slow)]
BUDGET = {"short": SHORT, "campaign": LONG}
#: The records each level's shards are made of, and at most how many a shard holds in each run.
LEVELS = {"video": (video_records(), {"short": 4, "campaign": 6}),
          "frame": (frame_records(), {"short": 3, "campaign": 3})}


@pytest.mark.parametrize("run", RUNS)
def test_valid_video_records_round_trip_exactly(tmp_path_factory, run):
    @BUDGET[run]
    @given(records=st.lists(video_records(), min_size=1, max_size={"short": 6, "campaign": 8}[run]),
           compress=st.booleans())
    def round_trip(records, compress):
        _check_round_trip(tmp_path_factory.mktemp("rt"), records, compress)

    round_trip()


def _check_frame_round_trip(tmp_path, records):
    path = tmp_path / "frames.tfrecord"
    path.write_bytes(tfrecord_bytes([r[-1] for r in records]))
    got = list(iter_records(path, dequantize_frames=False))
    assert len(got) == len(records)
    for (video_id, labels, rgb, audio, segments, _), record in zip(records, got):
        assert record.id == video_id and record.level == "frame"
        assert np.array_equal(record.labels, labels)
        assert np.array_equal(record.rgb, rgb) and np.array_equal(record.audio, audio)
        if segments is None:
            assert record.segment_scores is None
        else:
            assert np.array_equal(record.segment_start_times, segments[0])
            assert np.array_equal(record.segment_labels, segments[1])
            assert np.array_equal(_bits(record.segment_scores), _bits(segments[2]))


@SHORT
@given(records=st.lists(frame_records(), min_size=1, max_size=4))
def test_valid_frame_records_round_trip_exactly(tmp_path_factory, records):
    _check_frame_round_trip(tmp_path_factory.mktemp("frt"), records)


# ----------------------------------------------------------------------------- mutations


@st.composite
def mutations(draw, size):
    kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
    at = draw(st.integers(0, 2**31))  # reduced modulo the size of what is mutated
    return kind, at, draw(st.integers(0, 255)), draw(st.integers(1, 8))


def _mutate(data: bytes, mutation) -> bytes:
    kind, at, value, width = mutation
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << (value % 8))]) + data[at + 1 :]
    if kind == "set":
        return data[:at] + bytes([value]) * width + data[at + width :]
    if kind == "insert":
        return data[:at] + bytes([value]) * width + data[at:]
    if kind == "delete":
        return data[:at] + data[at + width :]
    return data[:at]


_TF_SPEC = None


def _tensorflow_view(tf, payload):
    global _TF_SPEC
    if _TF_SPEC is None:
        _TF_SPEC = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64),
                    "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
                    "mean_audio": tf.io.FixedLenFeature([128], tf.float32)}
    parsed = tf.io.parse_single_example(payload, _TF_SPEC)
    return (parsed["id"].numpy().decode("utf-8"), parsed["labels"].values.numpy().tolist(),
            _bits(parsed["mean_rgb"].numpy()).tobytes(), _bits(parsed["mean_audio"].numpy()).tobytes(), "video")


def _check_mutation(tf, tmp_path, payloads, where, mutation, recompute_crcs, level):
    original = tfrecord_bytes(payloads)
    spans = record_spans(original)
    if recompute_crcs:  # mutate one payload, keep the framing valid: the protobuf layer sees it
        index = where % len(payloads)
        mutated_payloads = list(payloads)
        mutated_payloads[index] = _mutate(payloads[index], mutation) if payloads[index] else payloads[index]
        data = reframe(tfrecord_bytes(mutated_payloads))
    else:
        data = _mutate(original, mutation)
    path = tmp_path / "m.tfrecord"
    path.write_bytes(data)
    outcome = _read_all(path, level)
    if outcome[0] == "error":
        _, cls, problem, offset = outcome
        assert isinstance(offset, int) and offset >= 0, outcome
        valid_offsets = {start for start, _ in record_spans(data)} if recompute_crcs else {s for s, _ in spans} | {len(data)}
        assert offset in valid_offsets or offset <= len(data), outcome
        if recompute_crcs:
            assert offset in valid_offsets, outcome
        return
    got = outcome[1]
    if not recompute_crcs:  # the CRCs still hold: only an unchanged file can read
        assert data == original or data == tfrecord_bytes(payloads[: len(got)]), "a damaged file was accepted"
    if level == "video" and tf is not None:
        final = [data[s + 12 : s + 12 + n] for s, n in record_spans(data)]
        for record, payload in zip(got, final):
            assert _tensorflow_view(tf, payload) == record  # TensorFlow reads the same values


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("run", RUNS)
def test_mutated_shards(request, tmp_path_factory, run, level):
    """TensorFlow checks what the video-level readers accept; frame level has no TensorFlow view here."""
    tf = request.getfixturevalue("tf") if level == "video" else None
    strategy, most = LEVELS[level]

    @BUDGET[run]
    @given(records=st.lists(strategy, min_size=1, max_size=most[run]), where=st.integers(0, 10**6),
           mutation=mutations(40000), recompute=st.booleans())
    def mutated(records, where, mutation, recompute):
        payloads = [r[-1] for r in records]
        kind, at, value, width = mutation
        size = len(payloads[where % len(payloads)]) if recompute else len(tfrecord_bytes(payloads))
        _check_mutation(tf, tmp_path_factory.mktemp("m" + level[0]), payloads, where,
                        (kind, at % max(size, 1), value, width), recompute, level)

    mutated()


@SHORT
@given(data=st.binary(max_size=300))
def test_arbitrary_payloads_never_escape_as_foreign_exceptions(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("arb") / "arb.tfrecord"
    path.write_bytes(tfrecord_bytes([data]))
    outcome = _read_all(path, "video")
    assert outcome[0] == "error" and outcome[3] == 0

