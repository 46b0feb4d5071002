"""The floor beside every p50: weights read once at the measured bandwidth, the regime, the ISA and caches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avf.deploy import machine
from cli_harness import cli

INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8
"""
AMD_VNNI = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
"""
AARCH64 = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""
OLD_X86 = "flags\t\t: fpu sse4_2 avx avx2 fma\n"


def test_isa_parser_reads_intel_amd_and_arm_flags():
    intel = machine.isa_facts(INTEL_AMX)
    assert intel["arch"] == "x86" and intel["amx_int8"] and intel["amx_tile"] and intel["avx512_vnni"]
    assert intel["int8_dot"] == "amx_int8"
    amd = machine.isa_facts(AMD_VNNI)
    assert amd["avx512_vnni"] and amd["avx512_bf16"] and not amd["amx_int8"] and not amd["avx_vnni"]
    assert amd["int8_dot"] == "avx512_vnni"
    arm = machine.isa_facts(AARCH64)
    assert arm["arch"] == "aarch64" and arm["asimddp"] and not arm["i8mm"] and not arm["sve"]
    assert arm["int8_dot"] == "asimddp" and "avx2" not in arm
    assert machine.isa_facts(OLD_X86)["int8_dot"] == "none"
    assert machine.isa_facts("processor\t: 0\n")["arch"] == "unknown"


def test_cache_sizes_from_a_sysfs_tree(tmp_path):
    for index, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"),
                                                 (3, "Unified", "105M")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    caches = machine.cpu_caches(str(tmp_path))
    assert caches["L1d"] == 48 << 10 and caches["L2"] == 2 << 20 and caches["L3"] == 105 << 20
    assert machine.last_level(caches) == ("L3", 105 << 20)
    assert machine.last_level({"L2": 1 << 20}) == ("L2", 1 << 20)


def test_regime_thresholds():
    mib = 2**20
    assert machine.regime(10 * mib, 32 * mib, 1.0, 50.0)[0] == machine.CACHE_RESIDENT
    assert machine.regime(64 * mib, 32 * mib, 1.0, 1.5)[0] == machine.BANDWIDTH_BOUND
    assert machine.regime(64 * mib, 32 * mib, 1.0, machine.BANDWIDTH_BOUND_RATIO)[0] == machine.BANDWIDTH_BOUND
    name, says = machine.regime(64 * mib, None, 0.5, 5.0)
    assert name == machine.LAUNCH_BOUND and says == "p50 is 10.0 x the floor: per-call overheads dominate"
    record = machine.floor({"bytes": 64 * mib, "method": "m"}, {"bandwidth_gbs": 20.0, "source": "measured",
                                                                 "method": "m"}, ("L3", 32 * mib),
                           [{"scenario": "offline", "batch": 64, "p50_ms": 100.0}])
    assert record["regime"] == machine.LAUNCH_BOUND and "compute too" in record["says"]
    unmeasured = machine.floor({"bytes": 64 * mib, "method": "m"}, {"bandwidth_gbs": None, "source": "not measured",
                                                                     "method": "not measured: no GPU"}, (None, None),
                               [{"scenario": "single-stream", "batch": 1, "p50_ms": 1.0}])
    assert unmeasured["floor_ms"] is None and unmeasured["regime"] is None


def test_cpu_bandwidth_is_measured_once_per_process():
    first = machine.cpu_bandwidth(1)
    assert 0.1 < first["bandwidth_gbs"] < 10_000 and first["source"] == "measured"
    assert "numpy copy" in first["method"] and "read + written" in first["method"]
    assert machine.cpu_bandwidth(1) is first


def test_bench_records_the_floor_and_the_machine(tiny_artifact, tmp_path):
    import onnx
    from onnx import numpy_helper

    from avf.deploy.bench import benchmark, write_bench
    from avf.deploy.bench_record import read_bench

    result = benchmark(tiny_artifact, "onnxruntime", [1, 4], duration=0.05, threads=1)
    write_bench(result, tmp_path / "bench.json")
    bench = read_bench(tmp_path / "bench.json")  # the schema takes it back
    floor = bench["floor"]
    graph = onnx.load(str(tiny_artifact / "model.onnx")).graph
    assert floor["weights_bytes"] == sum(numpy_helper.to_array(t).nbytes for t in graph.initializer) > 0
    assert floor["weights_method"] == "ONNX initializers of model.onnx"
    assert floor["bandwidth_source"] == "measured" and floor["bandwidth_gbs"] > 0
    assert floor["floor_ms"] == floor["weights_bytes"] / (floor["bandwidth_gbs"] * 1e9) * 1e3
    assert floor["regime"] in machine.REGIMES and floor["thresholds"] == machine.THRESHOLDS
    assert [(row["scenario"], row["batch"]) for row in floor["rows"]] == [("single-stream", 1), ("offline", 1),
                                                                          ("offline", 4)]
    single = floor["rows"][0]
    assert single["p50_ms"] == bench["scenarios"]["single-stream"]["p50_ms"]
    assert single["over_floor"] == pytest.approx(single["p50_ms"] / floor["floor_ms"])
    if floor["weights_bytes"] <= floor["cache_bytes"]:  # the tiny model fits any last-level cache
        assert floor["regime"] == machine.CACHE_RESIDENT
    isa = bench["conditions"]["isa"]
    assert isa["arch"] in ("x86", "aarch64", "unknown") and "int8_dot" in isa
    assert bench["conditions"]["caches"]["source"]


def test_old_benches_still_read_and_a_bad_floor_is_refused(tiny_artifact, tmp_path):
    from avf.deploy.bench import benchmark
    from avf.deploy.bench_record import read_bench
    from avf.errors import InputError

    result = benchmark(tiny_artifact, "onnxruntime", [1], scenarios=["offline"], duration=0.02, threads=1)
    old = {key: value for key, value in result.items() if key != "floor"}
    old["conditions"] = {k: v for k, v in old["conditions"].items() if k not in ("isa", "caches")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert "floor" not in read_bench(tmp_path / "old.json")
    result["floor"]["regime"] = "fast"
    (tmp_path / "bad.json").write_text(json.dumps(result))
    with pytest.raises(InputError, match="regime"):
        read_bench(tmp_path / "bad.json")


def test_checkpoint_weights_are_counted_at_the_run_precision(tiny_run):
    from avf.deploy.bench import weights_read
    from avf.train.checkpoint import load_checkpoint

    checkpoint = tiny_run / "run" / "best.pt"
    state = load_checkpoint(checkpoint)["state_dict"]
    floats = sum(t.numel() for t in state.values() if t.is_floating_point())
    others = sum(t.numel() * t.element_size() for t in state.values() if not t.is_floating_point())
    fp32 = weights_read(checkpoint, None, {"kind": "checkpoint", "precision": "fp32"})
    fp16 = weights_read(checkpoint, None, {"kind": "checkpoint", "precision": "fp16"})
    assert fp32["bytes"] == 4 * floats + others and fp16["bytes"] == 2 * floats + others
    assert fp16["method"] == "checkpoint parameters and buffers at fp16"


def test_avf_bench_prints_the_floor_and_the_regime(tiny_artifact, tmp_path):
    code, out, err = cli("bench", tiny_artifact, "--batch", "1", "--duration", 0.05, "--threads", 1,
                         "-o", tmp_path / "b.json")
    assert code == 0, err
    assert "floor ms" in out and "regime" in out and "floor: " in out and "GB/s" in out
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["floor"]["regime"] in out and f"{bench['floor']['floor_ms']:.4f}" in out
    assert np.isfinite(bench["floor"]["floor_ms"])
