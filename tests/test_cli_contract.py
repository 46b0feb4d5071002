"""The CLI contract under misuse: every command, bad values, missing, unwritable and existing outputs.

Each case runs the real command (in-process, through the same ``run`` the console scripts use)
and asserts the contract: the expected exit code, exactly one ``error:`` line on stderr, no
traceback, and not one file created, changed or removed anywhere under the working folder.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from cli_harness import cli, snapshot, working_in  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, a store, a small trained checkpoint, an accepted artifact, its bench and manifest, a profile."""
    root = tmp_path_factory.mktemp("contract")
    with working_in(root):
        assert cli("data", "synth", "data", "--videos", 200, "--classes", 12, "--seed", 3)[0] == 0
        assert cli("data", "synth", "frames", "--videos", 20, "--classes", 12, "--level", "frame", "--seed", 3)[0] == 0
        assert cli("data", "convert", "frames/validate*.tfrecord", "frame_store")[0] == 0
        assert cli("data", "synth", "data7", "--videos", 20, "--classes", 7, "--seed", 3)[0] == 0  # another class count
        code, _, err = cli("train", "-m", "attend_fusion", "--train", "data/train*.tfrecord", "--val",
                           "data/validate*.tfrecord", "-o", "run", "--epochs", 1, "--width", 16,
                           "--attention-width", 16, "--heads", 2, "--threads", 1)
        assert code == 0, err
        code, _, err = cli("compress", "run/best.pt", "-o", "run/best.fp32")
        assert code == 0, err
        assert cli("bench", "run/best.fp32", "--batch", "1", "--duration", 0.05, "-o", "bench.json")[0] == 0
        assert cli("bench", "run/best.pt", "--batch", "1", "--duration", 0.05, "-o", "bench_ckpt.json")[0] == 0
        code, _, err = cli("deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "--bench", "bench.json",
                           "-o", "manifest.json")
        assert code in (0, 3), err
        code, _, err = cli("deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "-o", "check.json")
        assert code == 0, err
        check = json.loads(Path("check.json").read_text())
        Path("check_other_model.json").write_text(json.dumps({**check, "onnx_sha256": "0" * 64}))
        Path("check_bad_field.json").write_text(json.dumps({**check, "retention": {**check["retention"], "gap": "high"}}))
        Path("afile").write_text("not a folder\n")
        Path("foreign").mkdir()
        (Path("foreign") / "precious.txt").write_text("the user's own\n")
        shutil.copytree("run/best.fp32", "corrupt_report")
        (Path("corrupt_report") / "report.json").write_text("{ not json")
        shutil.copytree("run/best.fp32", "no_onnx")
        (Path("no_onnx") / "model.onnx").unlink()
        shutil.copytree("run/best.fp32", "rejected")
        report = json.loads((Path("rejected") / "report.json").read_text())
        report.update(accepted=False, reason="GAP retention 0.5 < 0.99")
        (Path("rejected") / "report.json").write_text(json.dumps(report))
        for name, change in (("negative", lambda single: single.update(p99_ms=-1.0)),
                             ("missing_key", lambda single: single.pop("energy")),
                             ("wrong_type", lambda single: single.update(p50_ms="fast"))):
            bench = json.loads(Path("bench.json").read_text())
            change(bench["scenarios"]["single-stream"])
            Path(f"{name}.json").write_text(json.dumps(bench))
        Path("notjson.json").write_text("bench results\n")
        Path("empty.json").write_text("")
        manifest = json.loads(Path("manifest.json").read_text())
        Path("absolute.json").write_text(json.dumps({**manifest, "artifact_dir": "/etc"}))
        Path("dotdot.json").write_text(json.dumps({**manifest, "artifact_dir": "../run/best.fp32"}))
        files = [{**entry, "name": "../../etc/passwd"} for entry in manifest["files"]]
        Path("escape.json").write_text(json.dumps({**manifest, "files": files}))
        Path("latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
        profile = json.loads(cli("profiles", "x86-cpu", "--json")[1])
        Path("inf_tdp.yaml").write_text(json.dumps({**profile, "tdp_w": float("inf")}).replace("Infinity", ".inf"))
        Path("vocab_dup.csv").write_text("Index,Name\n0,a\n0,b\n")
        Path("vocab_gap.csv").write_text("Index,Name\n0,a\n2,c\n")
        Path("vocab_noname.csv").write_text("Index,Label\n0,a\n")
        from hostile_artifacts import with_external_data, with_linked_model, with_model_name

        good = Path("run/best.fp32")
        with_external_data(good, Path("external_data"), location="weights.bin")
        with_linked_model(good, Path("linked_onnx"), Path("outside_model.onnx"))
        with_model_name(good, Path("name_dotdot"), "../../X")  # from deep/repo: would land in this folder
        with_model_name(good, Path("name_absolute"), str(root / "escaped"))
        with_model_name(good, Path("name_quote"), 'a"\nplatform: "x')
        yield root


T = ["train", "-m", "attend_fusion", "--train", "data/train*.tfrecord", "-o", "new_run", "--epochs", "1"]
COMPRESS = ["compress", "run/best.pt"]
BENCH = ["bench", "run/best.fp32", "--duration", "0.05"]
PREDICT = ["predict", "run/best.fp32", "--data", "data/validate*.tfrecord"]

# (case id, arguments, what the one error line must mention)
BAD = [
    # values
    ("train-classes-0", T + ["--classes", "0"], "--classes"),
    ("train-classes-negative", T + ["--classes", "-3"], "--classes"),
    ("train-width-0", T + ["--width", "0"], "--width"),
    ("train-width-negative", T + ["--width", "-8"], "--width"),
    ("train-attention-width-0", T + ["--attention-width", "0"], "--attention-width"),
    ("train-seed-negative", T + ["--seed", "-1"], "--seed"),
    ("train-batch-0", T + ["--batch", "0"], "--batch"),
    ("train-heads-indivisible", T + ["--width", "16", "--attention-width", "12", "--heads", "5"], "divisible"),
    ("train-device-unknown", T + ["--device", "tpu"], "--device"),
    ("train-lr-0", T + ["--lr", "0"], "--lr"),
    ("train-dropout-1", T + ["--dropout", "1"], "--dropout"),
    ("train-model-unknown", ["train", "-m", "nope", "--train", "data", "-o", "new_run"], "unknown model"),
    ("train-width-huge", T + ["--width", "100000000"], "GiB"),
    ("train-out-is-file", T[:-4] + ["-o", "afile"], "afile"),
    ("train-resume-nothing", T + ["--resume"], "no run to resume"),
    ("train-resume-conflict", ["train", "-m", "attend_fusion", "--train", "data/train*.tfrecord", "-o", "run",
                               "--resume", "--lr", "0.5"], "lr"),
    ("train-resume-other-model", ["train", "-m", "fc_audio", "--train", "data/train*.tfrecord", "-o", "run",
                                  "--resume"], "model"),
    ("train-out-holds-run", T[:-4] + ["-o", "run"], "--resume"),
    ("train-out-cwd", T[:-4] + ["-o", ".", "--force"], "holds"),
    ("train-out-parent", T[:-4] + ["-o", "..", "--force"], "holds"),
    ("train-out-holds-data", T[:-4] + ["-o", "data", "--force"], "input"),
    ("train-out-foreign", T[:-4] + ["-o", "foreign"], "not a run folder"),
    ("train-out-foreign-force", T[:-4] + ["-o", "foreign", "--force"], "not a run folder"),
    ("train-out-artifact-force", T[:-4] + ["-o", "run/best.fp32", "--force"], "not a run folder"),
    ("train-force-teacher-in-out", T[:-4] + ["-o", "run", "--force", "--distill-from", "run/best.pt"], "input"),
    ("train-resume-teacher-in-out", ["train", "-m", "attend_fusion", "--train", "data/train*.tfrecord", "-o", "run",
                                     "--resume", "--distill-from", "run/best.pt"], "distill_from"),
    ("train-distill-from-folder", T + ["--distill-from", "data"], "directory"),
    ("train-distill-from-missing", T + ["--distill-from", "nothere.pt"], "not found"),
    ("eval-batch-0", ["eval", "run/best.pt", "--data", "data/validate*.tfrecord", "--batch-size", "0"], "--batch-size"),
    ("models-classes-0", ["models", "--classes", "0"], "--classes"),
    # compress: data loss and odd outputs
    ("compress-out-holds-checkpoint", COMPRESS + ["-o", "run", "--force"], "input"),
    ("compress-out-cwd", COMPRESS + ["-o", ".", "--force"], "input"),
    ("compress-out-foreign", COMPRESS + ["-o", "foreign", "--force"], "not an artifact"),
    ("compress-out-file", COMPRESS + ["-o", "afile", "--force"], "not a directory"),
    ("compress-out-unwritable", COMPRESS + ["-o", "afile/artifact"], "afile"),
    ("compress-out-exists", COMPRESS + ["-o", "run/best.fp32"], "--force"),
    ("compress-prune-impossible", COMPRESS + ["--prune", "0.97", "-o", "pruned"], "--prune"),
    ("compress-prune-above-1", COMPRESS + ["--prune", "1.5", "-o", "pruned"], "--prune"),
    ("compress-two-precisions", COMPRESS + ["--int8", "--fp16", "-o", "x"], "precision"),
    ("compress-int4-block-without-int4", COMPRESS + ["--int4-block", "128", "-o", "x"], "--int4 only"),
    ("compress-int4-level-without-int4", COMPRESS + ["--int8-dynamic", "--int4-accuracy-level", "1", "-o", "x"],
     "--int4 only"),
    ("compress-int4-block-not-allowed", COMPRESS + ["--int4", "--int4-block", "48", "-o", "x"], "--int4-block"),
    ("compress-int4-level-not-allowed", COMPRESS + ["--int4", "--int4-accuracy-level", "2", "-o", "x"],
     "--int4-accuracy-level"),
    ("compress-missing-checkpoint", ["compress", "nothere.pt"], "not found"),
    ("compress-folder-as-checkpoint", ["compress", "data"], "directory"),
    ("compress-artifact-as-checkpoint", ["compress", "run/best.fp32"], "artifact"),
    # bench
    ("bench-out-exists", BENCH + ["-o", "bench.json"], "--force"),
    ("bench-out-folder", BENCH + ["-o", "foreign"], "directory"),
    ("bench-out-unwritable", BENCH + ["-o", "afile/bench.json"], "afile"),
    ("bench-batch-0", BENCH + ["--batch", "0", "-o", "b.json"], "--batch"),
    ("bench-batch-text", BENCH + ["--batch", "one", "-o", "b.json"], "--batch"),
    ("bench-batch-huge", BENCH + ["--batch", "1000000000000", "-o", "b.json"], "GiB"),
    ("bench-device-unknown", BENCH + ["--device", "tpu", "-o", "b.json"], "--device"),
    ("bench-corrupt-report", ["bench", "corrupt_report", "-o", "b.json"], "report"),
    ("bench-threads-0", BENCH + ["--threads", "0", "-o", "b.json"], "--threads"),
    ("bench-loadgen-unknown", BENCH + ["--loadgen", "Bursty", "-o", "b.json"], "--loadgen"),
    ("bench-loadgen-server-no-rate", BENCH + ["--loadgen", "Server", "-o", "b.json"], "--target-qps"),
    ("bench-iterations-0", BENCH + ["--iterations", "0", "-o", "b.json"], "--iterations"),
    ("bench-warmup-negative", BENCH + ["--warmup", "-1", "-o", "b.json"], "--warmup"),
    ("bench-graphs-onnx-artifact", BENCH + ["--cuda-graphs", "-o", "b.json"], "--cuda-graphs"),
    ("compress-precision-conflict", ["compress", "run/best.pt", "--precision", "int8", "--fp16"], "disagree"),
    ("compress-precision-unknown", ["compress", "run/best.pt", "--precision", "int3"], "--precision"),
    ("compress-bf16-onnxruntime", ["compress", "run/best.pt", "--bf16"], "torch-aot"),
    ("compress-device-without-aot", ["compress", "run/best.pt", "--device", "cpu", "-o", "new_art"], "--device"),
    ("build-torch-aot-onnx-artifact", ["deploy", "build", "run/best.fp32", "--backend", "torch-aot", "--device", "cpu"],
     "model.pt"),
    # predict
    ("predict-out-exists", PREDICT + ["-o", "bench.json"], "--force"),
    ("predict-out-folder", PREDICT + ["-o", "foreign"], "directory"),
    ("predict-out-is-input", PREDICT + ["-o", "data/validate0000.tfrecord", "--force"], "input"),
    ("predict-vocab-folder", PREDICT + ["--vocab", "data", "-o", "p.csv"], "directory"),
    ("predict-frame-store", ["predict", "run/best.fp32", "--data", "frame_store", "-o", "p.csv"], "frame"),
    ("predict-corrupt-report", ["predict", "corrupt_report", "--data", "data/validate*.tfrecord", "-o", "p.csv"],
     "report"),
    ("predict-vocab-duplicate", PREDICT + ["--vocab", "vocab_dup.csv", "-o", "p.csv"], "twice"),
    ("predict-vocab-gap", PREDICT + ["--vocab", "vocab_gap.csv", "-o", "p.csv"], "missing"),
    ("predict-vocab-no-name", PREDICT + ["--vocab", "vocab_noname.csv", "-o", "p.csv"], "Name"),
    # deploy
    ("plan-bench-of-checkpoint", ["deploy", "plan", "run/best.fp32", "-p", "x86-cpu", "--bench", "bench_ckpt.json"],
     "checkpoint"),
    ("plan-bench-negative", ["deploy", "plan", "run/best.fp32", "-p", "x86-cpu", "--bench", "negative.json"], "p99"),
    ("plan-bench-missing-key", ["deploy", "plan", "run/best.fp32", "-p", "x86-cpu", "--bench", "missing_key.json"],
     "energy"),
    ("plan-bench-wrong-type", ["deploy", "plan", "run/best.fp32", "-p", "x86-cpu", "--bench", "wrong_type.json"],
     "p50"),
    ("plan-bench-not-json", ["deploy", "plan", "run/best.fp32", "-p", "x86-cpu", "--bench", "notjson.json"], "JSON"),
    ("manifest-out-exists", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "manifest.json"], "--force"),
    ("manifest-out-elsewhere", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "foreign/m.json"],
     "ships with its artifact"),
    ("manifest-rejected", ["deploy", "manifest", "rejected", "-p", "x86-cpu", "-o", "m.json"], "rejected"),
    ("manifest-profile-latin1", ["deploy", "manifest", "run/best.fp32", "-p", "latin1.yaml", "-o", "m.json"], "UTF-8"),
    ("manifest-profile-inf-tdp", ["deploy", "manifest", "run/best.fp32", "-p", "inf_tdp.yaml", "-o", "m.json"], "tdp"),
    ("profiles-inf-tdp", ["profiles", "inf_tdp.yaml", "--json"], "tdp"),
    # the root command's output options (-q, -v, --log-file): refused before the command runs or anything is written
    ("log-file-folder", ["--log-file", "foreign", "profiles"], "directory"),
    ("log-file-under-a-file", ["--log-file", "afile/avf.log", "profiles"], "afile"),
    ("log-file-missing-folder", ["--log-file", "nothere/avf.log", "profiles"], "nothere"),
    ("log-file-checkpoint", ["--log-file", "run/best.pt", "models"], "not a log avf wrote"),
    ("log-file-users-text", ["--log-file", "afile", "profiles"], "not a log avf wrote"),
    ("log-file-fifo-dev", ["--log-file", "/dev/null", "profiles"], "not a regular file"),
    ("quiet-and-verbose", ["-q", "-vv", "profiles"], "choose one"),
    ("verbose-with-value", ["--verbose=2", "profiles"], "--verbose"),
    ("verify-empty", ["deploy", "verify", "empty.json"], "empty"),
    ("verify-not-json", ["deploy", "verify", "notjson.json"], "manifest"),
    ("verify-absolute", ["deploy", "verify", "absolute.json"], "artifact_dir"),
    ("verify-dotdot", ["deploy", "verify", "dotdot.json"], "artifact_dir"),
    ("verify-escape", ["deploy", "verify", "escape.json"], "files"),
    ("triton-no-onnx", ["deploy", "triton", "no_onnx", "-o", "repo"], "model.onnx"),
    ("triton-rejected", ["deploy", "triton", "rejected", "-o", "repo"], "rejected"),
    ("triton-out-file", ["deploy", "triton", "run/best.fp32", "-o", "afile"], "afile"),
    ("manifest-external-data", ["deploy", "manifest", "external_data", "-p", "x86-cpu", "-o", "m.json"],
     "weights.bin"),
    ("triton-external-data", ["deploy", "triton", "external_data", "-o", "repo"], "weights.bin"),
    ("bench-external-data", ["bench", "external_data", "--duration", "0.05", "-o", "b.json"], "weights.bin"),
    ("predict-external-data", ["predict", "external_data", "--data", "data/validate*.tfrecord", "-o", "p.csv"],
     "weights.bin"),
    ("plan-external-data", ["deploy", "plan", "external_data", "-p", "x86-cpu"], "weights.bin"),
    ("manifest-linked-onnx", ["deploy", "manifest", "linked_onnx", "-p", "x86-cpu", "-o", "m.json"], "symbolic link"),
    ("triton-linked-onnx", ["deploy", "triton", "linked_onnx", "-o", "repo"], "symbolic link"),
    ("bench-linked-onnx", ["bench", "linked_onnx", "--duration", "0.05", "-o", "b.json"], "symbolic link"),
    ("predict-linked-onnx", ["predict", "linked_onnx", "--data", "data/validate*.tfrecord", "-o", "p.csv"],
     "symbolic link"),
    ("triton-name-dotdot", ["deploy", "triton", "name_dotdot", "-o", "deep/repo"], "model.name"),
    ("triton-name-absolute", ["deploy", "triton", "name_absolute", "-o", "deep/repo"], "model.name"),
    ("triton-name-quote", ["deploy", "triton", "name_quote", "-o", "deep/repo"], "model.name"),
    ("triton-name-option", ["deploy", "triton", "run/best.fp32", "-o", "deep/repo", "--name", "../x"], "--name"),
    ("check-out-exists", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "-o", "check.json"], "--force"),
    ("check-data-missing", ["deploy", "check", "run/best.fp32", "--data", "nothere/*.tfrecord", "-o", "c.json"],
     "nothere"),
    ("check-other-classes", ["deploy", "check", "run/best.fp32", "--data", "data7/validate*.tfrecord", "-o", "c.json"],
     "classes"),
    ("check-backend-unknown", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "--backend", "nope", "-o", "c.json"], "--backend"),
    ("check-backend-unknown-default-out", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "--backend", "nope"], "--backend"),
    ("check-backend-checkpoint", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "--backend", "pytorch", "-o", "c.json"], "runs checkpoints"),
    ("check-device-bad", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "--device", "tpu", "-o", "c.json"], "--device"),
    ("check-batch-0", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "--batch-size", "0", "-o", "c.json"], "--batch-size"),
    ("check-not-artifact", ["deploy", "check", "afile", "--data", "data/validate*.tfrecord", "-o", "c.json"],
     "directory"),
    ("check-external-data", ["deploy", "check", "external_data", "--data", "data/validate*.tfrecord", "-o", "c.json"],
     "weights.bin"),
    ("check-linked-onnx", ["deploy", "check", "linked_onnx", "--data", "data/validate*.tfrecord", "-o", "c.json"],
     "symbolic link"),
    ("check-checkpoint-other", ["deploy", "check", "run/best.fp32", "--data", "data/train*.tfrecord", "--checkpoint",
                                "bench.json", "-o", "c.json"], "sha256"),
    ("check-out-is-input", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "-o",
                            "run/best.fp32/model.onnx", "--force"], "input"),
    ("check-out-is-report", ["deploy", "check", "run/best.fp32", "--data", "data/validate*.tfrecord", "-o",
                             "run/best.fp32/report.json", "--force"], "input"),
    ("manifest-out-is-report", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "run/best.fp32/report.json",
                                "--force"], "input"),
    ("manifest-check-not-json", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "m.json", "--check",
                                 "notjson.json"], "JSON"),
    ("manifest-check-a-bench", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "m.json", "--check",
                                "bench.json"], "avf-bench"),
    ("manifest-check-other-model", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "m.json", "--check",
                                    "check_other_model.json"], "another model.onnx"),
    ("manifest-check-bad-field", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "m.json", "--check",
                                  "check_bad_field.json"], "retention.gap"),
    ("manifest-check-missing", ["deploy", "manifest", "run/best.fp32", "-p", "x86-cpu", "-o", "m.json", "--check",
                                "nothere.json"], "nothere.json"),
    # data
    ("synth-out-file", ["data", "synth", "afile", "--videos", "20", "--force"], "not a directory"),
    ("synth-out-foreign", ["data", "synth", "foreign", "--videos", "20", "--force"], "not a synthetic data folder"),
    ("synth-videos-0", ["data", "synth", "new_data", "--videos", "0"], "--videos"),
    ("convert-store-foreign", ["data", "convert", "data/train*.tfrecord", "foreign", "--force"], "not a feature store"),
    ("convert-store-holds-input", ["data", "convert", "data/train*.tfrecord", "data", "--force"], "input"),
    ("convert-vocab-duplicate", ["data", "convert", "data/train*.tfrecord", "s", "--vocabulary", "vocab_dup.csv"],
     "twice"),
    ("inspect-missing", ["data", "inspect", "nothere*.tfrecord"], "nothere"),
    # tune
    ("tune-out-foreign", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "foreign", "--force"], "not a tune folder"),
    ("tune-out-holds-checkpoint", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "run", "--force"], "input"),
    ("tune-retention-above-1", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--min-retention", "2"],
     "--min-retention"),
    ("tune-profile-unknown", ["tune", "run/best.pt", "-p", "nope", "-o", "t"], "no such profile"),
    ("tune-batch-0", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--batch", "0"], "--batch"),
    ("tune-batch-huge", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--batch", "100000000000"], "GiB"),
    ("tune-test-missing", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--test", "nothere.tfrecord"],
     "nothere.tfrecord"),
    ("tune-eval-missing", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--eval", "nothere/*.tfrecord"],
     "nothere"),
    ("tune-eval-other-classes", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--eval",
                                 "data7/validate*.tfrecord"], "7 classes"),
    ("tune-test-other-classes", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--test", "data7/test*.tfrecord"],
     "7 classes"),
    ("tune-calib-other-classes", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--calib",
                                  "data7/train*.tfrecord"], "7 classes"),
    ("tune-train-frame-store", ["tune", "run/best.pt", "-p", "x86-cpu", "-o", "t", "--train", "frame_store"],
     "frame-level"),
]


@pytest.mark.parametrize("case, args, mentions", BAD, ids=[case[0] for case in BAD])
def test_bad_use_is_one_error_line_exit_2_and_touches_nothing(world, case, args, mentions):
    before = snapshot(world)
    code, out, err = cli(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert len(errors) == 1 and "Traceback" not in err, err
    assert mentions.lower() in errors[0].lower(), errors[0]
    assert snapshot(world) == before, "files changed on disk"


def test_error_lines_keep_square_brackets(world):
    code, _, err = cli("deploy", "triton", "no_onnx[v2]", "-o", "repo")
    assert code == 2 and "no_onnx[v2]" in err
    from avf.compress.tensorrt_engine import unavailable_reason

    if unavailable_reason() and "not installed" in unavailable_reason():  # the fix names the extra, brackets and all
        code, _, err = cli("compress", "run/best.pt", "--backend", "tensorrt", "-o", "trt")
        assert code == 2 and "avf[tensorrt]" in err


def test_not_deployable_exits_3_with_the_manifest_written(world, tmp_path):
    budgets = json.loads(cli("profiles", "x86-cpu", "--json")[1])
    tight = tmp_path / "tight.yaml"
    tight.write_text(json.dumps({**budgets, "name": "tight", "budgets": {"latency_ms": 1e-9, "memory_mib": 1e-9}}))
    out = world / "run" / "tight_manifest.json"
    code, stdout, _ = cli("deploy", "manifest", "run/best.fp32", "-p", tight, "--bench", "bench.json", "-o", out)
    assert code == 3 and "NOT deployable" in stdout
    manifest = json.loads(out.read_text())
    assert manifest["decision"]["deployable"] is False and manifest["decision"]["accuracy_checked"] is True
    out.unlink()


def test_manifest_verify_checks_the_shipped_copy_not_the_build(world, tmp_path):
    shipped = tmp_path / "ship"
    shipped.mkdir()
    shutil.copytree(world / "run" / "best.fp32", shipped / "best.fp32")
    code, _, err = cli("deploy", "manifest", shipped / "best.fp32", "-p", "x86-cpu", "-o", shipped / "manifest.json")
    assert code in (0, 3), err
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["artifact_dir"] == "best.fp32"
    moved = tmp_path / "moved"
    shutil.move(shipped, moved)  # the fleet's copy, somewhere else
    assert cli("deploy", "verify", moved / "manifest.json")[0] == 0
    with open(moved / "best.fp32" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    code, _, err = cli("deploy", "verify", moved / "manifest.json")
    assert code == 1 and "mismatch" in err  # the original build folder is intact; the copy is what is checked
    (moved / "best.fp32" / "model.onnx").unlink()
    code, _, err = cli("deploy", "verify", moved / "manifest.json")
    assert code == 1 and "missing" in err


def test_triton_force_replaces_only_its_own_model(world, tmp_path):
    repo = tmp_path / "repo"
    other = repo / "someone_elses_model" / "1"
    other.mkdir(parents=True)
    (other / "model.onnx").write_bytes(b"their model")
    (repo / "someone_elses_model" / "config.pbtxt").write_text('name: "someone_elses_model"\n')
    assert cli("deploy", "triton", world / "run" / "best.fp32", "-o", repo)[0] == 0
    assert cli("deploy", "triton", world / "run" / "best.fp32", "-o", repo)[0] == 2  # exists: needs --force
    assert cli("deploy", "triton", world / "run" / "best.fp32", "-o", repo, "--force")[0] == 0
    assert (other / "model.onnx").read_bytes() == b"their model"
    assert (repo / "attend_fusion" / "config.pbtxt").is_file()
    assert sorted(p.name for p in repo.iterdir()) == ["attend_fusion", "someone_elses_model"]


def test_unchecked_accuracy_is_flagged_and_not_deployable(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    import torch

    payload = torch.load(run / "best.pt", weights_only=True)
    payload["settings"]["val"] = None  # a run trained without validation data
    payload["data"]["val"] = None
    torch.save(payload, run / "best.pt")
    code, _, err = cli("compress", run / "best.pt", "-o", run / "unchecked")
    assert code == 0, err
    code, stdout, _ = cli("deploy", "manifest", run / "unchecked", "-p", "x86-cpu", "-o", run / "m.json")
    manifest = json.loads((run / "m.json").read_text())
    assert code == 3 and manifest["decision"]["accuracy_checked"] is False and not manifest["decision"]["deployable"]
    assert "accuracy never checked" in stdout


def test_nan_checkpoint_is_refused_by_every_consumer(world, tmp_path):
    import torch

    payload = torch.load(world / "run" / "best.pt", weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], float("nan"))
    broken = tmp_path / "nan.pt"
    torch.save(payload, broken)
    for args in (["predict", broken, "--data", world / "data" / "validate0000.tfrecord", "-o", tmp_path / "p.csv"],
                 ["bench", broken, "--duration", 0.05, "-o", tmp_path / "b.json"],
                 ["compress", broken, "-o", tmp_path / "a"],
                 ["eval", broken, "--data", world / "data" / "validate0000.tfrecord"]):
        code, _, err = cli(*args)
        assert code == 2 and "NaN" in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]


def _shard_of_four_classes(folder, videos: int, rgb_of):
    """One training shard whose visual features come from rgb_of(rng): the way to make training diverge."""
    from avf.data.tfrecord import TFRecordWriter
    from avf.data.youtube8m import encode_video_example

    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    with TFRecordWriter(folder / "train0000.tfrecord") as writer:
        for i in range(videos):
            writer.write(encode_video_example(f"v{i}", [i % 4], rgb_of(rng), rng.normal(size=128).astype(np.float32)))
    return folder


def test_training_stops_at_the_first_non_finite_loss(tmp_path):
    import numpy as np

    # finite, but the first layer's output overflows
    data = _shard_of_four_classes(tmp_path / "data", 64, lambda rng: np.full(1024, 3e38, np.float32))
    code, out, err = cli("train", "-m", "fc_early_fusion", "--train", data, "-o", tmp_path / "run", "--classes", 4,
                         "--width", 16, "--epochs", 1, "--lr", 1e-3)
    assert code == 2 and "diverged" in err and "checkpoints in" not in out
    assert not (tmp_path / "run").exists()  # the run folder it created is gone with its failure


def test_training_that_diverges_to_a_finite_but_useless_loss_is_stopped(tmp_path):
    """Residual Attention Early Fusion at lr 1e-3 on real data reached a loss of 2.6e7 and still 'finished'."""
    import numpy as np

    data = _shard_of_four_classes(tmp_path / "data", 256, lambda rng: (100 * rng.normal(size=1024)).astype(np.float32))
    code, out, err = cli("train", "-m", "fc_early_fusion", "--train", data, "-o", tmp_path / "run", "--classes", 4,
                         "--width", 16, "--epochs", 2, "--lr", 1, "--batch-size", 32)
    assert code == 2 and "diverged" in err and "mean training loss of epoch 1" in err and "lower --lr" in err, err
    assert "checkpoints in" not in out
    assert not (tmp_path / "run").exists()
    lines = err.strip().splitlines()  # the run's header line (progress: stderr since issue 23), then one error line
    assert len(lines) == 2 and lines[0].startswith("fc_early_fusion: ") and lines[1].startswith("error:"), err


def test_float16_store_refuses_values_it_cannot_hold(tmp_path):
    import numpy as np

    from avf.data.tfrecord import TFRecordWriter
    from avf.data.youtube8m import encode_video_example

    data = tmp_path / "data"
    data.mkdir()
    with TFRecordWriter(data / "train0000.tfrecord") as writer:
        rgb = np.zeros(1024, np.float32)
        writer.write(encode_video_example("ok", [0], rgb, np.zeros(128, np.float32)))
        rgb[5] = 1e30
        writer.write(encode_video_example("huge", [1], rgb, np.zeros(128, np.float32)))
    code, _, err = cli("data", "convert", data, tmp_path / "store", "--classes", 2)
    assert code == 2 and "'huge'" in err and "float32" in err and not (tmp_path / "store").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert cli("data", "convert", data, tmp_path / "store", "--classes", 2, "--dtype", "float32")[0] == 0


def test_options_that_do_nothing_say_so(world, tmp_path):
    code, _, err = cli("compress", world / "run" / "best.pt", "--calib", world / "data", "-o", tmp_path / "a")
    assert code == 0 and "--calib does nothing without --int8" in err
    code, _, err = cli("bench", "run/best.fp32", "--batch", "1", "--duration", 0.02, "--remote-python", "python3.11",
                       "-o", tmp_path / "b.json")
    assert code == 0 and "--remote-python does nothing without --target" in err, err


@pytest.mark.parametrize("command", ["synth", "convert", "compress"])
def test_sigterm_cleans_up_like_ctrl_c(world, tmp_path, command):
    """A SIGTERM mid-write leaves no hidden partial folder, like SIGINT, and exits 128 + 15."""
    target = tmp_path / "out"
    args = {"synth": ["data", "synth", target, "--videos", 200000, "--classes", 50],
            "convert": ["data", "convert", world / "data" / "*.tfrecord", target],
            "compress": ["compress", world / "run" / "best.pt", "--int8", "--calib-size", 64, "-o", target]}[command]
    if command == "convert":  # enough bytes that the conversion is still running when the signal comes
        many = tmp_path / "many"
        many.mkdir()
        for i in range(60):
            shutil.copy(world / "data" / "train0000.tfrecord", many / f"train{i:04d}.tfrecord")
        args = ["data", "convert", many, target, "--classes", 12]
    process = subprocess.Popen([sys.executable, "-m", "avf", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):
        if process.poll() is not None:
            break
        time.sleep(0.02)
    assert process.poll() is None, f"{command} ended before the signal: {process.communicate()}"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_every_registry_model_goes_through_compress_bench_predict_and_deploy(world, tmp_path):
    """Every model `avf models` lists, single-modality ones included, through the whole deployment path."""
    from avf.models import MODEL_NAMES
    from avf.train.loop import TrainSettings, train

    data = world / "data"
    for name in MODEL_NAMES:
        run = tmp_path / name
        train(TrainSettings(model=name, train=str(data / "train*.tfrecord"), val=str(data / "validate*.tfrecord"),
                            out=str(run), epochs=1, width=16, attention_width=16, heads=2, threads=1))
        artifact = run / "int8"
        code, _, err = cli("compress", run / "best.pt", "--int8", "--calib-size", 64, "--min-retention", 0, "-o", artifact)
        assert code == 0, (name, err)
        report = json.loads((artifact / "report.json").read_text())
        assert report["io"]["inputs"] == {"rgb": ["batch", 1024], "audio": ["batch", 128]}, name
        code, _, err = cli("bench", artifact, "--scenario", "single-stream", "--duration", 0.02, "--threads", 1,
                           "-o", run / "bench.json")
        assert code == 0, (name, err)
        code, _, err = cli("predict", artifact, "--data", data / "validate0000.tfrecord", "--top-k", 3,
                           "-o", run / "predictions.csv")
        assert code == 0 and len((run / "predictions.csv").read_text().splitlines()) > 1, (name, err)
        code, _, err = cli("deploy", "manifest", artifact, "-p", "x86-cpu", "--bench", run / "bench.json",
                           "-o", run / "manifest.json")
        assert code in (0, 3) and (run / "manifest.json").is_file(), (name, err)
        assert cli("deploy", "verify", run / "manifest.json")[0] == 0, name
        code, _, err = cli("deploy", "triton", artifact, "-o", tmp_path / "triton")
        assert code == 0 and (tmp_path / "triton" / name / "config.pbtxt").is_file(), (name, err)


def test_compress_summary_prints_a_null_retention_ratio(world):
    """A young model's F1 is 0, so its retention ratio is null: the summary says so instead of a TypeError."""
    import io

    from rich.console import Console

    from avf.cli import compress_commands

    report = json.loads((world / "run" / "best.fp32" / "report.json").read_text())
    report["retention"]["reference"]["f1"] = 0.0
    report["retention"]["ratios"]["f1"] = None
    buffer = io.StringIO()
    saved, compress_commands.stdout = compress_commands.stdout, Console(file=buffer, width=200)
    try:
        compress_commands.print_summary(report, world / "run" / "best.fp32")
    finally:
        compress_commands.stdout = saved
    assert "ratio n/a: reference is 0" in buffer.getvalue()


@pytest.mark.parametrize("command, module, function", [
    (["models"], "avf.models", "parameter_count"),
    (["profiles"], "avf.deploy.profiles", "all_profiles"),
])
def test_a_bug_is_exit_70_distinct_from_every_other_code(monkeypatch, tmp_path, command, module, function):
    """An unexpected exception is not bad input (2), a mismatch (1) or below the bar (3): one ``internal error:``
    line naming where its traceback was written, exit 70 (tests/test_cli_logging.py covers the rest of the path)."""
    import importlib

    from avf.errors import ExitCode

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(importlib.import_module(module), function, bug)
    monkeypatch.setenv("AVF_CACHE", str(tmp_path))
    code, _, err = cli(*command)
    assert code == ExitCode.INTERNAL == 70 and code not in (ExitCode.MISMATCH, ExitCode.BAD_INPUT, ExitCode.BELOW_BAR)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("internal error: ZeroDivisionError: a bug (full traceback: ")
    assert any((tmp_path / "tracebacks").iterdir())
