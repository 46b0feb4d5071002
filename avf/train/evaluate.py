"""Score a PyTorch model on a dataset with the official YouTube-8M metrics (``avf eval``, training's validation)."""

from __future__ import annotations

from avf.runtime.scoring import LabelledData, score


def evaluate_model(model, data: LabelledData, batch_size: int = 1024, device=None, top_k: int = 20,
                   threshold: float = 0.5) -> dict:
    """GAP, mAP, Hit@1, PERR and micro F1 of ``model`` on ``data``, through the one scoring loop.

    The model is scored where it is (``device``: its parameters' by default) and left as it was
    found: neither moved, cast nor left in eval mode.
    """
    from avf.runtime.pytorch_model import eager_probabilities

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return score(eager_probabilities(model, device), data, batch_size, top_k, threshold)
    finally:
        model.train(was_training)
