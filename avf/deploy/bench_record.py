"""bench.json as other commands read it: validated once, and matched to the artifact it claims to measure.

``avf-deploy plan --bench`` and ``avf-deploy manifest --bench`` both read a bench through
:func:`read_bench` and check it with :func:`check_bench_of`, so a hand-edited file (wrong types,
missing keys, a negative or infinite latency) or a bench of another model is refused the same way.
Fields added later (``floor``) are optional, so benches recorded before them still read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from avf.documents import read_mapping, validate
from avf.errors import InputError


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _Energy(_Record):
    measured: bool
    millijoules_per_inference: float | None = Field(None, ge=0)
    source: str | None = None
    reason: str | None = None


class _Latency(_Record):
    p50_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    mean_ms: float = Field(gt=0)
    iterations: int = Field(ge=1)


class _SingleStream(_Latency):
    energy: _Energy


class _Offline(_Record):
    batch: int = Field(ge=1)
    samples_per_s: float = Field(gt=0)
    batch_latency: _Latency
    energy: _Energy


class _Scenarios(_Record):
    single_stream: _SingleStream | None = Field(None, alias="single-stream")
    offline: list[_Offline] | None = None


class _DeviceMemory(_Record):
    measured: bool
    model_device_mib: float | None = None
    source: str | None = None


class _Memory(_Record):
    model_rss_mib: float
    device: _DeviceMemory | None = None


class _Facts(_Record):
    kind: Literal["artifact", "checkpoint"]
    backend: str
    precision: str
    onnx_sha256: str | None = None


Regime = Literal["cache-resident", "bandwidth-bound", "launch-bound"]  # avf.deploy.machine.REGIMES


class _FloorRow(_Record):
    scenario: Literal["single-stream", "offline"]
    batch: int = Field(ge=1)
    p50_ms: float = Field(ge=0)
    over_floor: float | None = Field(None, ge=0)
    regime: Regime | None = None


class _Floor(_Record):
    """The weights read once at the memory bandwidth, and the regime each p50 is in (:mod:`avf.deploy.machine`)."""

    weights_bytes: int = Field(ge=0)
    weights_method: str
    bandwidth_gbs: float | None = Field(None, gt=0)  # None: not measured (the method says why)
    bandwidth_source: Literal["measured", "not measured"]
    bandwidth_method: str
    floor_ms: float | None = Field(None, ge=0)
    cache_bytes: int | None = Field(None, ge=0)
    regime: Regime | None = None
    rows: list[_FloorRow] = []


class BenchRecord(_Record):
    format: Literal["avf-bench"]
    target: str
    target_facts: _Facts
    scenarios: _Scenarios
    memory: _Memory
    conditions: dict
    floor: _Floor | None = None  # absent in benches recorded before it


def read_bench(path: str | Path) -> dict:
    """A bench.json written by avf-bench, with every field the deployment commands use checked."""
    path = Path(path)
    what = "an avf-bench result"
    data = read_mapping(path, what)
    if data.get("format") != "avf-bench":
        raise InputError(path, f"not {what} (format is {data.get('format')!r})")
    validate(path, what, data, BenchRecord)
    return data


def check_bench_of(artifact: Path, report: dict, bench: dict) -> None:
    """A bench of another model (or of the uncompressed checkpoint) must not pass as this artifact's."""
    facts = bench["target_facts"]
    if facts["kind"] != "artifact":
        raise InputError(artifact, f"the bench measured {bench['target']} (a {facts['kind']}), not this artifact")
    measured = facts.get("onnx_sha256")
    expected = report["files"]["model.onnx"]["sha256"]
    if not measured:
        raise InputError(artifact, "the bench does not record which model.onnx it measured (onnx_sha256); "
                                   "re-run avf-bench on this artifact")
    if measured != expected:
        raise InputError(artifact, f"the bench measured another model.onnx ({bench['target']}), not this artifact's")
