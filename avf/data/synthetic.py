"""Synthetic YouTube-8M: real TFRecords in the official schema, learnable, shaped like the real data.

Why each choice:
- Class frequencies follow a Zipf law and videos carry 1 + Poisson(2) labels (mean ~3), as in
  the real vocabulary and shards, so GAP behaves as it does on real data (head classes easy,
  tail classes rare).
- Classes belong to topics (verticals). A video picks one topic, often carries the topic's head
  class (a parent like "Vehicle" beside "Car"), and draws most other labels from that topic, so
  labels co-occur the way real ones do.
- Evidence is per modality: most classes have a visual prototype, some (music, speech, engine
  topics mostly) an audio prototype, and a few are audible but hard to see. A fusion model
  therefore beats a visual-only model, which beats an audio-only model.
- Frame-level videos are 30-300 one-second frames built from scenes that each show a subset of
  the video's labels, with per-frame noise, 8-bit quantized as the real features are. The
  validate split carries 2019-style segment annotations (5 s segments, scores 1/0).

The test split keeps its labels (unlike the real one), so it serves as a held-out set.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avf.atomic import atomic_directory, holds_file
from avf.data.tfrecord import TFRecordWriter
from avf.data.vocabulary import VOCABULARY_FILE
from avf.data.youtube8m import AUDIO_DIM, MAX_FRAMES, RGB_DIM, encode_frame_example, encode_video_example, quantize

SYNTHESIS_FILE = "synthesis.json"
# (vertical, probability that one of its classes is audible)
TOPICS: tuple[tuple[str, float], ...] = (
    ("Games", 0.25), ("Music", 0.95), ("Autos & Vehicles", 0.7), ("Food & Drink", 0.1),
    ("Sports", 0.3), ("Pets & Animals", 0.45), ("Beauty & Fitness", 0.15), ("News & Speech", 0.85),
    ("Arts & Entertainment", 0.4), ("Science", 0.2), ("Travel", 0.2), ("Home & Garden", 0.15),
)
VOCABULARY_COLUMNS = ("Index", "TrainVideoCount", "KnowledgeGraphId", "Name", "WikiUrl",
                      "Vertical1", "Vertical2", "Vertical3", "WikiDescription")
ZIPF_EXPONENT = 1.0  # real YouTube-8M class counts fall roughly as 1/rank
EXTRA_LABELS_MEAN = 2.0  # labels per video = 1 + Poisson(2): mean 3, as in the real shards
P_HEAD_CLASS = 0.55  # chance a video carries its topic's parent class
P_OFF_TOPIC = 0.15  # chance each further label comes from another topic
P_VISUAL = 0.85
RGB_STD, AUDIO_STD = 0.46, 0.69  # real per-value spreads of mean_rgb / mean_audio
VIDEOS_PER_SHARD = {"video": 1000, "frame": 100}
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

ProgressFn = Callable[[int], None]


@dataclass
class SynthesisSummary:
    out_dir: Path
    level: str
    classes: int
    seed: int
    videos: dict[str, int]
    files: list[str] = field(default_factory=list)

    def describe(self) -> str:
        splits = ", ".join(f"{split} {count}" for split, count in self.videos.items())
        return f"{self.out_dir}: {self.level}-level, {self.classes} classes, videos {splits}"


@dataclass
class _World:
    """The fixed generative structure shared by all splits."""

    frequency: np.ndarray  # (C,) class prior, Zipf
    topic_of: np.ndarray  # (C,) topic index
    head_of_topic: np.ndarray  # (K,) most frequent class of each topic
    visual: np.ndarray  # (C,) bool: has visual evidence
    audible: np.ndarray  # (C,) bool: has audio evidence
    visual_strength: np.ndarray
    audio_strength: np.ndarray
    rgb_prototypes: np.ndarray  # (C, 1024)
    audio_prototypes: np.ndarray  # (C, 128)
    rgb_topics: np.ndarray  # (K, 1024)
    audio_topics: np.ndarray  # (K, 128)
    rgb_spectrum: np.ndarray  # (1024,) per-dimension scale, decaying like PCA components
    audio_spectrum: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.frequency)


def _unit_rows(rng, rows, dim):
    vectors = rng.standard_normal((rows, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _spectrum(dim: int, std: float) -> np.ndarray:
    decay = (1.0 + np.arange(dim) / (dim / 8)) ** -0.5
    return decay * std / np.sqrt(np.mean(decay**2))


def _build_world(rng: np.random.Generator, classes: int) -> _World:
    topics = min(len(TOPICS), max(1, classes // 4))
    frequency = 1.0 / np.arange(1, classes + 1) ** ZIPF_EXPONENT
    frequency /= frequency.sum()
    topic_of = np.empty(classes, np.int64)
    topic_of[:topics] = rng.permutation(topics)  # every topic gets one frequent (head) class
    topic_of[topics:] = rng.integers(0, topics, classes - topics)
    head_of_topic = np.array([np.flatnonzero(topic_of == k)[0] for k in range(topics)])
    audio_affinity = np.array([TOPICS[k][1] for k in range(topics)])[topic_of]
    audible = rng.random(classes) < audio_affinity
    visual = rng.random(classes) < P_VISUAL
    visual |= ~audible  # every class is learnable from something
    return _World(
        frequency=frequency,
        topic_of=topic_of,
        head_of_topic=head_of_topic,
        visual=visual,
        audible=audible,
        visual_strength=np.where(visual, rng.uniform(0.7, 1.0, classes), rng.uniform(0.0, 0.1, classes)),
        audio_strength=np.where(audible, rng.uniform(0.7, 1.0, classes), 0.0),
        rgb_prototypes=_unit_rows(rng, classes, RGB_DIM),
        audio_prototypes=_unit_rows(rng, classes, AUDIO_DIM),
        rgb_topics=_unit_rows(rng, topics, RGB_DIM),
        audio_topics=_unit_rows(rng, topics, AUDIO_DIM),
        rgb_spectrum=_spectrum(RGB_DIM, RGB_STD),
        audio_spectrum=_spectrum(AUDIO_DIM, AUDIO_STD),
    )


def _draw_labels(rng: np.random.Generator, world: _World, topic: int, topic_members: list[np.ndarray],
                 topic_priors: list[np.ndarray]) -> np.ndarray:
    count = min(1 + rng.poisson(EXTRA_LABELS_MEAN), world.num_classes)
    chosen: set[int] = set()
    if rng.random() < P_HEAD_CLASS:
        chosen.add(int(world.head_of_topic[topic]))
    members, prior = topic_members[topic], topic_priors[topic]
    attempts = 0
    while len(chosen) < count and attempts < 8 * count:
        attempts += 1
        if rng.random() < P_OFF_TOPIC:
            chosen.add(int(rng.choice(world.num_classes, p=world.frequency)))
        else:
            chosen.add(int(members[np.searchsorted(prior, rng.random() * prior[-1])]))
    return np.array(sorted(chosen), np.int64)


def _features(rng, world: _World, topic: int, labels: np.ndarray, rgb_noise: float, audio_noise: float):
    """Unscaled (rgb, audio) evidence of one video or scene: topic + labels' prototypes + noise."""
    rgb = 0.6 * world.rgb_topics[topic] + (world.visual_strength[labels, None] * world.rgb_prototypes[labels]).sum(0)
    audio = 0.6 * world.audio_topics[topic] + (world.audio_strength[labels, None] * world.audio_prototypes[labels]).sum(0)
    # Noise levels are in units of the evidence norm (~2), spread over the dimensions.
    rgb = rgb + rng.standard_normal(RGB_DIM) * (rgb_noise / math.sqrt(RGB_DIM))
    audio = audio + rng.standard_normal(AUDIO_DIM) * (audio_noise / math.sqrt(AUDIO_DIM))
    return rgb, audio


