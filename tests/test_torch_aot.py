"""``--backend torch-aot``: the compressed model exported and compiled by AOTInductor into model.pt2, built,
scored by the retention gate, benched, verified, rebuilt with ``avf-deploy build`` and deployed (manifest),
on the CPU, with real compilations (a C++ compiler is needed; each takes about ten seconds).

The CUDA package (and its CUDA graphs) needs a GPU: ``test_cuda_package`` runs where one is present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_harness import cli, snapshot

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from avf.compress import torch_aot  # noqa: E402

NO_COMPILER = torch_aot.unavailable_reason("cpu")
pytestmark = pytest.mark.skipif(NO_COMPILER is not None, reason=str(NO_COMPILER))


@pytest.fixture(scope="module")
def pruned_package(tiny_run, tmp_path_factory) -> Path:
    """fold + prune 0.5 (no fine-tune: the reshaped-weights path) compiled for the CPU, gate off."""
    artifact = tmp_path_factory.mktemp("aot") / "tiny.aot"
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "--backend", "torch-aot", "--prune", 0.5,
                       "--finetune-epochs", 0, "--min-retention", 0, "-o", artifact)
    assert code == 0, err
    return artifact


def _report(artifact: Path) -> dict:
    return json.loads((artifact / "report.json").read_text())


def test_compress_writes_the_package_and_the_weights_and_gates_the_package(pruned_package):
    report = _report(pruned_package)
    assert {"model.onnx", "model.pt", "model.pt2"} <= set(report["files"])
    build = report["torch_aot"]
    assert build["built"] and build["device"] == "cpu" and build["precision"] == "fp32"
    assert build["file"] == "model.pt2" and build["weights"] == "model.pt" and build["torch"] == torch.__version__
    assert report["retention"]["runtime"].startswith("torch-aot model.pt2 on cpu")
    assert report["tensorrt"]["reason"].startswith("engine not built: --backend torch-aot")


def test_package_computes_what_the_onnx_model_computes(pruned_package):
    from avf.compress.runtime import OnnxModel
    from avf.runtime.torch_aot_program import TorchAotRunner

    report = _report(pruned_package)
    dims = {name: shape[1] for name, shape in report["io"]["inputs"].items()}
    package = TorchAotRunner(pruned_package / "model.pt2", "cpu", dims, report["num_classes"], "fp32")
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):  # one package, any batch
        rgb = rng.standard_normal((batch, dims["rgb"]), dtype=np.float32)
        audio = rng.standard_normal((batch, dims["audio"]), dtype=np.float32)
        np.testing.assert_allclose(package.run(rgb, audio), OnnxModel(pruned_package / "model.onnx").run(rgb, audio),
                                   atol=2e-6)


def test_weights_rebuild_the_pruned_model_exactly(pruned_package):
    from avf.compress.runtime import OnnxModel

    model = torch_aot.load_weights(pruned_package / "model.pt")
    rgb, audio = torch.randn(5, model.rgb_dim), torch.randn(5, model.audio_dim)
    with torch.no_grad():
        ours = torch.sigmoid(model(rgb, audio)).numpy()
    np.testing.assert_allclose(ours, OnnxModel(pruned_package / "model.onnx").run(rgb.numpy(), audio.numpy()), atol=2e-6)


def test_bench_verify_and_manifest(pruned_package, tmp_path):
    artifact = tmp_path / "a"
    shutil.copytree(pruned_package, artifact)
    bench = artifact / "bench.json"
    code, _, err = cli("bench", artifact, "--backend", "torch-aot", "--batch", "1,4", "--duration", 0.2, "-o", bench)
    assert code == 0, err
    record = json.loads(bench.read_text())
    assert record["target_facts"]["backend"] == "torch-aot" and record["target_facts"]["device"] == "cpu"
    assert record["scenarios"]["single-stream"]["p50_ms"] > 0
    code, out, err = cli("deploy", "manifest", artifact, "-p", "x86-cpu", "--bench", bench, "-o", artifact / "manifest.json")
    assert code == 0, err
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["backend"] == "torch-aot" and manifest["decision"]["deployable"]
    assert {"model.pt", "model.pt2"} <= {entry["name"] for entry in manifest["files"]}
    assert cli("deploy", "verify", artifact / "manifest.json")[0] == 0
    (artifact / "model.pt2").write_bytes((artifact / "model.pt2").read_bytes()[:-10] + b"0123456789")
    code, _, err = cli("bench", artifact, "--backend", "torch-aot", "--duration", 0.1, "-o", tmp_path / "again.json")
    assert code == 2 and "model.pt2" in err and "sha256" in err, err


def test_deploy_build_compiles_the_package_again_from_the_weights(pruned_package, tmp_path):
    artifact = tmp_path / "a"
    shutil.copytree(pruned_package, artifact)
    (artifact / "model.pt2").unlink()  # copied to its device without the package compiled elsewhere
    code, _, err = cli("bench", artifact, "--backend", "torch-aot", "--duration", 0.1, "-o", tmp_path / "none.json")
    assert code == 2 and "model.pt2" in err  # everything else still refuses the incomplete artifact
    code, out, err = cli("deploy", "build", artifact, "--backend", "torch-aot", "--device", "cpu")
    assert code == 0, err
    assert "model.pt2: fp32 for cpu" in out
    rebuilt = _report(artifact)
    assert rebuilt["torch_aot"]["built_by"] == "avf-deploy build" and "model.pt2" in rebuilt["files"]
    code, _, err = cli("bench", artifact, "--backend", "torch-aot", "--batch", "1", "--duration", 0.1, "-o", tmp_path / "b.json")
    assert code == 0, err
    assert not [p.name for p in artifact.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.02), ("int8-dynamic", 0.02), ("fp8", 0.05)])
def test_other_precisions_compile_and_keep_the_model(tiny_run, tiny_artifact, tmp_path, precision, tolerance):
    artifact = tmp_path / precision
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "--backend", "torch-aot", f"--{precision}",
                       "--min-retention", 0, "-o", artifact)
    assert code == 0, err
    report = _report(artifact)
    assert report["torch_aot"]["precision"] == precision and report["retention"]["ratios"]["gap"] > 0
    from avf.compress.runtime import OnnxModel
    from avf.runtime.torch_aot_program import TorchAotRunner

    dims = {name: shape[1] for name, shape in report["io"]["inputs"].items()}
    rng = np.random.default_rng(1)
    rgb, audio = (rng.standard_normal((16, dims[name]), dtype=np.float32) for name in ("rgb", "audio"))
    package = TorchAotRunner(artifact / "model.pt2", "cpu", dims, report["num_classes"], precision)
    fp32 = OnnxModel(artifact / "model.onnx" if precision in ("bf16", "fp8") else tiny_run / "run" / "best.fp32" / "model.onnx")
    assert np.abs(package.run(rgb, audio) - fp32.run(rgb, audio)).max() < tolerance
    if precision in ("bf16", "fp8"):  # ONNX Runtime has neither kernel: the portable model.onnx stays FP32, and says so
        from avf.compress.export import read_metadata

        assert read_metadata(artifact / "model.onnx")["precision"] == "fp32"
    if precision == "fp8":  # compiled again from model.pt on the device: the very package the gate scored
        scored = package.run(rgb, audio)
        del package
        (artifact / "model.pt2").unlink()
        code, out, err = cli("deploy", "build", artifact, "--backend", "torch-aot", "--device", "cpu")
        assert code == 0 and "model.pt2: fp8 for cpu" in out, err
        rebuilt = TorchAotRunner(artifact / "model.pt2", "cpu", dims, report["num_classes"], precision)
        assert np.array_equal(rebuilt.run(rgb, audio), scored)


@pytest.mark.parametrize("args, says", [
    (["--backend", "torch-aot", "--int8"], "--int8 is built by --backend onnxruntime or tensorrt or torch-tensorrt only"),
    (["--backend", "torch-aot", "--int4"], "--backend torch-aot compiles"),
    (["--bf16"], "--bf16 is built by --backend torch-aot only"),
    (["--device", "cpu"], "--device applies to --backend torch-aot only"),
])
def test_refusals_touch_nothing(tiny_run, tmp_path, args, says):
    before = snapshot(tmp_path)
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", *args, "--calib", tiny_run / "data" / "train*.tfrecord",
                       "-o", tmp_path / "out")
    assert code == 2 and says in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_package_without_a_gpu_is_one_error(tiny_run, pruned_package, tmp_path):
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "--backend", "torch-aot", "--device", "cuda",
                       "-o", tmp_path / "out")
    assert code == 2 and "no CUDA GPU" in err
    assert not (tmp_path / "out").exists()
    code, _, err = cli("bench", pruned_package, "--backend", "torch-aot", "--device", "cuda", "--duration", 0.1,
                       "-o", tmp_path / "b.json")
    assert code == 2 and "compiled for cpu" in err
    code, _, err = cli("deploy", "build", pruned_package, "--backend", "torch-aot", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err


def test_onnx_artifact_has_no_package(tiny_artifact, tmp_path):
    code, _, err = cli("bench", tiny_artifact, "--backend", "torch-aot", "--duration", 0.1, "-o", tmp_path / "b.json")
    assert code == 2 and "no compiled PyTorch package" in err
    code, _, err = cli("deploy", "build", tiny_artifact, "--backend", "torch-aot", "--device", "cpu")
    assert code == 2 and "no compressed model (model.pt)" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_package(tiny_run, tmp_path):
    artifact = tmp_path / "cuda"
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "--backend", "torch-aot", "--device", "cuda", "--fp16",
                       "--min-retention", 0, "-o", artifact)
    assert code == 0, err
    assert _report(artifact)["torch_aot"]["device"] == "cuda"
    for graphs in ([], ["--cuda-graphs"]):
        code, _, err = cli("bench", artifact, "--backend", "torch-aot", "--device", "cuda", *graphs, "--batch", "1,8",
                           "--duration", 0.2)
        assert code == 0, err


def test_fp8_linear_is_fp8_at_any_width_and_close_to_the_float_layer():
    """FP8 (torch._scaled_mm) at widths that are not multiples of 16 (padded with zeros), on 3-D inputs too; every
    matrix product of the fp8 engine is one, everything else bfloat16."""
    if torch_aot.fp8_unavailable_reason("cpu"):
        pytest.skip(torch_aot.fp8_unavailable_reason("cpu"))
    from torch import nn

    torch.manual_seed(0)
    linear = nn.Linear(40, 24)
    fp8 = torch_aot.Fp8Linear(linear)
    assert fp8.weight.dtype == torch.float8_e4m3fn and tuple(fp8.weight.shape) == (32, 48)
    x = torch.randn(3, 5, 40)
    out, reference = fp8(x), linear(x)
    assert out.shape == (3, 5, 24) and out.dtype == torch.bfloat16
    assert ((out.float() - reference).abs().max() / reference.abs().max()) < 0.08
    assert torch.equal(fp8(torch.zeros(2, 40)).float(), linear.bias.detach().bfloat16().float().expand(2, 24))
    from avf.models import build_model

    engine = torch_aot.engine_module(build_model("attend_fusion", rgb_dim=64, audio_dim=16, num_classes=24,
                                                 width=32, attention_width=32, heads=2), "fp8", "cpu")
    modules = list(engine.modules())
    assert not any(type(m) is nn.Linear for m in modules) and any(isinstance(m, torch_aot.Fp8Linear) for m in modules)
    assert {p.dtype for m in modules if not isinstance(m, torch_aot.Fp8Linear) for p in m.parameters(recurse=False)} \
        <= {torch.bfloat16}
