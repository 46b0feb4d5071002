"""TensorRT readiness checked on the CPU: the compatibility check, the graph TensorRT gets, the
engine builder's settings, the backend choice in avf-compress, and INT8 calibration.

Nothing here runs TensorRT. Where TensorRT's API is involved, a fake module stands in for it
only to check avf's own logic (which flags it sets, which it never sets); real engine builds
run in tests/test_backends.py where a GPU and TensorRT exist.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from avf.compress import quantize  # noqa: E402
from avf.compress.export import export_onnx  # noqa: E402
from avf.compress.fold import fold_model  # noqa: E402
from avf.compress.tensorrt_check import check_model, check_tensorrt_compatibility, tensorrt_graph  # noqa: E402
from avf.models.zoo import MODEL_NAMES, build_model  # noqa: E402

CLASSES = 12


def _calibration(count=40, seed=0):
    generator = np.random.default_rng(seed)
    rgb = generator.standard_normal((count, 1024), dtype=np.float32)
    audio = generator.standard_normal((count, 128), dtype=np.float32)
    return [(rgb[:25], audio[:25]), (rgb[25:], audio[25:])]  # ragged on purpose: 25 + 15


def _artifacts(name: str, root: Path) -> dict[str, Path]:
    """Every precision of one registry model, made by the functions avf-compress uses."""
    torch.manual_seed(0)
    model = build_model(name, CLASSES, width=32, attention_width=16, heads=2).eval()
    model = fold_model(model, (torch.randn(16, 1024), torch.randn(16, 128))).model
    fp32 = root / f"{name}.fp32.onnx"
    export_onnx(model, fp32, 1024, 128, {"model": name, "precision": "fp32"})
    paths = {"fp32": fp32, "fp16": root / f"{name}.fp16.onnx", "int8": root / f"{name}.int8.onnx",
             "int8-dynamic": root / f"{name}.int8-dynamic.onnx"}
    quantize.convert_fp16(fp32, paths["fp16"])
    quantize.quantize_int8_static(fp32, paths["int8"], iter(_calibration()), "percentile")
    quantize.quantize_int8_dynamic(fp32, paths["int8-dynamic"])
    return paths


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_precision_of_every_registry_model(name, tmp_path):
    """The ONNX avf-compress ships (quantize.shipped_models, what _write_model writes as model.onnx) passes the
    TensorRT check as shipped, for every registry model and precision TensorRT builds; nothing is rewritten at check time."""
    paths = _artifacts(name, tmp_path)
    for precision in ("fp32", "fp16", "int8"):
        shipped = quantize.shipped_models(onnx.load(str(paths[precision])))
        result = check_tensorrt_compatibility(shipped.model)
        assert result["tensorrt_compatible"], (precision, result["problems"])
        assert "rewrites_for_tensorrt" not in result and "as shipped" in result["checked"]
        # fp32/fp16 ship one file; INT8 ships model.cpu.onnx (the builder's INT32-bias graph) beside it
        assert (shipped.cpu_model is not None) == (precision == "int8"), precision
    # The INT8 builder's own graph (model.cpu.onnx) is exactly what TensorRT refuses: INT32 DequantizeLinear.
    raw = check_tensorrt_compatibility(paths["int8"])
    assert not raw["tensorrt_compatible"]
    assert any("INT32 DequantizeLinear" in p for p in raw["problems"]), raw["problems"]
    # Weights-only INT8 is an ONNX Runtime CPU format: the check names what TensorRT lacks.
    dynamic = check_tensorrt_compatibility(paths["int8-dynamic"])
    assert not dynamic["tensorrt_compatible"]
    assert any("DynamicQuantizeLinear" in p or "MatMulInteger" in p for p in dynamic["problems"])


def test_tensorrt_graph_folds_int32_bias_exactly(tmp_path):
    paths = _artifacts("attend_fusion", tmp_path)
    original = onnx.load(str(paths["int8"]))
    # As ONNX Runtime writes it, the INT8 artifact has INT32 bias DQ nodes that TensorRT refuses...
    problems = check_model(original)
    assert any("INT32 DequantizeLinear" in p for p in problems), problems
    folded, rewrites = tensorrt_graph(original)
    assert check_model(folded) == [] and rewrites
    # ...and the folded graph computes exactly what the artifact's Q/DQ graph computes.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    (tmp_path / "folded.onnx").write_bytes(folded.SerializeToString())
    a = ort.InferenceSession(str(paths["int8"]), options, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(tmp_path / "folded.onnx"), options, providers=["CPUExecutionProvider"])
    feeds = {"rgb": np.random.default_rng(1).standard_normal((5, 1024), dtype=np.float32),
             "audio": np.random.default_rng(2).standard_normal((5, 128), dtype=np.float32)}
    np.testing.assert_array_equal(a.run(None, feeds)[0], b.run(None, feeds)[0])
    # The artifact on disk keeps the INT32 bias (ONNX Runtime's fused QGemm needs it).
    assert any(i.data_type == TensorProto.INT32 for i in onnx.load(str(paths["int8"])).graph.initializer)


def _tiny(nodes, initializers, opset=17, batch="batch", domain_opsets=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, 4])], initializers)
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in domain_opsets)]
    return helper.make_model(graph, opset_imports=opsets)


def _qdq(zero=0, zero_type=TensorProto.INT8, scale=0.1):
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s")]
    q_inputs = ["rgb", "s"]
    if zero_type is not None:
        inits.append(helper.make_tensor("z", zero_type, [], [zero]))
        q_inputs.append("z")
    return ([helper.make_node("QuantizeLinear", q_inputs, ["q"]),
             helper.make_node("DequantizeLinear", ["q", *q_inputs[1:]], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["probabilities"])], inits)


@pytest.mark.parametrize("case,needle", [
    ("good", None),
    ("zero_point", "zero point is not zero"),
    ("uint8", "quantizes to UINT8"),
    ("no_zero_point", "quantizes to UINT8"),
    ("bad_scale", "scale is not finite and positive"),
    ("opset", "opset 25"),
    ("static_batch", "batch axis fixed"),
    ("domain", "domain 'com.microsoft'"),
    ("unsupported", "operator not supported"),
])
def test_the_check_names_each_problem(case, needle):
    nodes, inits = _qdq()
    model = _tiny(nodes, inits)
    if case == "zero_point":
        model = _tiny(*_qdq(zero=3))
    elif case == "uint8":
        model = _tiny(*_qdq(zero_type=TensorProto.UINT8))
    elif case == "no_zero_point":
        model = _tiny(*_qdq(zero_type=None))
    elif case == "bad_scale":
        model = _tiny(*_qdq(scale=0.0))
    elif case == "opset":
        model = _tiny(nodes, inits, opset=25)
        model.ir_version = 11
    elif case == "static_batch":
        model = _tiny(nodes, inits, batch=8)
    elif case == "domain":
        model = _tiny([helper.make_node("Gelu", ["rgb"], ["probabilities"], domain="com.microsoft")], [],
                      domain_opsets=[("com.microsoft", 1)])
    elif case == "unsupported":
        model = _tiny([helper.make_node("Hardmax", ["rgb"], ["h"]), helper.make_node("Det", ["h"], ["d"]),
                       helper.make_node("Expand", ["rgb", "shape"], ["probabilities"])],
                      [numpy_helper.from_array(np.array([1, 4], np.int64), "shape")])
    problems = check_model(model) if case not in ("opset", "domain") else _unchecked(model)
    if needle is None:
        assert problems == []
    else:
        assert any(needle in p for p in problems), problems


def _unchecked(model):
    """check_model minus onnx.checker (which knows neither opset 25 nor contrib ops in this onnx)."""
    import avf.compress.tensorrt_check as check

    real = onnx.checker.check_model, onnx.shape_inference.infer_shapes
    try:
        onnx.checker.check_model = lambda m: None
        onnx.shape_inference.infer_shapes = lambda m, **_: m
        return check.check_model(model)
    finally:
        onnx.checker.check_model, onnx.shape_inference.infer_shapes = real


# ----------------------------------------------------------------------------- engine builder settings


class _Flags:
    def __init__(self, names):
        for i, name in enumerate(names):
            setattr(self, name, f"flag:{name}")


class _Config:
    def __init__(self):
        self.set, self.cleared, self.pool = [], [], None

    def set_flag(self, flag):
        self.set.append(flag)

    def clear_flag(self, flag):
        self.cleared.append(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pool = (pool, size)


def _fake_trt(version, flags):
    return types.SimpleNamespace(
        __version__=version, BuilderFlag=_Flags(flags),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"))


@pytest.mark.parametrize("version,flags", [
    ("10.13.0", ["FP16", "INT8", "TF32", "BF16"]),  # 10.x: precision flags exist but must not be used
    ("11.1.0", ["TF32", "DEBUG"]),                  # 11.x: FP16/INT8 removed (fake: whatever remains)
    ("11.4.0", ["DEBUG"]),                          # should TF32 go too, nothing breaks
])
def test_engine_builds_strongly_typed_and_clears_tf32(version, flags):
    from avf.compress.tensorrt_engine import configure, network_flags

    trt = _fake_trt(version, flags)
    assert network_flags(trt) == 1 << 1  # STRONGLY_TYPED
    config = _Config()
    settings = configure(config, trt)
    assert config.set == []  # no FP16/INT8/BF16: precision comes from the graph
    assert config.cleared == (["flag:TF32"] if "TF32" in flags else [])
    assert settings["tf32"] == ("cleared" if "TF32" in flags else "no TF32 flag in this TensorRT")
    assert config.pool == ("workspace", 2 << 30)


def test_profile_shapes_cover_the_batch_range_and_refuse_other_dynamic_axes():
    from avf.compress.tensorrt_engine import profile_shapes

    def network(*shapes):
        inputs = [types.SimpleNamespace(name=n, shape=s) for n, s in shapes]
        return types.SimpleNamespace(num_inputs=len(inputs), get_input=inputs.__getitem__)

    shapes = profile_shapes(network(("rgb", (-1, 1024)), ("audio", (-1, 128))), 1, 8, 64)
    assert shapes == {"rgb": ((1, 1024), (8, 1024), (64, 1024)), "audio": ((1, 128), (8, 128), (64, 128))}
    with pytest.raises(RuntimeError, match="dynamic axis besides the batch"):
        profile_shapes(network(("rgb", (-1, -1))), 1, 8, 64)


@pytest.mark.parametrize("version,needle", [("9.3.0", "TensorRT 10.x or 11.x"), ("12.0.0", "TensorRT 10.x or 11.x"),
                                            ("10.9.0", None), ("11.2.0", None)])
def test_unavailable_reason_names_unsupported_tensorrt(monkeypatch, version, needle):
    from avf.compress.tensorrt_engine import unavailable_reason

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = unavailable_reason()
    assert needle in reason if needle else reason == "no CUDA GPU is visible"


# ----------------------------------------------------------------------------- avf-compress


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """The issue's reproduction: 400 synthetic videos, 30 classes, two small models, 3 epochs."""
    from avf.data.synthetic import synthesize
    from avf.train.loop import TrainSettings, train

    root = tmp_path_factory.mktemp("calib")
    synthesize(root / "d", videos=400, classes=30, seed=7)
    runs = {}
    for name, extra in (("fc_early_fusion", {}), ("attend_fusion", {"attention_width": 64, "heads": 2})):
        train(TrainSettings(model=name, train=str(root / "d" / "train*.tfrecord"), val=str(root / "d" / "validate*.tfrecord"),
                            out=str(root / name), epochs=3, batch_size=64, width=128, seed=0, **extra))
        runs[name] = root / name / "best.pt"
    return root, runs


