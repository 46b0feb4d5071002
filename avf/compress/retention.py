"""The retention gate: does the artifact, run by its own runtime, still score like the FP32 model?

Both models see the same held-out videos in the same batches; the report holds each one's
official metrics, their ratios, how often the top-20 classes agree and the largest
probability difference. MLPerf's edge rules ask closed-division submissions to keep 99% of
the FP32 reference accuracy; that is the default bar here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avf.metrics import EvaluationAccumulator
from avf.train.data import TrainingData

COMPARED = ("gap", "map", "f1", "hit_at_one", "perr")


def compare_on_data(reference: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    candidate: Callable[[np.ndarray, np.ndarray], np.ndarray], data: TrainingData,
                    batch_size: int = 512, top_k: int = 20, progress=None) -> dict:
    """Score two probability functions on ``data``; returns metrics, ratios and agreement."""
    ours, theirs = EvaluationAccumulator(data.num_classes, top_k), EvaluationAccumulator(data.num_classes, top_k)
    agreement_sum, largest_difference = 0.0, 0.0
    k = min(top_k, data.num_classes)
    for start in range(0, len(data), batch_size):
        indices = np.arange(start, min(start + batch_size, len(data)))
        rgb, audio, labels = data.batch(indices)
        p_ref, p_new = reference(rgb, audio), candidate(rgb, audio)
        if not np.isfinite(p_new).all():
            raise ValueError("the compressed model produced NaN or infinite probabilities")
        ours.add(p_ref, labels)
        theirs.add(p_new, labels)
        top_ref = np.argpartition(-p_ref, k - 1, axis=1)[:, :k]
        top_new = np.argpartition(-p_new, k - 1, axis=1)[:, :k]
        agreement_sum += sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(top_ref, top_new)) / k
        largest_difference = max(largest_difference, float(np.abs(p_ref - p_new).max()))
        if progress is not None:
            progress(len(indices))
    ref, new = ours.result(), theirs.result()
    ratios = {key: (new[key] / ref[key] if ref[key] else None) for key in COMPARED}
    return {"videos": len(data), "reference": _plain(ref), "compressed": _plain(new), "ratios": ratios,
            f"top{k}_agreement": agreement_sum / len(data), "max_probability_difference": largest_difference}


def gate(comparison: dict, min_retention: float) -> tuple[bool, str]:
    """Accepted when the GAP ratio reaches ``min_retention``; returns (accepted, reason)."""
    ratio = comparison["ratios"]["gap"]
    if ratio is None:
        return False, "reference GAP is 0: retention is undefined"
    if ratio >= min_retention:
        return True, f"GAP retention {ratio:.4f} >= {min_retention}"
    return False, f"GAP retention {ratio:.4f} < {min_retention} (reference {comparison['reference']['gap']:.4f}, " \
                  f"compressed {comparison['compressed']['gap']:.4f})"


def _plain(metrics: dict) -> dict:
    return {key: float(value) if isinstance(value, (float, np.floating)) else value for key, value in metrics.items()}
