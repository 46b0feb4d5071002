"""The retention gate: does the artifact, run by its own runtime, still score like the FP32 model?

Both models see the same held-out videos in the same batches; the report holds each one's
official metrics, their ratios, how often the top-20 classes agree and the largest
probability difference. MLPerf's edge rules ask closed-division submissions to keep 99% of
the FP32 reference accuracy; that is the default bar here.
"""

from __future__ import annotations

import numpy as np

from avf.runtime.scoring import LabelledData, Run, score_together

COMPARED = ("gap", "map", "f1", "hit_at_one", "perr")


def compare_on_data(reference: Run, candidate: Run, data: LabelledData, batch_size: int = 512, top_k: int = 20,
                    progress=None) -> dict:
    """Score two runners on ``data`` (the one scoring loop); returns metrics, ratios and agreement."""
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

    scores = score_together({"reference": reference, "compressed": candidate}, data, batch_size, top_k,
                            progress=progress, on_batch=agree)
    ref, new = scores["reference"], scores["compressed"]
    ratios = {key: (new[key] / ref[key] if ref[key] else None) for key in COMPARED}
    return {"videos": len(data), "reference": ref, "compressed": new, "ratios": ratios,
            f"top{k}_agreement": agreement["sum"] / len(data),
            "max_probability_difference": agreement["largest_difference"]}


def gate(comparison: dict, min_retention: float) -> tuple[bool, str]:
    """Accepted when the GAP ratio reaches ``min_retention``; returns (accepted, reason)."""
    ratio = comparison["ratios"]["gap"]
    if ratio is None:
        return False, "reference GAP is 0: retention is undefined"
    if ratio >= min_retention:
        return True, f"GAP retention {ratio:.4f} >= {min_retention}"
    return False, f"GAP retention {ratio:.4f} < {min_retention} (reference {comparison['reference']['gap']:.4f}, " \
                  f"compressed {comparison['compressed']['gap']:.4f})"