# Noise in units of the evidence norm: tuned so that a small MLP reaches GAPs like real models
# (fusion > visual > audio), not a trivially separable set.
_VIDEO_RGB_NOISE, _VIDEO_AUDIO_NOISE = 6.0, 2.0
# Squared norm of topic + ~3 label prototypes (strength ~0.85) is ~2.6; dividing by the total
# norm gives values of unit spread, which the PCA-like spectrum (RMS = real spread) then shapes.
_EVIDENCE_SQ = 0.36 + 3 * 0.85**2
_RGB_GAIN = math.sqrt(RGB_DIM / (_EVIDENCE_SQ + _VIDEO_RGB_NOISE**2))
_AUDIO_GAIN = math.sqrt(AUDIO_DIM / (_EVIDENCE_SQ + _VIDEO_AUDIO_NOISE**2))
_FRAME_NOISE = 2.5  # per-frame, on top of the per-video nuisance
_FRAME_RGB_GAIN = math.sqrt(RGB_DIM / (_EVIDENCE_SQ + _VIDEO_RGB_NOISE**2 + _FRAME_NOISE**2))
_FRAME_AUDIO_GAIN = math.sqrt(AUDIO_DIM / (_EVIDENCE_SQ + _VIDEO_AUDIO_NOISE**2 + _FRAME_NOISE**2))


