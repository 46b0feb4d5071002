"""Run a model over a dataset and score it with the official YouTube-8M metrics."""

from __future__ import annotations

import numpy as np

from avf.metrics import EvaluationAccumulator
from avf.train.data import TrainingData


def evaluate_model(model, data: TrainingData, batch_size: int = 1024, device=None, top_k: int = 20,
                   threshold: float = 0.5) -> dict:
    """GAP, mAP, Hit@1, PERR and micro F1 of ``model`` on ``data`` (streamed, batch by batch)."""
    import torch

    device = device or next(model.parameters()).device
    accumulator = EvaluationAccumulator(data.num_classes, top_k, threshold)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            rgb, audio, labels = data.batch(np.arange(start, min(start + batch_size, len(data))))
            logits = model(torch.from_numpy(rgb).to(device), torch.from_numpy(audio).to(device))
            accumulator.add(torch.sigmoid(logits.float()).cpu().numpy(), labels)
    model.train(was_training)
    return accumulator.result()
