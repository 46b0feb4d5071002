"""avf-compress: folding is exact, pruning keeps the contract, INT8 passes the gate, bad input is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from avf.compress.fold import fold_model  # noqa: E402
from avf.compress.prune import hidden_widths, prune_channels  # noqa: E402
from avf.compress.runtime import OnnxModel  # noqa: E402
from avf.data.synthetic import synthesize  # noqa: E402
from avf.data.tfrecord import TFRecordWriter  # noqa: E402
from avf.data.youtube8m import encode_video_example  # noqa: E402
from avf.models.zoo import MODEL_NAMES, build_model  # noqa: E402
from avf.train.loop import TrainSettings, train  # noqa: E402


@pytest.fixture(scope="module")
def trained(small_run, tmp_path_factory):
    """The session's small Attend-Fusion (its data recorded in the checkpoint), copied with its data into this
    module's own folder: these tests write artifacts beside the checkpoint."""
    source, checkpoint = small_run
    root = tmp_path_factory.mktemp("compress")
    shutil.copytree(source / "data", root / "data")
    shutil.copyfile(checkpoint, root / checkpoint.name)
    return root, root / checkpoint.name


def avf_compress(*args):
    return subprocess.run([sys.executable, "-m", "avf", "compress", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_folding_is_exact_for_every_model(name):
    torch.manual_seed(0)
    model = build_model(name, 50, width=64, attention_width=32, heads=4).eval()
    for p in model.parameters():  # trained-like weights, not just the small default init
        p.data.normal_(0, 0.2)
    rgb, audio = torch.randn(32, 1024), torch.randn(32, 128)
    result = fold_model(model, (rgb, audio))
    with torch.inference_mode():
        reference, folded = model(rgb, audio), result.model(rgb, audio)
    assert (reference - folded).abs().max().item() <= 1e-4 * max(1.0, reference.abs().max().item())
    assert result.params_after <= result.params_before
    if model.uses_attention and name != "attend_fusion_no_attention":
        assert result.params_after < result.params_before
    assert not any(isinstance(m, torch.nn.Dropout) for m in result.model.modules())


def test_folding_removes_over_30_percent_of_attend_fusion_at_paper_size():
    model = build_model("attend_fusion", 3862).eval()
    result = fold_model(model, (torch.randn(8, 1024), torch.randn(8, 128)))
    assert 1 - result.params_after / result.params_before >= 0.30
    assert result.params_after == 35_452_694  # two branches, one 4096->2048 fusion, the classifier


def test_pruning_keeps_inputs_classes_and_multiples_of_eight():
    model = fold_model(build_model("attend_fusion", 40, width=128, heads=4).eval()).model
    pruned = prune_channels(model, 0.5, 1024, 128)
    assert pruned(torch.randn(3, 1024), torch.randn(3, 128)).shape == (3, 40)
    assert all(w % 8 == 0 and w <= 128 for w in hidden_widths(pruned))
    assert sum(p.numel() for p in pruned.parameters()) < 0.6 * sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="between 0 and 1"):
        prune_channels(model, 1.5, 1024, 128)


def test_distilling_from_precomputed_teacher_probabilities_equals_running_the_teacher(trained):
    """avf tune computes the teacher's probabilities once and reuses them for every prune ratio."""
    from avf.compress.prune import distill, teacher_probabilities
    from avf.train.checkpoint import load_checkpoint, model_from_checkpoint
    from avf.train.data import load_training_data

    root, checkpoint = trained
    payload = load_checkpoint(checkpoint)
    teacher = fold_model(model_from_checkpoint(payload, checkpoint).eval()).model
    data = load_training_data(str(root / "data" / "train*.tfrecord"), payload["num_classes"])
    table = teacher_probabilities(teacher, data, batch_size=100)
    assert table.shape == (len(data), payload["num_classes"]) and 0 <= table.min() and table.max() <= 1
    students = [prune_channels(teacher, 0.5, 1024, 128) for _ in range(2)]
    by_teacher = distill(students[0], teacher, data, 2, batch_size=64, lr=1e-3)
    by_table = distill(students[1], teacher, data, 2, batch_size=64, lr=1e-3,
                       soft_targets=lambda indices: torch.from_numpy(table[indices]))
    assert np.allclose(by_teacher, by_table, rtol=1e-4)
    for a, b in zip(students[0].state_dict().values(), students[1].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)


def test_int8_artifact_passes_the_gate_and_keeps_the_contract(trained):
    root, checkpoint = trained
    result = avf_compress(checkpoint, "--int8", "--calib-size", 200)
    assert result.returncode == 0, result.stderr
    artifact = root / "attend_fusion.int8"  # the default name, beside the checkpoint
    report = json.loads((artifact / "report.json").read_text())
    assert report["accepted"] and report["retention"]["ratios"]["gap"] >= 0.99
    assert report["retention"]["reference"]["gap"] > 0.3
    fold = report["stages"][0]
    assert fold["stage"] == "fold" and fold["params_after"] < fold["params_before"] and fold["max_logit_difference"] < 1e-4
    assert report["stages"][-1]["calibration"]["videos"] == 200
    assert report["tensorrt"]["built"] is False and report["tensorrt"]["reason"].startswith("engine not built: ")
    # model.onnx: TensorRT-parsable as shipped; model.cpu.onnx: the INT32-bias form ONNX Runtime's CPU kernels fuse
    assert set(report["files"]) == {"model.onnx", "model.cpu.onnx"} and report["cpu_model"]["file"] == "model.cpu.onnx"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp leftovers
    proto = onnx.load(str(artifact / "model.onnx"))
    assert [i.name for i in proto.graph.input] == ["rgb", "audio"] and proto.graph.output[0].name == "probabilities"
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["model"] == "attend_fusion" and metadata["precision"] == "int8" and metadata["num_classes"] == "24"
    runtime = OnnxModel(artifact / "model.onnx")
    for batch in (1, 7):  # dynamic batch axis
        out = runtime(np.zeros((batch, 1024), np.float32), np.zeros((batch, 128), np.float32))
        assert out.shape == (batch, 24) and ((out >= 0) & (out <= 1)).all()
    assert "GAP" in result.stdout and "accepted" in result.stdout
    # The same again needs --force; with it the artifact is replaced.
    again = avf_compress(checkpoint, "--int8")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert avf_compress(checkpoint, "--int8", "--force", "--calib-size", 64).returncode == 0


def test_int8_with_relative_paths(trained):
    """The calibrator runs in its own working directory; relative checkpoint/output paths must survive it."""
    root, _ = trained
    result = subprocess.run([sys.executable, "-m", "avf", "compress", "attend_fusion.pt", "--int8", "--calib-size", "64",
                             "-o", "relative.int8"], capture_output=True, text=True, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr
    assert (root / "relative.int8" / "model.onnx").is_file()


@pytest.mark.parametrize("flag", ["--fp16", "--int8-dynamic"])
def test_other_precisions(trained, tmp_path, flag):
    _, checkpoint = trained
    out = tmp_path / "artifact"
    result = avf_compress(checkpoint, flag, "-o", out, "--min-retention", 0.98)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][-1]["precision"] == flag.removeprefix("--") and report["accepted"]


def test_pruning_with_distillation_and_the_rejection_exit_code(trained, tmp_path):
    _, checkpoint = trained
    out = tmp_path / "pruned"
    result = avf_compress(checkpoint, "--prune", 0.5, "--finetune-epochs", 2, "-o", out, "--min-retention", 0.5)
    assert result.returncode == 0, result.stderr
    stage = json.loads((out / "report.json").read_text())["stages"][1]
    assert stage["stage"] == "prune" and stage["params_after"] < stage["params_before"]
    assert len(stage["finetune_losses"]) == 2 and all(w % 8 == 0 for w in stage["hidden_widths"])
    # Pruning 75% with no recovery cannot keep 99.9% of GAP: rejected, exit 3, report says so.
    harsh = tmp_path / "harsh"
    result = avf_compress(checkpoint, "--prune", 0.75, "--finetune-epochs", 0, "-o", harsh, "--min-retention", 0.999)
    assert result.returncode == 3, result.stderr
    report = json.loads((harsh / "report.json").read_text())
    assert report["accepted"] is False and "rejected" in result.stderr


def test_bad_input_is_refused_with_one_line(trained, tmp_path):
    root, checkpoint = trained
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    for args, needle in [
        ((tmp_path / "missing.pt", "--int8"), "not found"),
        ((junk, "--int8"), "junk.pt"),
        ((checkpoint, "--backend", "tensorrt", "-o", tmp_path / "trt"), "engine not built"),
        ((checkpoint, "--int8", "--fp16", "-o", tmp_path / "two"), "choose one precision"),
        ((checkpoint, "--prune", 2, "-o", tmp_path / "p"), "--prune"),
    ]:
        result = avf_compress(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    # Calibration data with another class count, and with the wrong feature size.
    synthesize(tmp_path / "other", videos=40, classes=7, seed=2)
    result = avf_compress(checkpoint, "--int8", "--calib", tmp_path / "other", "-o", tmp_path / "a")
    assert result.returncode == 2 and "other" in result.stderr and "classes" in result.stderr, result.stderr
    wrong = tmp_path / "wrong" / "calib0000.tfrecord"
    with TFRecordWriter(wrong) as writer:
        for i in range(8):
            writer.write(encode_video_example(f"v{i}", [1], np.zeros(512, np.float32), np.zeros(128, np.float32)))
    result = avf_compress(checkpoint, "--int8", "--calib", wrong, "-o", tmp_path / "b")
    assert result.returncode == 2 and "wrong" in result.stderr and "1024" in result.stderr, result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "trt").exists()


def test_int8_without_evaluation_data_is_refused(trained, tmp_path):
    root, _ = trained
    run = tmp_path / "noval"
    train(TrainSettings(model="attend_fusion", train=str(root / "data" / "train*.tfrecord"), out=str(run), epochs=1,
                        batch_size=64, width=32, attention_width=32, heads=4))
    result = avf_compress(run / "best.pt", "--int8")
    assert result.returncode == 2 and "INT8 needs calibration and evaluation data: pass --calib/--eval" in result.stderr
    assert not (run / "best.int8").exists()


def test_static_int8_hands_onnx_runtime_a_file_and_leaves_the_model_untouched(tmp_path):
    """ONNX Runtime 1.30's quant_pre_process, given a ModelProto, moved its weights out and left the proto pointing at
    a "foo.bin" that does not exist (every static INT8 build of a 37M-parameter model failed on the GPU machine)."""
    import numpy as np

    from avf.compress.export import export_model
    from avf.compress.quantize import BuildInputs, to_int8_static
    from avf.models import build_model

    model = build_model("fc_early_fusion", num_classes=6, width=32).eval()
    proto = export_model(model, 1024, 128, {"model": "fc_early_fusion"})
    before = proto.SerializeToString()
    rng = np.random.default_rng(0)
    calibration = [(rng.standard_normal((8, 1024)).astype(np.float32), rng.standard_normal((8, 128)).astype(np.float32))
                   for _ in range(2)]
    (tmp_path / "work").mkdir()
    quantized = to_int8_static(proto, BuildInputs(tmp_path / "work", calibration=calibration))
    assert proto.SerializeToString() == before
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in quantized.graph.node}
