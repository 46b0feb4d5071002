"""``avf predict``: top-k predictions in the YouTube-8M challenge format, streamed.

``VideoId,LabelConfidencePairs`` with space-separated ``label confidence`` pairs, best first;
with a vocabulary, a ``LabelNames`` column adds the class names. Inputs are streamed in
batches, so any number of shards goes through in constant memory.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from avf.atomic import atomic_file, check_output
from avf.data.feature_store import FeatureStore, is_store, read_manifest
from avf.data.sources import expand_sources
from avf.data.vocabulary import check_same_vocabulary, find_vocabulary, load_vocabulary
from avf.data.youtube8m import iter_batches
from avf.deploy.target import load_target
from avf.errors import InputError


def open_store(data: str | Path) -> FeatureStore | None:
    """The video-level feature store ``data`` names, opened (and so checked whole) once; None for TFRecords."""
    path = Path(str(data))
    if not is_store(path):
        return None
    store = FeatureStore(path)
    if store.level != "video":
        raise InputError(path, f"is a {store.level}-level feature store; predict reads video-level features "
                               "(convert video-level TFRecords, or pass the TFRecords themselves)")
    return store


def iter_inputs(data: str | Path, num_classes: int, batch_size: int,
                store: FeatureStore | None = None) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """(ids, rgb, audio) batches of ``data``: the opened ``store`` when it is one, else its TFRecords."""
    if store is not None:
        for start in range(0, len(store), batch_size):
            indices = np.arange(start, min(start + batch_size, len(store)))
            rgb, audio, _ = store.batch(indices)
            yield [store.video_id(int(i)) for i in indices], rgb.astype(np.float32), audio.astype(np.float32)
        return
    for batch in iter_batches(expand_sources(data), batch_size, num_classes):
        yield batch.ids, batch.rgb, batch.audio


def data_vocabulary_sha256(data: str | Path, store: FeatureStore | None = None) -> str | None:
    """The sha256 of the vocabulary.csv the data was labelled with: a store records it, TFRecords have it beside them."""
    if store is not None:
        return (store.manifest.get("vocabulary") or {}).get("sha256")
    vocab = find_vocabulary(expand_sources(data))
    return vocab.sha256 if vocab else None


def count_videos(data: str | Path) -> int | None:
    """The video count a progress bar runs to: a store's manifest says it (the store itself is opened, and
    checked whole, once, when it is read); TFRecords: unknown until read."""
    path = Path(str(data))
    if is_store(path):
        return read_manifest(path)[1].videos
    return None


def predict(target: str | Path, data: str | Path, out: str | Path, top_k: int = 20, vocabulary: str | Path | None = None,
            batch_size: int = 1024, threads: int | None = None, advance: Callable[[int], None] = lambda n: None,
            force: bool = False) -> int:
    """Write predictions for every video in ``data``; returns the number of videos written."""
    inputs = [target, vocabulary, data]
    check_output(out, force=force, directory=False, inputs=inputs, what="predictions file")
    if vocabulary is not None and Path(vocabulary).is_dir():
        raise InputError(vocabulary, "is a directory; --vocab is a vocabulary.csv file")
    run, facts = load_target(Path(target), threads=threads)
    num_classes = facts["num_classes"]
    store = open_store(data)  # a damaged store is refused here, before anything is compared or written
    model_vocabulary, data_vocabulary = facts["vocabulary_sha256"], data_vocabulary_sha256(data, store)
    check_same_vocabulary(model_vocabulary, target, data_vocabulary, data)
    names = None
    if vocabulary is not None:
        vocab = load_vocabulary(vocabulary)
        if vocab.num_classes != num_classes:
            raise InputError(vocabulary, f"has {vocab.num_classes} classes, the model {num_classes}")
        check_same_vocabulary(model_vocabulary or data_vocabulary, target if model_vocabulary else data, vocab.sha256,
                              vocabulary)
        names = vocab.names
    k = min(top_k, num_classes)
    written = 0
    with atomic_file(out) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["VideoId", "LabelConfidencePairs"] + (["LabelNames"] if names else []))
            for ids, rgb, audio in iter_inputs(data, num_classes, batch_size, store):
                probabilities = run(rgb, audio)
                if not np.isfinite(probabilities).all():
                    raise InputError(target, f"the model gave NaN/inf scores for video {ids[0]!r} and others; "
                                             "no predictions were written")
                top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
                order = np.take_along_axis(probabilities, top, axis=1).argsort(axis=1)[:, ::-1]
                top = np.take_along_axis(top, order, axis=1)
                for video, classes, row in zip(ids, top, probabilities):
                    pairs = " ".join(f"{c} {row[c]:.6f}" for c in classes)
                    writer.writerow([video, pairs] + (["|".join(names[c] for c in classes)] if names else []))
                written += len(ids)
                advance(len(ids))
        if not written:
            raise InputError(data, "no videos found")
    return written