def test_compress_builds_an_engine_only_with_backend_tensorrt(small_runs, monkeypatch, tmp_path):
    """TensorRT 'importable with a GPU' (faked) must not make a default compress build an engine."""
    from avf.compress import pipeline

    calls = []

    def fake_build(artifact, engine, precision):
        calls.append(precision)
        return {"built": True, "fake": "stand-in for the builder; checks only that it is called"}

    monkeypatch.setattr(pipeline, "unavailable_reason", lambda: None)
    monkeypatch.setattr(pipeline, "build_engine", fake_build)
    _, runs = small_runs
    report = pipeline.compress(pipeline.CompressOptions(checkpoint=runs["fc_early_fusion"], out=tmp_path / "a",
                                                        precision="fp16", min_retention=0.0))
    assert calls == [] and report["tensorrt"]["built"] is False and "--backend" in report["tensorrt"]["reason"]
    assert report["tensorrt_compatible"] is True and report["tensorrt_check"]["problems"] == []
    saved = json.loads((tmp_path / "a" / "report.json").read_text())
    assert saved["tensorrt_compatible"] is True
    report = pipeline.compress(pipeline.CompressOptions(checkpoint=runs["fc_early_fusion"], out=tmp_path / "b",
                                                        precision="fp16", backend="tensorrt", min_retention=0.0))
    assert calls == ["fp16"] and report["tensorrt"]["built"] is True
    # An artifact TensorRT cannot parse is not handed to the builder; the report says why.
    report = pipeline.compress(pipeline.CompressOptions(checkpoint=runs["fc_early_fusion"], out=tmp_path / "c",
                                                        precision="int8-dynamic", backend="tensorrt", min_retention=0.0))
    assert calls == ["fp16"] and report["tensorrt_compatible"] is False and report["tensorrt"]["built"] is False


