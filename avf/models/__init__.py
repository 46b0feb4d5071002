"""The model zoo: the paper's fusion networks, built from shared blocks, by stable name."""

from avf.models.zoo import (
    MODEL_NAMES,
    PAPER_PARAMS,
    REGISTRY,
    FusionModel,
    build_model,
    count_parameters,
    parameter_count,
)

__all__ = ["MODEL_NAMES", "PAPER_PARAMS", "REGISTRY", "FusionModel", "build_model", "count_parameters", "parameter_count"]
