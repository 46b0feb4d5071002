"""Metrics: hand-worked cases, a loop-by-loop transcription of the official YouTube-8M code,
a loop reference for the documented tie rules, streaming, and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

import avf.metrics as metrics
from avf.metrics import (
    EvaluationAccumulator,
    F1Result,
    evaluate,
    f1,
    gap,
    hit_at_one,
    mean_ap,
    per_class_ap,
    perr,
)

KEYS = ("gap", "map", "hit_at_one", "perr", "f1", "precision", "recall")

# Two videos, four classes.
PRED = np.array([[0.9, 0.8, 0.3, 0.1],
                 [0.2, 0.7, 0.6, 0.05]])
LABELS = np.array([[1, 0, 1, 0],
                   [0, 1, 0, 1]])


# ----------------------------------------------------------------------------- hand-worked


def test_gap_hand_worked_with_never_ranked_positives():
    # top_k=2 keeps (0.9,+) (0.8,-) of video 0 and (0.7,+) (0.6,-) of video 1.
    # Pooled by score: 0.9+ 0.8- 0.7+ 0.6-: precision at each hit 1/1 and 2/3.
    # Four positives in all; (0.3,+) and (0.05,+) are never ranked but still divide:
    # GAP = (1 + 2/3) / 4 = 5/12.
    assert gap(PRED, LABELS, top_k=2) == pytest.approx(5 / 12)
    # top_k=4 ranks all eight: 0.9+ 0.8- 0.7+ 0.6- 0.3+ 0.2- 0.1- 0.05+
    # -> hits at ranks 1, 3, 5, 8: (1/1 + 2/3 + 3/5 + 4/8) / 4.
    assert gap(PRED, LABELS, top_k=4) == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 8) / 4)
    # No positive labels at all: 0.0, as the official calculator returns.
    assert gap(PRED, np.zeros_like(LABELS)) == 0.0


def test_hit_at_one_hand_worked():
    # Video 0: max 0.9 at class 0 (+). Video 1: max 0.7 at class 1 (+). -> 1.0
    assert hit_at_one(PRED, LABELS) == 1.0
    # Give video 1 video 0's labels: its top class 1 is now negative -> 1/2.
    assert hit_at_one(PRED, np.array([[1, 0, 1, 0], [1, 0, 1, 0]])) == 0.5


def test_perr_hand_worked_with_score_rule_and_labelless_video():
    # Video 0: 2 labels; top 2 = classes 0 (+), 1 (-) -> 1/2.
    # Video 1: 2 labels; top 2 = classes 1 (+), 2 (-) -> 1/2.
    assert perr(PRED, LABELS) == pytest.approx(0.5)
    # Add a label-less video: it contributes 0 but counts: (1/2 + 1/2 + 0) / 3.
    pred = np.vstack([PRED, [0.4, 0.3, 0.2, 0.1]])
    labels = np.vstack([LABELS, [0, 0, 0, 0]])
    assert perr(pred, labels) == pytest.approx(1 / 3)
    # One label (class 0) ranked first, but with score 0.0: the official code only counts
    # a top class whose score is > 0, so this video scores 0 ...
    assert perr(np.array([[0.0, -1.0, -0.5]]), np.array([[1, 0, 0]])) == 0.0
    # ... and 1 once the score is positive.
    assert perr(np.array([[0.01, -1.0, -0.5]]), np.array([[1, 0, 0]])) == 1.0


def test_mean_ap_hand_worked_and_empty_class_counts_zero():
    # top_k=2 keeps v0: c0 0.9+, c1 0.8-; v1: c1 0.7+, c2 0.6-.
    # Class 0: (0.9,+), 1 positive                      -> (1/1) / 1 = 1
    # Class 1: (0.8,-) (0.7,+), 1 positive              -> (1/2) / 1 = 0.5
    # Class 2: (0.6,-); its positive (v0, 0.3) unranked -> 0 / 1     = 0
    # Class 3: nothing ranked; 1 positive               -> 0
    assert per_class_ap(PRED, LABELS, top_k=2) == pytest.approx([1, 0.5, 0, 0])
    assert mean_ap(PRED, LABELS, top_k=2) == pytest.approx(1.5 / 4)
    # top_k=4: class 2 = (0.6,-) (0.3,+) -> 1/2; class 3 = (0.1,-) (0.05,+) -> 1/2.
    assert per_class_ap(PRED, LABELS, top_k=4) == pytest.approx([1, 0.5, 0.5, 0.5])
    assert mean_ap(PRED, LABELS, top_k=4) == pytest.approx(2.5 / 4)
    # Class 3 without positives: AP 0, and it still counts in the denominator of 4.
    labels = LABELS.copy()
    labels[:, 3] = 0
    assert mean_ap(PRED, labels, top_k=4) == pytest.approx(2.0 / 4)


def test_f1_hand_worked():
    # threshold 0.5 predicts v0 {c0, c1}, v1 {c1, c2}: tp = v0c0, v1c1 (2); fp = v0c1, v1c2 (2);
    # fn = v0c2, v1c3 (2). precision = recall = f1 = 1/2.
    assert f1(PRED, LABELS, threshold=0.5) == F1Result(0.5, 0.5, 0.5, 0.5, 2, 2, 2)
    # threshold 0.8 predicts v0 {c0, c1} (0.8 >= 0.8 counts): tp 1, fp 1, fn 3.
    # precision 1/2, recall 1/4, f1 = 2 * (1/8) / (3/4) = 1/3.
    result = f1(PRED, LABELS, threshold=0.8)
    assert (result.tp, result.fp, result.fn) == (1, 1, 3)
    assert (result.precision, result.recall) == (0.5, 0.25) and result.f1 == pytest.approx(1 / 3)
    # Nothing predicted (and then nothing positive either): undefined ratios are 0.0.
    assert f1(PRED, LABELS, threshold=2.0) == F1Result(0.0, 0.0, 0.0, 2.0, 0, 0, 4)
    assert f1(PRED, np.zeros_like(LABELS), threshold=2.0) == F1Result(0.0, 0.0, 0.0, 2.0, 0, 0, 0)


def test_documented_tie_rules_hand_worked():
    pred = np.full((2, 4), 0.5)
    labels = np.array([[0, 0, 1, 1],
                       [1, 0, 0, 0]])
    # Within a video, equal scores rank by class index: top-2 is classes 0, 1 in both videos.
    # Pooled, all four are tied at 0.5, and negatives go first: - - - + -> 1/4, over 3 positives.
    assert gap(pred, labels, top_k=2) == pytest.approx(1 / 12)
    # Class 0 holds (0.5,-) (0.5,+) -> - + -> 1/2 over 1 positive; classes 1-3 score 0.
    assert per_class_ap(pred, labels, top_k=2) == pytest.approx([0.5, 0, 0, 0])
    # Hit@1 takes class 0, like numpy.argmax: video 0 misses, video 1 hits.
    assert hit_at_one(pred, labels) == 0.5
    # PERR: video 0 (2 labels) gets classes 0, 1 -> 0; video 1 (1 label) gets class 0 -> 1.
    assert perr(pred, labels) == 0.5
    # A tie straddling the cut: the lower class index wins the last top-k place.
    assert gap(np.array([[0.1, 0.5, 0.9, 0.5]]), np.array([[0, 0, 0, 1]]), top_k=2) == 0.0
    assert gap(np.array([[0.1, 0.5, 0.9, 0.5]]), np.array([[0, 1, 0, 0]]), top_k=2) == 0.5


# ----------------------------------------------------------------------------- references


def _official_ap(predictions, actuals, total_num_positives):
    """average_precision_calculator.ap_at_n with n=None (the shuffle is moot without ties)."""
    if total_num_positives == 0 or len(predictions) == 0:
        return 0.0
    order = sorted(range(len(predictions)), key=lambda i: predictions[i], reverse=True)
    delta_recall = 1.0 / total_num_positives
    ap = poscount = 0.0
    for i, index in enumerate(order):
        if actuals[index] > 0:
            poscount += 1
            ap += poscount / (i + 1) * delta_recall
    return ap


def _official(predictions, labels, top_k):
    """eval_util: top_k_by_class, GAP, MAP (mean over all classes), Hit@1, PERR, as loops."""
    videos, classes = predictions.shape
    k = min(top_k, classes)
    by_class_pred = [[] for _ in range(classes)]
    by_class_label = [[] for _ in range(classes)]
    for v in range(videos):  # top_k_triplets
        for c in np.argpartition(predictions[v], -k)[-k:]:
            by_class_pred[c].append(predictions[v, c])
            by_class_label[c].append(labels[v, c])
    positives = [labels[:, c].sum() for c in range(classes)]
    flat_pred = [p for row in by_class_pred for p in row]
    flat_label = [a for row in by_class_label for a in row]

    hit = labels[np.arange(videos), np.argmax(predictions, 1)].mean()
    precision_sum = 0.0
    for v in range(videos):
        n = int(labels[v].sum())
        top = np.argpartition(predictions[v], -n)[-n:]  # n = 0: -0 == 0, so all classes
        item = 0.0
        for c in top:
            if predictions[v, c] > 0:
                item += labels[v, c]
        precision_sum += item / top.size
    aps = [_official_ap(by_class_pred[c], by_class_label[c], positives[c]) for c in range(classes)]
    return {
        "gap": _official_ap(flat_pred, flat_label, sum(positives)),
        "map": float(np.mean(aps)),
        "per_class": aps,
        "hit_at_one": hit,
        "perr": precision_sum / videos,
    }


def _documented(predictions, labels, top_k):
    """The module's tie rules, spelled out: in a video (score desc, class asc); pooled
    (score desc, negatives before positives)."""
    videos, classes = predictions.shape
    k = min(top_k, classes)
    pooled, by_class = [], [[] for _ in range(classes)]
    hit = precision_sum = 0.0
    for v in range(videos):
        ranked = sorted(range(classes), key=lambda c: (-predictions[v, c], c))
        for c in ranked[:k]:
            pooled.append((predictions[v, c], labels[v, c]))
            by_class[c].append((predictions[v, c], labels[v, c]))
        hit += labels[v, ranked[0]]
        n = int(labels[v].sum())
        if n:
            precision_sum += sum(labels[v, c] for c in ranked[:n] if predictions[v, c] > 0) / n

    def ap(pairs, positives):
        if positives == 0:
            return 0.0
        total = found = 0.0
        for i, (_, label) in enumerate(sorted(pairs, key=lambda p: (-p[0], p[1]))):
            if label:
                found += 1
                total += found / (i + 1)
        return total / positives

    aps = [ap(by_class[c], labels[:, c].sum()) for c in range(classes)]
    return {
        "gap": ap(pooled, labels.sum()),
        "map": sum(aps) / classes,
        "per_class": aps,
        "hit_at_one": hit / videos,
        "perr": precision_sum / videos,
    }


def _random_case(seed, videos=300, classes=50, ties=False):
    rng = np.random.default_rng(seed)
    labels = (rng.random((videos, classes)) < 0.06).astype(np.int64)
    labels[rng.integers(0, videos, 20)] = 0  # some label-less videos
    labels[rng.integers(0, videos, 5)] = rng.random((5, classes)) < 0.5  # some with many labels
    if ties:  # few distinct values, zero and negatives included: ties everywhere
        bonus = labels * rng.integers(0, 2, (videos, classes))
        predictions = (rng.integers(-2, 5, (videos, classes)) + bonus) / 4.0
    else:  # tie-free, some negative scores, informative but imperfect
        predictions = rng.random((videos, classes)) * 2 - 0.3 + labels * rng.random((videos, classes))
    return predictions, labels


def _check_all(reference, predictions, labels, top_k):
    got = evaluate(predictions, labels, top_k=top_k)
    for key in ("gap", "map", "hit_at_one", "perr"):
        assert got[key] == pytest.approx(reference[key], abs=1e-9, rel=0), key
    assert per_class_ap(predictions, labels, top_k) == pytest.approx(reference["per_class"], abs=1e-9, rel=0)
    # The single-metric functions take lighter paths through the same core: same numbers.
    assert gap(predictions, labels, top_k) == pytest.approx(got["gap"], abs=1e-12, rel=0)
    assert mean_ap(predictions, labels, top_k) == pytest.approx(got["map"], abs=1e-12, rel=0)
    assert hit_at_one(predictions, labels) == got["hit_at_one"]
    assert perr(predictions, labels) == pytest.approx(got["perr"], abs=1e-12, rel=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_k", [1, 5, 20, 50])
def test_matches_official_algorithms(seed, top_k):
    predictions, labels = _random_case(seed)
    assert np.unique(predictions).size == predictions.size  # tie-free
    _check_all(_official(predictions, labels, top_k), predictions, labels, top_k)


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("top_k", [1, 3, 7, 30])
def test_ties_follow_documented_rules(seed, top_k):
    predictions, labels = _random_case(seed, videos=200, classes=12, ties=True)
    _check_all(_documented(predictions, labels, top_k), predictions, labels, top_k)


def test_f1_matches_loop_count():
    predictions, labels = _random_case(6)
    for threshold in (0.0, 0.5, 0.9):
        predicted = [(p >= threshold) for p in predictions.ravel()]
        actual = [a > 0 for a in labels.ravel()]
        tp = sum(p and a for p, a in zip(predicted, actual))
        fp = sum(p and not a for p, a in zip(predicted, actual))
        fn = sum(a and not p for p, a in zip(predicted, actual))
        result = f1(predictions, labels, threshold)
        assert (result.tp, result.fp, result.fn) == (tp, fp, fn)
        assert result.precision == pytest.approx(tp / (tp + fp))
        assert result.recall == pytest.approx(tp / (tp + fn))
        assert result.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
        got = evaluate(predictions, labels, threshold=threshold)
        assert (got["f1"], got["precision"], got["recall"]) == (result.f1, result.precision, result.recall)


# ----------------------------------------------------------------------------- streaming


def test_accumulator_in_uneven_batches_equals_one_shot():
    rng = np.random.default_rng(5)
    labels = (rng.random((1000, 40)) < 0.08).astype(np.int8)
    predictions = (rng.random((1000, 40)) + labels * 0.5).astype(np.float32)
    predictions[::7] = np.round(predictions[::7], 1)  # ties across batches too
    expected = evaluate(predictions, labels)
    accumulator = EvaluationAccumulator(40, top_k=20)
    for start, stop in ((0, 1), (1, 333), (333, 333), (333, 334), (334, 1000)):
        accumulator.add(predictions[start:stop], labels[start:stop])
    result = accumulator.result()
    assert result["num_videos"] == 1000
    assert result["gap"] == expected["gap"] and result["map"] == expected["map"]  # same pooled multiset
    assert all(result[key] == pytest.approx(expected[key], abs=1e-12) for key in KEYS)
    assert accumulator.result() == result  # results can be read repeatedly
    np.testing.assert_array_equal(accumulator.per_class_ap(), per_class_ap(predictions, labels))
    # More batches after a result keep counting.
    accumulator.add(predictions, labels)
    assert accumulator.result()["num_videos"] == 2000


def test_internal_chunking_and_video_order_do_not_matter(monkeypatch):
    predictions, labels = _random_case(7, ties=True)
    expected = evaluate(predictions, labels, top_k=5)
    monkeypatch.setattr(metrics, "_CHUNK_ROWS", 7)
    chunked = evaluate(predictions, labels, top_k=5)
    order = np.random.default_rng(0).permutation(len(predictions))
    shuffled = evaluate(predictions[order], labels[order], top_k=5)
    for key in KEYS:
        assert chunked[key] == pytest.approx(expected[key], abs=1e-12), key
        assert shuffled[key] == pytest.approx(expected[key], abs=1e-12), key


# ----------------------------------------------------------------------------- edge cases


def test_perfect_predictions_and_top_k_larger_than_classes():
    rng = np.random.default_rng(0)
    labels = (rng.random((50, 30)) < 0.1).astype(int)
    labels[np.arange(50), rng.integers(0, 30, 50)] = 1  # every video has >= 1 label, <= 20
    assert labels.sum(axis=1).max() <= 20
    perfect = labels * 0.5 + rng.random((50, 30)) * 0.1 + 0.3  # positives all above negatives
    result = evaluate(perfect, labels, top_k=20)
    assert result["gap"] == pytest.approx(1.0) and result["hit_at_one"] == 1.0
    assert result["perr"] == pytest.approx(1.0) and result["map"] == pytest.approx(1.0)
    assert result["f1"] == 1.0
    # top_k beyond the class count behaves as top_k = classes.
    assert evaluate(perfect, labels, top_k=1000) == evaluate(perfect, labels, top_k=30)
    assert gap(PRED, LABELS, top_k=100) == gap(PRED, LABELS, top_k=4)


def test_input_types_and_layouts():
    expected = evaluate(PRED, LABELS, top_k=2)
    assert evaluate(PRED.tolist(), LABELS.tolist(), top_k=2) == expected
    assert evaluate(np.asfortranarray(PRED), LABELS.astype(bool), top_k=2) == expected
    assert evaluate(PRED.astype(np.float32), LABELS.astype(np.uint8), top_k=np.int64(2)) == expected
    assert evaluate(PRED, LABELS * 3.0, top_k=2) == expected  # any label > 0 is positive
    assert evaluate(PRED, LABELS - (LABELS == 0), top_k=2) == expected  # -1 is negative
    # Integer scores work too (ranked as numbers).
    assert gap((PRED * 100).astype(np.int32), LABELS, top_k=2) == expected["gap"]


def test_invalid_inputs_raise_value_error():
    with pytest.raises(ValueError, match="does not match"):
        gap(PRED, LABELS[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        gap(PRED[0], LABELS[0])
    with pytest.raises(ValueError, match="top_k"):
        gap(PRED, LABELS, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        evaluate(PRED, LABELS, top_k=2.5)
    with pytest.raises(ValueError, match="at least one video"):
        evaluate(PRED[:0], LABELS[:0])
    with pytest.raises(ValueError, match="at least one class"):
        evaluate(PRED[:, :0], LABELS[:, :0])
    with pytest.raises(ValueError, match="numeric"):
        evaluate(PRED.astype(str), LABELS)
    accumulator = EvaluationAccumulator(4)
    with pytest.raises(ValueError, match="expected 4"):
        accumulator.add(PRED[:, :3], LABELS[:, :3])
    with pytest.raises(ValueError, match="no videos"):
        accumulator.result()
    with pytest.raises(ValueError, match="num_classes"):
        EvaluationAccumulator(0)
    with pytest.raises(ValueError, match="num_classes"):
        EvaluationAccumulator(3.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions_are_refused(bad):
    pred = PRED.copy()
    pred[1, 3] = bad
    for function in (gap, hit_at_one, perr, f1, evaluate):
        with pytest.raises(ValueError, match="NaN or inf"):
            function(pred, LABELS)


@pytest.mark.slow
def test_one_million_videos_in_chunks():
    classes, batch = 3862, 20000
    accumulator = EvaluationAccumulator(classes, top_k=20)
    rng = np.random.default_rng(0)
    for _ in range(1_000_000 // batch):
        labels = np.zeros((batch, classes), np.uint8)
        labels[np.arange(batch).repeat(3), rng.integers(0, classes, 3 * batch)] = 1
        predictions = rng.random((batch, classes), dtype=np.float32)
        predictions += labels * np.float32(0.5)
        accumulator.add(predictions, labels)
    result = accumulator.result()
    assert result["num_videos"] == 1_000_000
    assert all(0.0 <= result[key] <= 1.0 for key in KEYS)
    assert result["gap"] > 0.5  # labels are boosted, so the ranking is informative