def _video_level(rng, world, topic, labels):
    rgb, audio = _features(rng, world, topic, labels, _VIDEO_RGB_NOISE, _VIDEO_AUDIO_NOISE)
    rgb = np.clip(rgb * _RGB_GAIN * world.rgb_spectrum, -2.0, 2.0).astype(np.float32)
    audio = np.clip(audio * _AUDIO_GAIN * world.audio_spectrum, -2.0, 2.0).astype(np.float32)
    return rgb, audio


def _frame_level(rng, world, topic, labels, max_frames):
    """(rgb codes (T, 1024), audio codes (T, 128), scene label sets per frame)."""
    frames = int(np.clip(rng.normal(210, 70), min(30, max_frames), max_frames))
    # A per-video nuisance shared by all frames (as strong as the video-level noise), so that
    # mean pooling is no easier than video-level data, plus independent per-frame noise.
    rgb_nuisance = rng.standard_normal(RGB_DIM) * (_VIDEO_RGB_NOISE / math.sqrt(RGB_DIM))
    audio_nuisance = rng.standard_normal(AUDIO_DIM) * (_VIDEO_AUDIO_NOISE / math.sqrt(AUDIO_DIM))
    rgb = np.empty((frames, RGB_DIM), np.float32)
    audio = np.empty((frames, AUDIO_DIM), np.float32)
    visible: list[frozenset[int]] = []
    start = 0
    while start < frames:
        length = min(int(rng.integers(5, 61)), frames - start)
        shown = labels[rng.random(labels.size) < 0.65]
        if shown.size == 0:
            shown = labels[rng.integers(labels.size)][None]
        scene_rgb, scene_audio = _features(rng, world, topic, shown, 0.0, 0.0)
        rgb[start : start + length] = scene_rgb + rgb_nuisance + rng.standard_normal((length, RGB_DIM)) * (
            _FRAME_NOISE / math.sqrt(RGB_DIM))
        audio[start : start + length] = scene_audio + audio_nuisance + rng.standard_normal((length, AUDIO_DIM)) * (
            _FRAME_NOISE / math.sqrt(AUDIO_DIM))
        visible.extend([frozenset(shown.tolist())] * length)
        start += length
    rgb = quantize(rgb * _FRAME_RGB_GAIN * world.rgb_spectrum)
    audio = quantize(audio * _FRAME_AUDIO_GAIN * world.audio_spectrum)
    return rgb, audio, visible


def _segments(rng, labels, visible):
    """Up to five 5-second segments with a label and whether its evidence is on screen."""
    slots = len(visible) // 5
    picks = np.sort(rng.choice(slots, size=min(5, slots), replace=False)) if slots else np.zeros(0, int)
    starts, seg_labels, scores = [], [], []
    for slot in picks:
        label = int(labels[rng.integers(labels.size)])
        present = sum(label in visible[t] for t in range(5 * slot, 5 * slot + 5)) >= 3
        starts.append(int(5 * slot))
        seg_labels.append(label)
        scores.append(1.0 if present else 0.0)
    return starts, seg_labels, scores


def _video_ids(rng: np.random.Generator, total: int) -> list[str]:
    """Unique short ids like the real ones, from an affine bijection of 0..N-1 (no collisions)."""
    width = 4 if total <= 62**4 else 6
    space = 62**width
    step = int(rng.integers(1, space))
    while math.gcd(step, space) != 1:
        step += 1
    offset = int(rng.integers(0, space))
    ids = []
    for i in range(total):
        value = (step * i + offset) % space
        chars = []
        for _ in range(width):
            value, digit = divmod(value, 62)
            chars.append(_ID_ALPHABET[digit])
        ids.append("".join(chars))
    return ids


