"""Metrics: hand-worked cases, and agreement with a loop-by-loop transcription of the official code."""

from __future__ import annotations

import numpy as np
import pytest

from avf.metrics import EvaluationAccumulator, evaluate, f1, gap, hit_at_one, mean_ap, per_class_ap, perr

# Two videos, four classes.
PRED = np.array([[0.9, 0.8, 0.3, 0.1],
                 [0.2, 0.7, 0.6, 0.05]])
LABELS = np.array([[1, 0, 1, 0],
                   [0, 1, 0, 1]])


def test_gap_hand_worked_with_unranked_positives():
    # top_k=2 keeps (0.9,+) (0.8,-) from video 0 and (0.7,+) (0.6,-) from video 1.
    # Pooled by score: 0.9+ 0.8- 0.7+ 0.6-  -> precision at hits: 1/1, 2/3.
    # Four positives in all (two never ranked): GAP = (1 + 2/3) / 4.
    assert gap(PRED, LABELS, top_k=2) == pytest.approx((1 + 2 / 3) / 4)
    # top_k=4: ranks 0.9+ 0.8- 0.7+ 0.6- 0.3+ 0.2- 0.1- 0.05+ -> 1/1, 2/3, 3/5, 4/8.
    assert gap(PRED, LABELS, top_k=4) == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 8) / 4)


def test_hit_at_one_perr_and_f1_hand_worked():
    assert hit_at_one(PRED, LABELS) == pytest.approx(1.0)  # 0.9 -> class 0 (+), 0.7 -> class 1 (+)
    # Video 0 has 2 labels; its top 2 are classes 0(+),1(-): 1/2. Video 1: top 2 are 1(+),2(-): 1/2.
    assert perr(PRED, LABELS) == pytest.approx(0.5)
    # threshold 0.5: predicted {0,1} and {1,2}; tp = (0,0),(1,1) = 2; fp = 2; fn = 2.
    result = f1(PRED, LABELS, threshold=0.5)
    assert (result.tp, result.fp, result.fn) == (2, 2, 2)
    assert result.precision == pytest.approx(0.5) and result.recall == pytest.approx(0.5)
    assert result.f1 == pytest.approx(0.5)
    assert f1(PRED, LABELS, threshold=0.8).tp == 1  # >= threshold counts (0.8 is predicted)


def test_perr_counts_only_positive_scores_and_labelless_videos_as_zero():
    pred = np.array([[0.0, -1.0, 0.5], [0.9, 0.1, 0.2]])
    labels = np.array([[1, 0, 0], [0, 0, 0]])
    # Video 0: 1 label; top-1 is class 2 (0.5, negative) -> 0. Video 1: no labels -> 0.
    assert perr(pred, labels) == 0.0
    pred = np.array([[0.0, -1.0, -0.5]])
    # Top-1 is class 0, a positive, but its score is not > 0: the official code does not count it.
    assert perr(pred, np.array([[1, 0, 0]])) == 0.0


def test_mean_ap_counts_empty_classes_as_zero():
    # Class 0: video 0 (0.9,+) -> AP 1/1 over 1 positive = 1.
    # Class 1: video 0 (0.8,-), video 1 (0.7,+) -> 1/2, over 1 positive = 0.5.
    # Class 2: video 0 (0.3,+), video 1 (0.6,-) -> 1/2. Class 3: (0.1,-), (0.05,+) -> 1/2.
    assert per_class_ap(PRED, LABELS, top_k=4) == pytest.approx([1, 0.5, 0.5, 0.5])
    assert mean_ap(PRED, LABELS, top_k=4) == pytest.approx(2.5 / 4)
    labels = LABELS.copy()
    labels[:, 3] = 0  # class 3 now has no positives: AP 0, still in the denominator
    assert mean_ap(PRED, labels, top_k=4) == pytest.approx(2.0 / 4)


def test_perfect_predictions_and_top_k_larger_than_classes():
    rng = np.random.default_rng(0)
    labels = (rng.random((50, 30)) < 0.1).astype(int)
    labels[np.arange(50), rng.integers(0, 30, 50)] = 1
    perfect = labels * 0.5 + rng.random((50, 30)) * 0.1 + 0.3  # positives all above negatives
    result = evaluate(perfect, labels, top_k=100)
    assert result["gap"] == pytest.approx(1.0) and result["hit_at_one"] == 1.0 and result["perr"] == pytest.approx(1.0)