@pytest.mark.parametrize("model", ["fc_early_fusion", "attend_fusion"])
@pytest.mark.parametrize("method", ["percentile", "entropy", "minmax"])
def test_every_calibration_method_on_small_models_and_data(small_runs, tmp_path, model, method):
    from avf.compress import pipeline

    _, runs = small_runs
    for size in (1024, 97):  # all ~320 training videos (256 + 64 used to crash), and a prime count
        report = pipeline.compress(pipeline.CompressOptions(
            checkpoint=runs[model], out=tmp_path / f"{size}", precision="int8", calib_method=method, calib_size=size,
            min_retention=0.0))
        stage = report["stages"][-1]
        assert stage["calibration"]["method"] == method and stage["calibration"]["videos"] == min(size, 320)
        assert report["tensorrt_compatible"], report["tensorrt_check"]["problems"]
        # model.onnx (TensorRT form) and model.cpu.onnx (INT32 bias, ONNX Runtime CPU) both listed and hashed
        assert {"model.onnx", "model.cpu.onnx"} <= set(report.files) and report.cpu_model_name == "model.cpu.onnx"
        assert report.cpu_model.max_probability_difference < 1e-4
        assert check_tensorrt_compatibility(tmp_path / f"{size}" / "model.onnx")["tensorrt_compatible"]
        assert report.retention.runtime.endswith("(model.cpu.onnx)")


def test_equal_calibration_batches():
    assert quantize.equal_batch_size(320) == 160 and quantize.equal_batch_size(97) == 97
    assert quantize.equal_batch_size(1021) == 1 and quantize.equal_batch_size(512) == 256
    batches = list(quantize.equal_batches(iter(_calibration(40))))
    assert [len(b[0]) for b in batches] == [40] and batches[0][1].shape == (40, 128)