def _split_sizes(videos: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError("split_fractions must be three non-negative numbers summing to 1")
    train = int(round(videos * fractions[0]))
    validate = int(round(videos * fractions[1]))
    return {"train": train, "validate": validate, "test": videos - train - validate}


def synthesize(
    out_dir: str | Path,
    videos: int = 2000,
    classes: int = 100,
    level: str = "video",
    seed: int = 0,
    *,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    videos_per_shard: int | None = None,
    max_frames: int = MAX_FRAMES,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> SynthesisSummary:
    """Write ``{train,validate,test}NNNN.tfrecord``, ``vocabulary.csv`` and ``synthesis.json``.

    Same arguments, same bytes. The directory appears only when complete.
    """
    if level not in ("video", "frame"):
        raise ValueError(f"level must be 'video' or 'frame', not {level!r}")
    if videos < 10:
        raise ValueError("videos must be at least 10")
    if classes < 2:
        raise ValueError("classes must be at least 2")
    if not 1 <= max_frames <= MAX_FRAMES:
        raise ValueError(f"max_frames must be within 1..{MAX_FRAMES}")
    sizes = _split_sizes(videos, split_fractions)
    per_shard = videos_per_shard or VIDEOS_PER_SHARD[level]
    out_dir = Path(out_dir)

    structure_seed, *split_seeds = np.random.SeedSequence(seed).spawn(1 + len(sizes))
    structure_rng = np.random.default_rng(structure_seed)
    world = _build_world(structure_rng, classes)
    ids = _video_ids(structure_rng, videos)
    topic_members = [np.flatnonzero(world.topic_of == k) for k in range(len(world.head_of_topic))]
    topic_priors = [np.cumsum(world.frequency[members]) for members in topic_members]
    topic_weights = np.array([world.frequency[m].sum() for m in topic_members])
    topic_weights /= topic_weights.sum()

    train_counts = np.zeros(classes, np.int64)
    files: list[str] = []
    with atomic_directory(out_dir, force, ours=holds_file(SYNTHESIS_FILE), what="synthetic data folder") as tmp:
        next_id = 0
        for (split, size), split_seed in zip(sizes.items(), split_seeds):
            rng = np.random.default_rng(split_seed)
            for shard, first in enumerate(range(0, size, per_shard)):
                name = f"{split}{shard:04d}.tfrecord"
                with TFRecordWriter(tmp / name) as writer:
                    for _ in range(min(per_shard, size - first)):
                        topic = int(rng.choice(len(topic_weights), p=topic_weights))
                        labels = _draw_labels(rng, world, topic, topic_members, topic_priors)
                        if split == "train":
                            train_counts[labels] += 1
                        writer.write(_encode(rng, world, level, split, ids[next_id], topic, labels, max_frames))
                        next_id += 1
                files.append(name)
                if progress:
                    progress(min(per_shard, size - first))
        _write_vocabulary(tmp / VOCABULARY_FILE, world, train_counts)
        _write_settings(tmp / SYNTHESIS_FILE, world, level, seed, sizes, per_shard, max_frames)
    return SynthesisSummary(out_dir, level, classes, seed, sizes, files + [VOCABULARY_FILE, SYNTHESIS_FILE])


def _encode(rng, world, level, split, video_id, topic, labels, max_frames) -> bytes:
    if level == "video":
        rgb, audio = _video_level(rng, world, topic, labels)
        return encode_video_example(video_id, labels, rgb, audio)
    rgb, audio, visible = _frame_level(rng, world, topic, labels, max_frames)
    if split != "validate":
        return encode_frame_example(video_id, labels, rgb, audio)
    starts, seg_labels, scores = _segments(rng, labels, visible)
    return encode_frame_example(video_id, labels, rgb, audio, starts, seg_labels, scores)


def _write_vocabulary(path: Path, world: _World, train_counts: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(VOCABULARY_COLUMNS)
        heads = set(world.head_of_topic.tolist())
        for index in range(world.num_classes):
            vertical = TOPICS[int(world.topic_of[index])][0]
            name = f"{vertical} (parent)" if index in heads else f"{vertical} item {index}"
            evidence = " and ".join(kind for kind, flag in (("visual", world.visual[index]),
                                                            ("audio", world.audible[index])) if flag)
            writer.writerow([index, int(train_counts[index]), f"/m/syn{index:04d}", name, "", vertical, "", "",
                             f"Synthetic class {index} in {vertical}, with {evidence} evidence."])


def _write_settings(path, world, level, seed, sizes, per_shard, max_frames) -> None:
    settings = {
        "generator": "avf.data.synthetic",
        "seed": seed,
        "level": level,
        "classes": world.num_classes,
        "videos": sizes,
        "videos_per_shard": per_shard,
        "max_frames": max_frames,
        "zipf_exponent": ZIPF_EXPONENT,
        "labels_per_video": f"1 + Poisson({EXTRA_LABELS_MEAN})",
        "topics": [TOPICS[k][0] for k in range(len(world.head_of_topic))],
        "class_topic": world.topic_of.tolist(),
        "class_has_visual_evidence": world.visual.tolist(),
        "class_has_audio_evidence": world.audible.tolist(),
        "test_split_has_labels": True,
    }
    path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
