"""One pruned+distilled model per prune ratio, on disk, reused by every precision and calibration.

Distillation is the expensive step of a candidate (an epoch over the training data); INT8, FP16
and FP32 at the same ratio start from the same weights. The cache stores the distilled
state_dict (loaded with ``weights_only=True``), keyed by everything that shapes it: the
checkpoint's sha256, the ratio, the epochs, learning rate, training data and seed.

Every ratio distils from the same (folded) teacher over the same videos, so the teacher's
probabilities are computed once per process and kept in memory (float32, videos x classes):
each further ratio pays only for its student, not for the teacher's forward pass again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from avf.atomic import atomic_file


class DistillCache:
    def __init__(self, folder: Path, checkpoint_sha256: str):
        self.folder, self.checkpoint_sha256 = Path(folder), checkpoint_sha256
        self.hits = self.misses = 0
        self._soft: dict = {}

    def soft_targets(self, options, teacher, data):
        """video indices -> the teacher's probabilities, computed on first use for this teacher and data."""
        import torch

        from avf.compress.prune import teacher_probabilities

        key = (options.fold, options.train)
        if key not in self._soft:
            self._soft[key] = teacher_probabilities(teacher, data)
        table = self._soft[key]
        return lambda indices: torch.from_numpy(table[indices])

    def path(self, options) -> Path:
        key = {"checkpoint": self.checkpoint_sha256, "fold": options.fold, "prune": options.prune,
               "epochs": options.finetune_epochs, "lr": options.finetune_lr, "train": options.train,
               "seed": options.seed}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.folder / f"distilled-r{round(options.prune * 100):02d}-{digest}.pt"

    def load(self, options) -> dict | None:
        import torch

        path = self.path(options)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            self.misses += 1
            return None
        self.hits += 1
        return {"state_dict": data["state_dict"], "losses": list(data["losses"]), "source": f"the tune cache ({path.name})"}

    def save(self, options, model, losses) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path(options), suffix=".tmp.pt") as tmp:
            torch.save({"state_dict": model.state_dict(), "losses": [float(x) for x in losses]}, tmp)
