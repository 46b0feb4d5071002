"""How fast does a model start learning? GAP after a fixed number of AdamW steps, per variant.

Used to find why Attend-Fusion trains slower than its no-attention ablation on real data:
each variant starts from the same seed, sees the same random batches, and is scored on the
first --val-videos videos of --val.

    python tools/probe_training_start.py --train STORE --val STORE --steps 60
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avf.metrics import gap  # noqa: E402
from avf.models.blocks import identity_attention_init_  # noqa: E402
from avf.models.zoo import build_model  # noqa: E402
from avf.train.data import load_training_data  # noqa: E402

VARIANTS = {
    "default": ("attend_fusion", {}),
    "identity-attention": ("attend_fusion", {"identity": True}),
    "no-dropout": ("attend_fusion", {"dropout": 0.0}),
    "he-init": ("attend_fusion", {"he": True}),
    "three-layer-branches-without-attention": ("attend_fusion", {"drop_attention": True}),
    "no-attention-ablation": ("attend_fusion_no_attention", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-videos", type=int, default=2000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    train = load_training_data(args.train)
    val = load_training_data(args.val, train.num_classes)
    rgb_val, audio_val, labels_val = val.batch(np.arange(min(args.val_videos, len(val))))
    counts = np.bincount(train.label_indices, minlength=train.num_classes)
    prior = np.clip(counts / len(train), 1e-5, 1 - 1e-5)
    for variant in args.variants.split(","):
        name, options = VARIANTS[variant]
        torch.manual_seed(0)
        generator = np.random.default_rng(0)
        model = build_model(name, train.num_classes, dropout=options.get("dropout", 0.4))
        if options.get("he"):
            for module in model.modules():
                if isinstance(module, nn.Linear) and module is not model.classifier:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)
        if options.get("identity"):
            identity_attention_init_(model)
        if options.get("drop_attention"):
            model.attentions = None
        with torch.no_grad():  # as avf train does: classifier bias at the label priors
            model.classifier.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).float())
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        started = time.perf_counter()
        for _ in range(args.steps):
            rgb, audio, labels = train.batch(np.sort(generator.choice(len(train), args.batch_size, replace=False)))
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(torch.from_numpy(rgb), torch.from_numpy(audio)), torch.from_numpy(labels).float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            probabilities = torch.sigmoid(model(torch.from_numpy(rgb_val), torch.from_numpy(audio_val))).numpy()
        print(f"{variant:40s} GAP after {args.steps} steps: {gap(probabilities, labels_val):.4f}  "
              f"(last loss {loss.item():.5f}, {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
