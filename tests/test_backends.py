"""avf-bench backends: reduced-precision PyTorch, CUDA graphs, ONNX Runtime GPU providers, TensorRT.

What a CPU machine can check runs here for real (FP16/BF16 PyTorch on CPU, the errors when a GPU
path is asked for without a GPU); the CUDA and TensorRT runs execute where a GPU (and TensorRT)
is present and are skipped elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from avf.deploy.target import load_target  # noqa: E402
from avf.errors import InputError  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    """The session's tiny run (its data beside it, in ``../data``)."""
    return tiny_run / "run" / "last.pt"


def _inputs(batch=4, seed=0):
    generator = np.random.default_rng(seed)
    return (generator.standard_normal((batch, 1024), dtype=np.float32),
            generator.standard_normal((batch, 128), dtype=np.float32))


@pytest.mark.parametrize("precision,tolerance", [("fp16", 5e-3), ("bf16", 3e-2)])
def test_reduced_precision_checkpoint_agrees_with_fp32(checkpoint, precision, tolerance):
    reference, _ = load_target(checkpoint, "pytorch", threads=1)
    reduced, facts = load_target(checkpoint, "pytorch", threads=1, precision=precision)
    rgb, audio = _inputs()
    expected, got = reference(rgb, audio), reduced(rgb, audio)
    assert facts["precision"] == precision and got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < tolerance
    assert np.abs(got - expected).max() > 0  # it really ran in reduced precision


