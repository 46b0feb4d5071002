"""Structured pruning of hidden channels (Torch-Pruning's dependency graph) and distillation recovery.

Whole hidden channels go, so the pruned network is a smaller dense network: every runtime
gets faster without sparse kernels. The dependency graph keeps coupled layers consistent
(branch outputs feeding a concatenation, residual sums); the classifier's outputs and the
model inputs are never pruned, and widths stay multiples of 8 for tensor-core / SIMD tiles.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from avf.train.data import TrainingData

ROUND_TO = 8


def require_torch_pruning():
    try:
        import torch_pruning
    except ImportError as exc:
        raise ImportError("structured pruning needs Torch-Pruning: pip install 'avf[onnx]'") from exc
    return torch_pruning


def prune_channels(model: nn.Module, ratio: float, rgb_dim: int, audio_dim: int) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of every prunable hidden layer's channels removed (L2 magnitude)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"prune ratio must be between 0 and 1, not {ratio}")
    tp = require_torch_pruning()
    pruned = copy.deepcopy(model).eval()
    example = (torch.randn(2, rgb_dim), torch.randn(2, audio_dim))
    pruner = tp.pruner.BasePruner(
        pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=[pruned.classifier], round_to=ROUND_TO)
    pruner.step()
    return pruned


def check_ratio_honoured(ratio: float, before: list[int], after: list[int]) -> float:
    """The fraction of hidden channels actually removed; an error when ``ratio`` could not be honoured.

    Widths stay multiples of ROUND_TO, so a layer may land one step away from the exact ratio;
    further than that (a narrow model asked for 0.9, where nothing can go) is refused rather than
    reported as pruned.
    """
    from avf.errors import InputError

    if not before:  # e.g. the starter-code MoE: inputs straight into the (never pruned) classifier head
        raise InputError(None, f"--prune {ratio:g} does not apply to this model: it has no hidden layers "
                               "(everything is its classifier head, whose class outputs are never pruned)")
    achieved = 1.0 - sum(after) / max(sum(before), 1)
    off = [(b, a) for b, a in zip(before, after) if abs(a - b * (1.0 - ratio)) > ROUND_TO]
    if off or (achieved == 0.0 and ratio > 0):
        narrowest = min(before)
        steps = narrowest // ROUND_TO
        largest = 1.0 - 1.0 / steps if steps > 1 else 0.0
        possible = (f"ratios in steps of {ROUND_TO}/{narrowest} = {ROUND_TO / narrowest:.3g}, up to {largest:.3g}"
                    if steps > 1 else "none: its narrowest hidden layer is already a single step")
        raise InputError(None, f"--prune {ratio:g} cannot be honoured on this model (hidden widths "
                               f"{sorted(set(before))}, kept in multiples of {ROUND_TO}; it removed {achieved:.1%}): "
                               f"possible: {possible}")
    return achieved


def hidden_widths(model: nn.Module) -> list[int]:
    """Output widths of every Linear outside the classifier (or classifier head): what pruning changed."""
    head = set(model.classifier.modules())
    return [m.out_features for m in model.modules() if isinstance(m, nn.Linear) and m not in head]


def distill_device() -> torch.device:
    """Where pruning's distillation runs: the GPU when there is one (minutes of CPU become seconds), else the CPU.

    Only the training moves: the distilled weights come back to the CPU, where export and quantization work."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def teacher_probabilities(teacher: nn.Module, data: TrainingData, batch_size: int = 1024,
                          device: torch.device | None = None) -> np.ndarray:
    """The teacher's probabilities for every video of ``data`` (float32, eval mode): distill's soft targets."""
    device = distill_device() if device is None else device
    teacher = _on(teacher, device).eval()
    out = np.empty((len(data), data.num_classes), np.float32)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            indices = np.arange(start, min(start + batch_size, len(data)))
            rgb, audio, _ = (torch.from_numpy(a).to(device) for a in data.batch(indices))
            out[start:start + len(indices)] = torch.sigmoid(teacher(rgb, audio)).float().cpu().numpy()
    return out


def _on(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``: itself on the CPU, a copy elsewhere (the caller's teacher stays where it is)."""
    return model if device.type == "cpu" else copy.deepcopy(model).to(device)


def distill(student: nn.Module, teacher: nn.Module, data: TrainingData, epochs: int, batch_size: int = 256,
            lr: float = 1e-4, seed: int = 0, hard_weight: float = 0.5,
            on_epoch: Callable[[int, float], None] | None = None, on_batch: Callable[[int], None] | None = None,
            soft_targets: Callable[[np.ndarray], torch.Tensor] | None = None,
            device: torch.device | None = None) -> list[float]:
    """Fine-tune ``student`` towards ``teacher``'s probabilities (and the true labels).

    Loss: (1 - hard_weight) * BCE(student, teacher probabilities) + hard_weight * BCE(student,
    labels). Returns the mean loss per epoch. The teacher is left untouched. ``soft_targets``
    (video indices -> the teacher's probabilities, computed once) replaces the teacher's forward
    pass: a search that distils several pruned students from one teacher pays for it once. It runs on
    ``device`` (default :func:`distill_device`); the student is back on the CPU when it returns.
    """
    device = distill_device() if device is None else device
    student.to(device)
    teacher = teacher if soft_targets is not None else _on(teacher, device)
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    teacher.eval()
    losses = []
    for epoch in range(1, epochs + 1):
        student.train()
        order = generator.permutation(len(data))
        total, batches = 0.0, 0
        for start in range(0, len(order), batch_size):
            indices = np.sort(order[start:start + batch_size])
            rgb, audio, labels = (torch.from_numpy(a).to(device) for a in data.batch(indices))
            if soft_targets is not None:
                soft = soft_targets(indices).to(device)
            else:
                with torch.no_grad():
                    soft = torch.sigmoid(teacher(rgb, audio))
            logits = student(rgb, audio)
            loss = (1 - hard_weight) * nn.functional.binary_cross_entropy_with_logits(logits, soft)
            if hard_weight:
                loss = loss + hard_weight * nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
            if on_batch is not None:
                on_batch(len(indices))
        losses.append(total / max(batches, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    student.to("cpu").eval()
    return losses
