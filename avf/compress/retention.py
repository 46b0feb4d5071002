"""The retention gate: does the artifact, run by its own runtime, still score like the FP32 model?

Both models see the same held-out videos in the same batches; the report holds each one's
official metrics, their ratios, how often the top-20 classes agree and the largest
probability difference. MLPerf's edge rules ask closed-division submissions to keep 99% of
the FP32 reference accuracy; that is the default bar here.

A retention measured on a few thousand videos is an estimate: at a search's edge, where the candidate
was chosen because its estimate just reached the bar, held-out videos score it lower (a 6-epoch
``avf tune`` pick kept 0.9911 on its 2,862 selection videos and 0.9884 on 2,839 others). So the
report also carries a one-sided lower confidence bound of the GAP ratio (a paired bootstrap over
videos), and the gate can be asked to hold that bound, not the estimate, to the bar.
"""

from __future__ import annotations

import numpy as np

from avf.metrics import EvaluationAccumulator
from avf.runtime.scoring import LabelledData, Run, accumulate_together, plain

COMPARED = ("gap", "map", "f1", "hit_at_one", "perr")
#: The bound reported when the gate is not asked for one (``confidence`` 0 gates on the estimate).
REPORTED_CONFIDENCE = 0.95
RESAMPLES = 1000


def compare_on_data(reference: Run, candidate: Run, data: LabelledData, batch_size: int = 512, top_k: int = 20,
                    progress=None, confidence: float = REPORTED_CONFIDENCE) -> dict:
    """Score two runners on ``data`` (the one scoring loop); returns metrics, ratios, agreement and the GAP bound."""
    k = min(top_k, data.num_classes)
    agreement = {"sum": 0.0, "largest_difference": 0.0}

    def agree(probabilities: dict[str, np.ndarray], labels: np.ndarray) -> None:
        p_ref, p_new = probabilities["reference"], probabilities["compressed"]
        if not np.isfinite(p_new).all():
            raise ValueError("the compressed model produced NaN or infinite probabilities")
        top_ref = np.argpartition(-p_ref, k - 1, axis=1)[:, :k]
        top_new = np.argpartition(-p_new, k - 1, axis=1)[:, :k]
        agreement["sum"] += sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(top_ref, top_new)) / k
        agreement["largest_difference"] = max(agreement["largest_difference"], float(np.abs(p_ref - p_new).max()))

    accumulators = accumulate_together({"reference": reference, "compressed": candidate}, data, batch_size, top_k,
                                       progress=progress, on_batch=agree)
    ref, new = (plain(accumulators[name].result()) for name in ("reference", "compressed"))
    ratios = {key: (new[key] / ref[key] if ref[key] else None) for key in COMPARED}
    return {"videos": len(data), "reference": ref, "compressed": new, "ratios": ratios,
            f"top{k}_agreement": agreement["sum"] / len(data),
            "max_probability_difference": agreement["largest_difference"],
            "gap_bound": gap_ratio_bound(accumulators["reference"], accumulators["compressed"],
                                         confidence or REPORTED_CONFIDENCE)}


def gap_ratio_bound(reference: EvaluationAccumulator, compressed: EvaluationAccumulator, confidence: float,
                    resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """One-sided lower ``confidence`` bound of compressed GAP / reference GAP: a paired percentile bootstrap.

    Each resample draws the videos with replacement and scores both models on the same draw, so what the
    two models share (which videos are hard) cancels and the bound reflects how much their difference
    varies from video to video. Seeded: the same scores give the same bound.
    """
    rng = np.random.default_rng(seed)
    videos = reference.num_videos
    ratios = []
    for start in range(0, resamples, 100):
        counts = np.stack([np.bincount(rng.integers(0, videos, videos), minlength=videos)
                           for _ in range(min(100, resamples - start))])
        gap_ref, gap_new = reference.gap_resampled(counts), compressed.gap_resampled(counts)
        defined = gap_ref > 0
        ratios.append(gap_new[defined] / gap_ref[defined])
    ratios = np.concatenate(ratios)
    lower = float(np.quantile(ratios, 1 - confidence)) if ratios.size else None
    return {"confidence": confidence, "lower": lower, "resamples": int(ratios.size),
            "method": "paired percentile bootstrap over videos (both models scored on the same resampled videos)"}


def held_retention(ratio: float, lower: float | None, confidence: float, digits: int = 4) -> tuple[float | None, str]:
    """The GAP retention a bar is held to (the measured ratio, or with ``confidence`` its lower bound, None when
    that was not measured) and it in words: the one rule of the gate and of avf tune's search."""
    said = f"GAP retention {ratio:.{digits}f}"
    if not confidence:
        return ratio, said
    if lower is None:
        return None, f"{said} without a {confidence:.0%} lower bound"
    return lower, f"{said} (its {confidence:.0%} lower bound {lower:.{digits}f})"


def gate(comparison: dict, min_retention: float, confidence: float = 0.0) -> tuple[bool, str]:
    """Accepted when the GAP ratio (or, with ``confidence``, its lower bound) reaches ``min_retention``."""
    ratio = comparison["ratios"]["gap"]
    if ratio is None:
        return False, "reference GAP is 0: retention is undefined"
    bound = comparison.get("gap_bound") or {}
    if confidence and (bound.get("confidence") != confidence or bound.get("lower") is None):
        return False, f"no {confidence:.0%} lower bound of the GAP retention was measured"
    held, said = held_retention(ratio, bound.get("lower"), confidence)
    if held >= min_retention:
        return True, f"{said} >= {min_retention}"
    return False, f"{said} < {min_retention} (reference {comparison['reference']['gap']:.4f}, " \
                  f"compressed {comparison['compressed']['gap']:.4f})"
