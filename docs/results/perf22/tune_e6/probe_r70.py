"""Prune 0.70 with 6 distillation epochs (the tune used 3): does FP32, and INT4 block 256, keep 99% there?"""
from pathlib import Path
from avf.compress.options import CompressOptions
from avf.compress.pipeline import CompressionRejected, compress
from avf.data.vocabulary import file_sha256
from avf.tune.cache import DistillCache
ckpt = Path("/work/runs/tr/run/best.pt")
cache = DistillCache(Path("/work/runs/tr/r70cache"), file_sha256(ckpt))
S = "/work/runs/tr/stores"
for precision, extra in (("fp32", {}), ("int4", {"int4_block": 256})):
    for data in ("select", "test"):
        options = CompressOptions(checkpoint=ckpt, out=Path(f"/work/runs/tr/r70e6-{precision}-{data}"), force=True,
                                  prune=0.70, finetune_epochs=6, train=f"{S}/train", precision=precision,
                                  eval=f"{S}/{data}", min_retention=0.99, seed=0, **extra)
        try:
            report = compress(options, distill_cache=cache)
        except CompressionRejected as rejected:
            report = rejected.report
        print(precision, data, round(report.retention.ratios["gap"], 4), flush=True)
