"""Write YouTube-8M records: video-level Examples and frame-level SequenceExamples.

Kept apart from the readers because nothing that reads needs it: synthetic data, tests and
tools write records, and they write them byte for byte as TensorFlow does.
"""

from __future__ import annotations

import numpy as np

from avf.data.example_proto import RawRecord


def encode_video_example(video_id: str, labels, mean_rgb, mean_audio) -> bytes:
    """Serialize a video-level ``tf.train.Example`` (byte-compatible with TensorFlow's)."""
    record = RawRecord()
    features = record.features.feature
    features["id"].bytes_list.value.append(video_id.encode("utf-8"))
    features["labels"].int64_list.value.extend(int(label) for label in labels)
    features["mean_rgb"].float_list.value.append(np.ascontiguousarray(mean_rgb, "<f4").tobytes())
    features["mean_audio"].float_list.value.append(np.ascontiguousarray(mean_audio, "<f4").tobytes())
    return record.SerializeToString(deterministic=True)


def encode_frame_example(
    video_id: str,
    labels,
    rgb_codes: np.ndarray,
    audio_codes: np.ndarray,
    segment_start_times=None,
    segment_labels=None,
    segment_scores=None,
) -> bytes:
    """Serialize a frame-level ``tf.train.SequenceExample`` from uint8 codes (T, 1024)/(T, 128)."""
    if rgb_codes.dtype != np.uint8 or audio_codes.dtype != np.uint8:
        raise TypeError("frame features must be uint8 codes; use quantize() first")
    record = RawRecord()
    context = record.features.feature
    context["id"].bytes_list.value.append(video_id.encode("utf-8"))
    context["labels"].int64_list.value.extend(int(label) for label in labels)
    if segment_start_times is not None:
        context["segment_start_times"].int64_list.value.extend(int(t) for t in segment_start_times)
        context["segment_labels"].int64_list.value.extend(int(c) for c in segment_labels)
        context["segment_scores"].float_list.value.append(np.asarray(segment_scores, "<f4").tobytes())
    lists = record.feature_lists.feature_list
    for key, codes in (("rgb", rgb_codes), ("audio", audio_codes)):
        frames = lists[key].feature
        for row in codes:
            frames.add().bytes_list.value.append(row.tobytes())
    return record.SerializeToString(deterministic=True)