def test_gpu_only_options_fail_clearly_without_a_gpu(checkpoint, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="CUDA graphs need a CUDA GPU"):
        load_target(checkpoint, "pytorch", cuda_graphs=True)
    with pytest.raises(InputError, match="no CUDA GPU"):
        load_target(checkpoint, "pytorch", device="cuda")
    with pytest.raises(InputError, match="unknown precision"):
        load_target(checkpoint, "pytorch", precision="fp8")
    with pytest.raises(InputError, match="compress it for onnxruntime-cuda"):
        load_target(checkpoint, "onnxruntime-cuda")
    result = subprocess.run([sys.executable, "-m", "avf", "bench", str(checkpoint), "--cuda-graphs", "-o",
                             str(tmp_path / "b.json")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "CUDA graphs need a CUDA GPU" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.json").exists()


@pytest.fixture(scope="module")
def artifact(tiny_artifact):
    return tiny_artifact


def test_artifact_gpu_backends_run_or_name_what_is_missing(artifact):
    import onnxruntime as ort

    from avf.compress.tensorrt_engine import unavailable_reason

    available = set(ort.get_available_providers())
    for backend, provider in (("onnxruntime-cuda", "CUDAExecutionProvider"),
                              ("onnxruntime-tensorrt", "TensorrtExecutionProvider")):
        if provider in available and torch.cuda.is_available():
            try:
                run, facts = load_target(artifact, backend)
            except InputError as exc:  # compiled in, but its libraries do not load here: refused, not faked
                assert "fell back to" in str(exc), exc
                continue
            assert facts["providers"][0] == provider and facts["device"] == "cuda"
            assert run(*_inputs()).shape == (4, 10)
        else:
            with pytest.raises(InputError, match="onnxruntime-gpu"):
                load_target(artifact, backend)
    reason = unavailable_reason()
    if reason:
        with pytest.raises(InputError, match="cannot run a TensorRT engine here"):
            load_target(artifact, "tensorrt")
    else:  # an engine is only built by avf-compress where TensorRT is present; this artifact has none
        with pytest.raises(InputError, match="no TensorRT engine"):
            load_target(artifact, "tensorrt")
    with pytest.raises(InputError, match="applies to checkpoints"):
        load_target(artifact, "onnxruntime", precision="fp16")


def test_manifest_refuses_a_bench_of_another_target(checkpoint, artifact, tmp_path):
    from avf.deploy.bench import benchmark
    from avf.deploy.manifest import build_manifest
    from avf.deploy.profiles import load_profile

    of_checkpoint = benchmark(checkpoint, batches=[1], scenarios=["single-stream"], duration=0.05, threads=1)
    with pytest.raises(InputError, match="a checkpoint"):
        build_manifest(artifact, load_profile("x86-cpu"), of_checkpoint, manifest_path=artifact.parent / "manifest.json")
    of_artifact = benchmark(artifact, batches=[1], scenarios=["single-stream"], duration=0.05, threads=1)
    manifest = build_manifest(artifact, load_profile("x86-cpu"), of_artifact, manifest_path=artifact.parent / "manifest.json")
    assert manifest.backend == "onnxruntime" and "resident memory" in manifest.memory.source
    # A GPU bench reports device memory (NVML); the manifest budgets that, not the host's RSS.
    on_gpu = {**of_artifact, "memory": {**of_artifact["memory"], "device": {
        "measured": True, "model_device_mib": 321.0, "source": "NVML device memory used after the runs minus before"}}}
    manifest = build_manifest(artifact, load_profile("t4"), on_gpu, manifest_path=artifact.parent / "manifest.json")
    assert manifest.memory.value == 321.0 and "NVML" in manifest.memory.source
    of_artifact["target_facts"]["onnx_sha256"] = "0" * 64
    with pytest.raises(InputError, match="another model.onnx"):
        build_manifest(artifact, load_profile("x86-cpu"), of_artifact, manifest_path=artifact.parent / "manifest.json")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_graphs_replay_matches_eager(checkpoint, precision):
    eager, _ = load_target(checkpoint, "pytorch", device="cuda", precision=precision)
    graphed, facts = load_target(checkpoint, "pytorch", device="cuda", precision=precision, cuda_graphs=True)
    assert facts["cuda_graphs"]
    for batch in (1, 8, 1):  # a new batch size captures a new graph; an old one replays
        rgb, audio = _inputs(batch, seed=batch)
        np.testing.assert_allclose(graphed(rgb, audio), eager(rgb, audio), atol=1e-5)


@cuda
def test_bench_on_cuda_records_the_gpu(checkpoint, tmp_path):
    from avf.deploy.bench import benchmark

    result = benchmark(checkpoint, batches=[1, 8], duration=0.2, device="cuda", precision="fp16", cuda_graphs=True)
    assert result["conditions"]["gpu"] and result["memory"]["device"]["measured"] in (True, False)
    assert result["scenarios"]["single-stream"]["p50_ms"] > 0
    json.dumps(result)


@cuda
def test_tensorrt_engine_matches_onnxruntime(checkpoint, tmp_path):
    pytest.importorskip("tensorrt")
    out = tmp_path / "trt"
    result = subprocess.run([sys.executable, "-m", "avf", "compress", str(checkpoint), "--fp16", "--backend", "tensorrt",
                             "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    engine, facts = load_target(out, "tensorrt")
    onnx, _ = load_target(out, "onnxruntime")
    rgb, audio = _inputs(8)
    assert facts["tensorrt"] and facts["batch_range"][0] <= 8 <= facts["batch_range"][1]
    np.testing.assert_allclose(engine(rgb, audio), onnx(rgb, audio), atol=1e-2)


@cuda
def test_tensorrt_int8_engine_from_the_qdq_artifact(checkpoint, tmp_path):
    """The INT8 artifact (INT32 bias DQ on disk) builds a strongly typed engine that agrees with ONNX Runtime."""
    pytest.importorskip("tensorrt")
    data = checkpoint.parent.parent / "data"
    out = tmp_path / "trt8"
    result = subprocess.run([sys.executable, "-m", "avf", "compress", str(checkpoint), "--int8", "--backend", "tensorrt",
                             "--calib", str(data / "train*.tfrecord"), "--eval", str(data / "validate*.tfrecord"),
                             "--min-retention", "0", "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["tensorrt_compatible"] and report["tensorrt"]["built"], report["tensorrt"]
    assert report["tensorrt"]["builder"]["typing"].startswith("strong")
    engine, _ = load_target(out, "tensorrt")
    onnx, _ = load_target(out, "onnxruntime")
    rgb, audio = _inputs(8)
    np.testing.assert_allclose(engine(rgb, audio), onnx(rgb, audio), atol=3e-2)
