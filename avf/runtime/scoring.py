"""The one scoring loop: run models over labelled videos, batch by batch, into the official metrics.

``avf eval`` and training's validation (:func:`avf.train.evaluate.evaluate_model`), the retention
gate (:func:`avf.compress.retention.compare_on_data`) and ``avf tune``'s sensitivity scan all score
through :func:`score_together`, so every figure they report comes from the same batches,
accumulator (:class:`avf.metrics.EvaluationAccumulator`) and rules. A run is a
:class:`~avf.runtime.runner.Runner` or any ``run(rgb, audio) -> probabilities``; the metrics come
back as plain floats and ints (JSON as they are), so a runner on another machine can score there
and send only them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from avf.metrics import EvaluationAccumulator

#: A Runner, or any function of a batch's rgb and audio features to its probabilities.
Run = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LabelledData(Protocol):
    """Held-out videos as :class:`avf.train.data.TrainingData` serves them."""

    num_classes: int

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def score_together(runs: Mapping[str, Run], data: LabelledData, batch_size: int = 512, top_k: int = 20,
                   threshold: float = 0.5, progress: Callable[[int], None] | None = None,
                   on_batch: Callable[[dict[str, np.ndarray], np.ndarray], None] | None = None) -> dict[str, dict]:
    """Each run's metrics on ``data``: every run sees the same videos in the same batches.

    ``on_batch(probabilities_by_run, labels)`` sees each batch before it is scored (a comparison of
    the runs, a check that may raise); ``progress(n)`` is told after each batch of ``n`` videos.
    """
    accumulators = accumulate_together(runs, data, batch_size, top_k, threshold, progress, on_batch)
    return {name: plain(accumulator.result()) for name, accumulator in accumulators.items()}


def accumulate_together(runs: Mapping[str, Run], data: LabelledData, batch_size: int = 512, top_k: int = 20,
                        threshold: float = 0.5, progress: Callable[[int], None] | None = None,
                        on_batch: Callable[[dict[str, np.ndarray], np.ndarray], None] | None = None
                        ) -> dict[str, EvaluationAccumulator]:
    """:func:`score_together`'s loop, returning each run's accumulator (for resampling its videos)."""
    accumulators = {name: EvaluationAccumulator(data.num_classes, top_k, threshold) for name in runs}
    for start in range(0, len(data), batch_size):
        indices = np.arange(start, min(start + batch_size, len(data)))
        rgb, audio, labels = data.batch(indices)
        probabilities = {name: run(rgb, audio) for name, run in runs.items()}
        if on_batch is not None:
            on_batch(probabilities, labels)
        for name, batch_probabilities in probabilities.items():
            accumulators[name].add(batch_probabilities, labels)
        if progress is not None:
            progress(len(indices))
    return accumulators


def score(run: Run, data: LabelledData, batch_size: int = 512, top_k: int = 20, threshold: float = 0.5,
          progress: Callable[[int], None] | None = None) -> dict:
    """GAP, mAP, Hit@1, PERR, micro F1 (with its precision and recall) and the video count of one run on ``data``."""
    return score_together({"run": run}, data, batch_size, top_k, threshold, progress)["run"]


def plain(metrics: dict) -> dict:
    """numpy scalars as Python floats and ints, so the metrics are JSON as they are."""
    return {key: value.item() if isinstance(value, np.generic) else value for key, value in metrics.items()}
