"""``CompressOptions``: what avf-compress is asked to build, each setting's default and limits stated once.

A module of its own, free of torch and ONNX, so the CLI can take its option defaults from here when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from avf.compress.precisions import DEFAULT, PrecisionName
from avf.compress.quantize import CALIBRATION_METHODS, INT4_ACCURACY, INT4_ACCURACY_LEVELS, INT4_BLOCK, INT4_BLOCKS


class CompressOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf are no settings

    checkpoint: Path
    out: Path | None = None
    force: bool = False
    fold: bool = True
    prune: float | None = Field(None, gt=0.0, lt=1.0)
    finetune_epochs: int = Field(1, ge=0)
    finetune_lr: float = 1e-4
    train: str | None = None
    precision: PrecisionName = DEFAULT
    calib: str | None = None
    calib_method: Literal[CALIBRATION_METHODS] = "percentile"  # type: ignore[valid-type]
    calib_size: int = Field(1024, ge=1)
    eval: str | None = None
    eval_size: int | None = Field(None, ge=1)
    min_retention: float = Field(0.99, ge=0.0, le=1.0)
    #: 0: the gate holds the measured GAP ratio to min_retention; c > 0: its one-sided c lower bound (bootstrap).
    retention_confidence: float = Field(0.0, ge=0.0, lt=1.0)
    backend: Literal["onnxruntime", "tensorrt", "torch-tensorrt", "torch-aot"] = "onnxruntime"
    #: Where --backend torch-aot compiles for (and its retention gate runs): auto = cuda where PyTorch sees a GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    #: INT8 mixed precision: these ONNX nodes (the most quantization-sensitive layers) stay float.
    keep_float: list[str] = Field(default_factory=list)
    #: --int4 only (refused otherwise; None: the default): weights per MatMulNBits scale, and its arithmetic.
    int4_block: Literal[INT4_BLOCKS] | None = Field(  # type: ignore[valid-type]
        None, description=f"--int4 only: weights per 4-bit scale, {', '.join(map(str, INT4_BLOCKS))} (default "
                          f"{INT4_BLOCK}); larger blocks are faster and lose more GAP.")
    int4_accuracy_level: Literal[INT4_ACCURACY_LEVELS] | None = Field(  # type: ignore[valid-type]
        None, description=f"--int4 only: MatMulNBits arithmetic, 4 INT8 or 1 float32 (default {INT4_ACCURACY}).")
    #: Where these options came from (avf-compress --config): {"recipe": None, "config": {"path", "sha256"},
    #: "command_line": [fields typed]}; None from a library caller. Recorded in report.json's options.
    resolved_from: dict[str, Any] | None = None

    def int4_parameters(self) -> dict[str, int]:
        """The MatMulNBits block size and accuracy level an int4 build uses, defaults filled in."""
        return {"block_size": self.int4_block or INT4_BLOCK, "accuracy_level": self.int4_accuracy_level or INT4_ACCURACY}

    def artifact_dir(self) -> Path:
        if self.out is not None:
            return self.out
        stem = self.checkpoint.name.removesuffix(".pt")
        pruned = f".pruned{round(self.prune * 100)}" if self.prune else ""
        int4 = "".join(f"-{tag}{value}" for tag, value, default in (("b", self.int4_block, INT4_BLOCK),
                       ("l", self.int4_accuracy_level, INT4_ACCURACY)) if value not in (None, default))
        return self.checkpoint.parent / f"{stem}{pruned}.{self.precision}{int4}"
