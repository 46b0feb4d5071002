"""avf-compress --backend torch-tensorrt: one clear error naming the extra where it cannot run; the real
compile (FP16 and INT8), save, load and bench where Torch-TensorRT and a CUDA GPU exist."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from avf.compress.torch_tensorrt_engine import unavailable_reason  # noqa: E402
from cli_harness import avf_process as avf  # noqa: E402

EXTRA = "pip install 'avf[torch-tensorrt]'"
REASON = unavailable_reason()
runs_here = pytest.mark.skipif(REASON is not None, reason=f"Torch-TensorRT cannot run here: {REASON}")


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    """The session's tiny run (its data beside it, in ``../data``)."""
    return tiny_run / "run" / "last.pt"


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # import fails as if not installed
    reason = unavailable_reason()
    assert reason is not None and EXTRA in reason


@pytest.mark.skipif(REASON is None, reason="Torch-TensorRT runs here")
def test_compress_and_bench_fail_with_one_line_naming_the_extra(checkpoint, tmp_path):
    out = tmp_path / "ep"
    result = avf("compress", checkpoint, "--fp16", "--backend", "torch-tensorrt", "-o", out)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "torch-tensorrt" in lines[0]
    assert ("avf[torch-tensorrt]" in lines[0]) or ("CUDA" in lines[0])
    assert not out.exists()
    # An ordinary artifact asked to run on torch-tensorrt: the same kind of line.
    artifact = tmp_path / "fp32"
    assert avf("compress", checkpoint, "-o", artifact).returncode == 0
    bench = avf("bench", artifact, "--backend", "torch-tensorrt", "-o", tmp_path / "b.json")
    assert bench.returncode == 2 and len(bench.stderr.strip().splitlines()) == 1
    assert "torch-tensorrt" in bench.stderr and not (tmp_path / "b.json").exists()


@runs_here
@pytest.mark.parametrize("precision", ["--fp16", "--int8"])
def test_compiled_program_agrees_with_onnxruntime_and_benches(checkpoint, tmp_path, precision):
    data = checkpoint.parent.parent / "data"
    out = tmp_path / precision.strip("-")
    extra = ["--calib", data / "train*.tfrecord", "--eval", data / "validate*.tfrecord", "--min-retention", "0"] \
        if precision == "--int8" else []
    result = avf("compress", checkpoint, precision, "--backend", "torch-tensorrt", "-o", out, *extra)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["tensorrt"]["built"] and report["tensorrt"]["compiler"] == "torch-tensorrt"
    assert "model.ep" in report["files"]
    from avf.deploy.target import load_target

    program, facts = load_target(out, "torch-tensorrt")
    onnx, _ = load_target(out, "onnxruntime")
    rng = np.random.default_rng(0)
    rgb, audio = rng.standard_normal((8, 1024), dtype=np.float32), rng.standard_normal((8, 128), dtype=np.float32)
    np.testing.assert_allclose(program(rgb, audio), onnx(rgb, audio), atol=3e-2)
    bench = avf("bench", out, "--backend", "torch-tensorrt", "--batch", "1,8", "--duration", "0.5", "-o", tmp_path / "b.json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads((tmp_path / "b.json").read_text())["target_facts"]["backend"] == "torch-tensorrt"
