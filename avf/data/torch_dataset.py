"""PyTorch ``Dataset`` over a feature store: no parsing in the training loop.

Batches come out of ``__getitems__`` as one vectorised memory-map gather, so a DataLoader with
``batch_size=B`` costs one fancy-index per batch instead of B Python calls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avf.data.feature_store import FeatureStore


def require_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "PyTorch is not installed: install it first (CPU: pip install torch==2.13.0, "
            "or the CUDA build for your GPU), or pip install 'avf[torch]'"
        ) from None
    return torch


class FeatureStoreDataset:
    """Samples ``(rgb, audio, labels)`` as float32 tensors; labels are 0/1 over all classes.

    Video level: (1024,), (128,), (C,). Frame level: dequantized (T, 1024), (T, 128), (C,).
    """

    def __init__(self, store: str | Path | FeatureStore, indices=None):
        self.torch = require_torch()
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.indices = np.arange(len(self.store)) if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        rgb, audio = self.store.features(index)
        labels = self.store.labels_dense([index])[0]
        t = self.torch
        return t.from_numpy(rgb), t.from_numpy(audio), t.from_numpy(labels)

    def __getitems__(self, batch_indices):
        """DataLoader's batched fetch: one gather for the whole batch (video level)."""
        if self.store.level != "video":
            return [self[i] for i in batch_indices]
        rgb, audio, labels = self.store.batch(self.indices[np.asarray(batch_indices, np.int64)])
        t = self.torch
        return list(zip(t.from_numpy(rgb), t.from_numpy(audio), t.from_numpy(labels)))