def test_shape_errors():
    with pytest.raises(ValueError, match="does not match"):
        gap(PRED, LABELS[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        gap(PRED[0], LABELS[0])
    with pytest.raises(ValueError, match="top_k"):
        gap(PRED, LABELS, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        evaluate(PRED, LABELS, top_k=2.5)
    with pytest.raises(ValueError, match="numeric"):
        evaluate(PRED.astype(str), LABELS)
    with pytest.raises(ValueError, match="no videos"):
        EvaluationAccumulator(4).result()


def test_nan_predictions_are_refused():
    nan = PRED.copy()
    nan[1, 3] = np.nan
    for function in (gap, hit_at_one, perr, evaluate):
        with pytest.raises(ValueError, match="NaN"):
            function(nan, LABELS)


# ----------------------------------------------------------------------------- reference


def _official_ap(pairs, num_positives):
    """average_precision_calculator.ap_at_n with n=None: pairs sorted by score, descending."""
    if num_positives == 0:
        return 0.0
    ap = hits = 0.0
    for i, (_, actual) in enumerate(sorted(pairs, key=lambda p: p[0], reverse=True)):
        if actual > 0:
            hits += 1
            ap += hits / (i + 1)
    return ap / num_positives


def _official(predictions, labels, top_k):
    videos, classes = predictions.shape
    k = min(top_k, classes)
    pooled, by_class = [], [[] for _ in range(classes)]
    hit1 = perr_sum = 0.0
    for v in range(videos):
        for c in np.argpartition(predictions[v], -k)[-k:]:
            pooled.append((predictions[v, c], labels[v, c]))
            by_class[c].append((predictions[v, c], labels[v, c]))
        hit1 += labels[v, np.argmax(predictions[v])]
        n = int(labels[v].sum())
        top = np.argpartition(predictions[v], -n)[-n:]
        precision = sum(labels[v, i] for i in top if predictions[v, i] > 0)
        perr_sum += precision / top.size
    positives = labels.sum(axis=0)
    return {
        "gap": _official_ap(pooled, labels.sum()),
        "map": sum(_official_ap(by_class[c], positives[c]) for c in range(classes)) / classes,
        "hit_at_one": hit1 / videos,
        "perr": perr_sum / videos,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_k", [1, 5, 20, 50])
def test_matches_official_algorithms(seed, top_k):
    rng = np.random.default_rng(seed)
    labels = (rng.random((300, 50)) < 0.06).astype(np.int64)
    labels[rng.integers(0, 300, 20)] = 0  # some label-less videos
    predictions = rng.random((300, 50)) * 2 - 0.3  # tie-free, some negative scores
    predictions += labels * rng.random((300, 50))  # informative but imperfect
    expected = _official(predictions, labels, top_k)
    got = evaluate(predictions, labels, top_k=top_k)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_accumulator_in_uneven_batches_equals_one_shot():
    rng = np.random.default_rng(5)
    labels = (rng.random((1000, 40)) < 0.08).astype(np.int8)
    predictions = (rng.random((1000, 40)) + labels * 0.5).astype(np.float32)
    accumulator = EvaluationAccumulator(40, top_k=20)
    for start, stop in ((0, 1), (1, 333), (333, 334), (334, 1000)):
        accumulator.add(predictions[start:stop], labels[start:stop])
    assert accumulator.result() == evaluate(predictions, labels)


@pytest.mark.slow
def test_one_million_videos_in_chunks():
    accumulator = EvaluationAccumulator(3862, top_k=20)
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = np.zeros((20000, 3862), np.uint8)
        labels[np.arange(20000).repeat(3), rng.integers(0, 3862, 60000)] = 1
        accumulator.add(rng.random((20000, 3862), dtype=np.float32), labels)
    result = accumulator.result()
    assert result["num_videos"] == 1_000_000
    assert all(0.0 <= result[key] <= 1.0 for key in ("gap", "map", "hit_at_one", "perr", "f1"))
