"""Score the mean of several checkpoints' probabilities on data (what `avf train --distill-from A --distill-from B`
would use as soft targets), beside each checkpoint alone.

    python tools/ensemble_eval.py RUN_A/best.pt RUN_B/best.pt --data /work/avf-real/val [--json]
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint
    from avf.train.data import load_training_data
    from avf.train.evaluate import evaluate_model

    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    for path in args.checkpoints:
        payload = load_checkpoint(path)
        models.append(model_from_checkpoint(payload, path).eval())
    data = load_training_data(args.data, models[0].num_classes)

    class MeanProbability(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.members = torch.nn.ModuleList(models)

        def forward(self, rgb, audio):
            p = torch.stack([torch.sigmoid(m(rgb, audio)) for m in self.members]).mean(0).clamp(1e-7, 1 - 1e-7)
            return torch.log(p) - torch.log1p(-p)

    results = {path: evaluate_model(model, data) for path, model in zip(args.checkpoints, models)}
    if len(models) > 1:
        results["mean of probabilities"] = evaluate_model(MeanProbability(), data)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, metrics in results.items():
            print(f"{name}: GAP {metrics['gap']:.4f}  F1 {metrics['f1']:.4f}  mAP {metrics['map']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
