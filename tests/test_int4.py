"""4-bit weight-only artifacts (ONNX Runtime MatMulNBits): the packing is the layout ONNX Runtime reads,
and avf-compress --int4 writes an artifact that runs and passes the gate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from avf.compress.quantize import pack_int4, quantize_int4_weight_only, unpack_int4  # noqa: E402


def gemm_model(path, weight, bias):
    from onnx import TensorProto, helper, numpy_helper

    n, k = weight.shape
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("k", [64, 100])  # 100: a last block padded with zeros
def test_onnxruntime_computes_with_exactly_the_packed_weights(tmp_path, k):
    rng = np.random.default_rng(k)
    weight, bias = rng.normal(0, 0.3, (24, k)).astype(np.float32), rng.normal(0, 0.1, 24).astype(np.float32)
    gemm_model(tmp_path / "fp32.onnx", weight, bias)
    quantize_int4_weight_only(tmp_path / "fp32.onnx", tmp_path / "int4.onnx", accuracy_level=0)
    proto = onnx.load(str(tmp_path / "int4.onnx"))
    assert [n.op_type for n in proto.graph.node] == ["MatMulNBits", "Add"]
    x = rng.normal(0, 1, (5, k)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "int4.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    packed, scales = pack_int4(weight)
    dequantized = unpack_int4(packed, scales, k)
    np.testing.assert_allclose(got, x @ dequantized.T + bias, atol=1e-4)
    assert np.abs(dequantized - weight).max() <= np.abs(weight).max() / 7 / 2 + 1e-6  # half a step at most
    assert np.abs(got - (x @ weight.T + bias)).max() > 0  # it really is 4-bit


def test_compress_int4_artifact_runs_and_is_gated(tiny_run, tmp_path):
    out = tmp_path / "int4"
    result = subprocess.run([sys.executable, "-m", "avf", "compress", str(tiny_run / "run" / "last.pt"), "--int4",
                             "--min-retention", "0", "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][-1]["precision"] == "int4" and report["retention"]["videos"] > 0
    assert not report["tensorrt_compatible"] and "MatMulNBits" in " ".join(report["tensorrt_check"]["problems"])
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and "Gemm" not in ops


def test_compress_int4_block_and_accuracy_level_reach_the_graph_and_the_report(tiny_run, tmp_path):
    """--int4-block / --int4-accuracy-level: every MatMulNBits node carries them, the report's precision stage
    records them and its method states them; the default build records 32 and 4."""
    from cli_harness import cli

    for out, flags, block, level in ((tmp_path / "b128", ["--int4-block", 128, "--int4-accuracy-level", 1], 128, 1),
                                     (tmp_path / "default", [], 32, 4)):
        code, _, err = cli("compress", tiny_run / "run" / "last.pt", "--int4", *flags, "--min-retention", 0, "-o", out)
        assert code == 0, err
        nodes = [n for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "MatMulNBits"]
        assert nodes and all({a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.items()
                             >= {"block_size": block, "accuracy_level": level}.items() for n in nodes)
        stage = json.loads((out / "report.json").read_text())["stages"][-1]
        assert (stage["block_size"], stage["accuracy_level"]) == (block, level)
        assert f"blocks of {block}, accuracy_level {level}" in stage["method"]
