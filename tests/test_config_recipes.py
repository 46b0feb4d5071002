"""--config FILE.yaml (avf train, avf compress, avf tune), the shipped recipes (avf train --recipe) and --json.

Precedence, one rule for the three commands (avf/cli/options.py ``resolve_settings``): a flag typed on the command
line > the --config file > the recipe (train: --recipe, or the default recipe) > the settings model's default. Each
run records the resolved settings and where they came from (``resolved_from``: recipe, config path and sha256, the
fields typed). Everything runs the real command on tiny synthetic data (200 videos, 12 classes, width 16, 1 epoch).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

from avf.recipes import DEFAULT_RECIPE, recipe_paths  # noqa: E402
from avf.train.checkpoint import load_checkpoint  # noqa: E402
from avf.train.loop import TrainSettings  # noqa: E402
from cli_harness import cli, snapshot, working_in  # noqa: E402

TINY = {"model": "attend_fusion", "width": 16, "attention_width": 16, "heads": 2, "epochs": 1, "threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("config_data")
    assert cli("data", "synth", root / "data", "--videos", 200, "--classes", 12, "--seed", 3)[0] == 0
    return root / "data"


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(args, folder: Path, *mentions: str) -> str:
    """Run ``avf ARGS`` in ``folder``: exit 2, one ``error:`` line mentioning every one of ``mentions``, nothing
    created, changed or removed under ``folder``."""
    before = snapshot(folder)
    with working_in(folder):
        code, out, err = cli(*args)
    assert code == 2, (args, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    assert all(m in lines[0] for m in mentions), (mentions, lines[0])
    assert snapshot(folder) == before, "a refused command touched files"
    return lines[0]


# ----------------------------------------------------------------------------- avf train


def test_train_config_sets_values_a_typed_flag_overrides_one_and_the_run_records_both(data, tmp_path):
    config = write_yaml(tmp_path / "train.yaml", {**TINY, "train": str(data / "train*.tfrecord"),
                                                  "val": str(data / "validate*.tfrecord"), "lr": 2.0e-3,
                                                  "dropout": 0.2, "schedule": "cosine"})
    code, out, err = cli("train", "--config", config, "-o", tmp_path / "run", "--dropout", 0.3, "--json")
    assert code == 0, err
    result = json.loads(out)  # stdout is the one JSON document: the human lines went to stderr
    assert "epoch 1" in err and "checkpoints in" in err and "epoch 1  loss" not in out
    for name in ("best.pt", "last.pt"):
        settings = load_checkpoint(tmp_path / "run" / name)["settings"]
        assert settings["lr"] == 2e-3 and settings["schedule"] == "cosine" and settings["width"] == 16  # the config's
        assert settings["dropout"] == 0.3  # the flag beats the config
        assert settings["weight_decay"] == TrainSettings.model_fields["weight_decay"].default  # nobody set it
        origin = settings["resolved_from"]
        assert origin["config"] == {"path": str(config), "sha256": sha256(config)}
        assert origin["recipe"] == DEFAULT_RECIPE and set(origin["command_line"]) == {"out", "dropout"}
    logged = json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]
    assert logged == settings
    # --json: the best epoch and its metrics, the resolved settings
    assert result["best_epoch"] == 1 and result["best"]["val_gap"] == result["last"]["val_gap"] > 0
    assert result["settings"] == settings and result["checkpoints"]["best"] == str(tmp_path / "run" / "best.pt")
    assert result["epochs_done"] == 1 and result["stopped_early"] is None


def test_train_config_refusals_name_the_key_or_field_and_write_nothing(data, tmp_path):
    base = ["train", "-m", "attend_fusion", "--train", str(data / "train*.tfrecord"), "-o", "run", "--config"]
    write_yaml(tmp_path / "unknown.yaml", {"lr": 1e-3, "learning_rate": 1e-3})
    refused(base + ["unknown.yaml"], tmp_path, "unknown.yaml", "learning_rate")
    write_yaml(tmp_path / "dashed.yaml", {"batch-size": 64})
    refused(base + ["dashed.yaml"], tmp_path, "'batch-size'", "batch_size")  # and what it meant
    write_yaml(tmp_path / "bad_value.yaml", {"lr": -1})
    refused(base + ["bad_value.yaml"], tmp_path, "bad_value.yaml", "'lr'", "greater than 0")
    write_yaml(tmp_path / "bad_choice.yaml", {"schedule": "linear"})
    refused(base + ["bad_choice.yaml"], tmp_path, "'schedule'")
    (tmp_path / "not_finite.yaml").write_text("warmup_epochs: .inf\n")
    refused(base + ["not_finite.yaml"], tmp_path, "'warmup_epochs'", "finite")
    (tmp_path / "a_list.yaml").write_text("- lr\n")
    refused(base + ["a_list.yaml"], tmp_path, "a_list.yaml", "mapping")
    (tmp_path / "broken.yaml").write_text("lr: [1\n")
    refused(base + ["broken.yaml"], tmp_path, "broken.yaml", "YAML")
    write_yaml(tmp_path / "record.yaml", {"resolved_from": {"recipe": "x"}})
    refused(base + ["record.yaml"], tmp_path, "resolved_from")
    refused(base + ["missing.yaml"], tmp_path, "missing.yaml", "not found")
    refused(base + ["."], tmp_path, "directory")
    refused(["train", "--train", str(data), "-o", "run"], tmp_path, "--model", "--config")  # a required field
    refused(["train", "-m", "attend_fusion", "--train", str(data), "-o", "run", "--recipe", "best"], tmp_path,
            "--recipe", "yt8m-best", "paper")


def test_a_fifo_config_is_refused_not_waited_on(data, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.yaml")
    refused(["train", "-m", "attend_fusion", "--train", str(data), "-o", "run", "--config", "pipe.yaml"], tmp_path,
            "pipe.yaml", "FIFO")


def test_the_recipes_hold_their_documented_values():
    assert set(recipe_paths()) >= {"paper", "yt8m-best"}
    paper = yaml.safe_load(recipe_paths()["paper"].read_text())
    # paper: exactly today's TrainSettings defaults (lr 1e-4 constant, 20 epochs, no batch norm)
    assert paper and all(TrainSettings.model_fields[k].default == v for k, v in paper.items()), paper
    assert (paper["lr"], paper["schedule"], paper["epochs"], paper["batch_norm"]) == (1e-4, "constant", 20, False)
    best = yaml.safe_load(recipe_paths()["yt8m-best"].read_text())
    # yt8m-best: docs/results/split45k section 0's common recipe (FC Early Fusion 74.20 at width 2048)
    assert best == {"epochs": 10, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.01, "schedule": "cosine",
                    "warmup_epochs": 0.0, "dropout": 0.4, "prior_init": True, "identity_attention": True,
                    "batch_norm": True, "clip_grad_norm": 0.0, "ema": 0.0, "label_smoothing": 0.0, "mixup": 0.0}
    assert "74.20" in recipe_paths()["yt8m-best"].read_text()  # the row it stands on is cited


def test_every_shipped_recipe_is_valid_settings_and_the_variants_change_only_what_they_say():
    from avf.train.loop import TrainSettings

    recipes = {name: yaml.safe_load(path.read_text()) for name, path in recipe_paths().items()}
    assert {"paper", "yt8m-best", "yt8m-deep", "yt8m-student"} <= set(recipes)
    for name, values in recipes.items():
        TrainSettings(model="moe", train="x", out="x", **values)  # every key a field, every value valid
    best = recipes["yt8m-best"]
    changed = lambda name: {k: v for k, v in recipes[name].items() if best.get(k, v) != v or k not in best}  # noqa: E731
    # docs/results/reproduction45k: the setting that trained Residual Attention Early Fusion, and the students'
    assert changed("yt8m-deep") == {"lr": 3e-4, "warmup_epochs": 1.0}
    assert changed("yt8m-student") == {"epochs": 20, "dropout": 0.5, "distill_weight": 0.7}
    assert "72.97" in recipe_paths()["yt8m-deep"].read_text() and "75.13" in recipe_paths()["yt8m-student"].read_text()


def _train(data: Path, out: Path, *extra) -> tuple[int, str, str]:
    return cli("train", "-m", "attend_fusion", "--train", data / "train*.tfrecord", "--val",
               data / "validate*.tfrecord", "-o", out, "--width", 16, "--attention-width", 16, "--heads", 2, "--threads", 1, *extra)


def test_recipes_resolve_to_their_values_and_layer_under_config_and_flags(data, tmp_path):
    code, _, err = _train(data, tmp_path / "best", "--recipe", "yt8m-best", "--epochs", 1)
    assert code == 0, err
    payload = load_checkpoint(tmp_path / "best" / "best.pt")
    settings = payload["settings"]
    recipe = yaml.safe_load(recipe_paths()["yt8m-best"].read_text())
    assert all(settings[k] == v for k, v in recipe.items() if k != "epochs") and settings["epochs"] == 1
    assert payload["model"]["batch_norm"] is True  # the model really has it
    assert settings["resolved_from"] == {"recipe": "yt8m-best", "config": None,
                                         "command_line": ["attention_width", "epochs", "heads", "model", "out",
                                                          "threads", "train", "val", "width"]}
    # recipe < config < typed flag
    config = write_yaml(tmp_path / "over.yaml", {"lr": 5e-3, "batch_norm": False, "dropout": 0.1})
    code, _, err = _train(data, tmp_path / "layered", "--recipe", "yt8m-best", "--config", config, "--batch-norm",
                          "--epochs", 1)
    assert code == 0, err
    settings = load_checkpoint(tmp_path / "layered" / "last.pt")["settings"]
    assert settings["schedule"] == "cosine" and settings["identity_attention"] is True  # the recipe's
    assert settings["lr"] == 5e-3 and settings["dropout"] == 0.1  # the config's, over the recipe's
    assert settings["batch_norm"] is True  # the typed flag's, over the config's false
    assert settings["resolved_from"]["config"]["sha256"] == sha256(config)
    # --recipe paper: TrainSettings' defaults; and a typed --no-batch-norm turns off what a recipe turned on
    code, _, err = _train(data, tmp_path / "paper", "--recipe", "paper", "--epochs", 1)
    assert code == 0, err
    settings = load_checkpoint(tmp_path / "paper" / "last.pt")["settings"]
    defaults = TrainSettings(model="x", train="x", out="x").model_dump()
    assert all(settings[k] == defaults[k] for k in recipe if k != "epochs")
    code, _, err = _train(data, tmp_path / "off", "--recipe", "yt8m-best", "--no-batch-norm", "--epochs", 1)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "off" / "last.pt")["model"]["batch_norm"] is False


def test_the_default_recipe_applies_when_none_is_given_and_resume_keeps_the_runs_own(data, tmp_path):
    code, _, err = _train(data, tmp_path / "run", "--recipe", "yt8m-best", "--epochs", 1)
    assert code == 0, err
    # a resume without --recipe: the default recipe is not "asked for", so it does not conflict with the run's
    code, _, err = _train(data, tmp_path / "run", "--resume", "--epochs", 2)
    assert code == 0, err
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 2 and last["settings"]["lr"] == 1e-3
    assert last["settings"]["resolved_from"]["recipe"] == "yt8m-best"  # the run's own record, kept
    # a recipe or a config named on --resume is asked for: one that differs from the run is refused, naming the field
    code, _, err = _train(data, tmp_path / "run", "--resume", "--recipe", "paper", "--epochs", 3)
    assert code == 2 and "lr" in err and "--resume" in err, err
    config = write_yaml(tmp_path / "lr.yaml", {"lr": 0.5})
    code, _, err = _train(data, tmp_path / "run", "--resume", "--config", config, "--epochs", 3)
    assert code == 2 and "lr 0.5" in err, err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    # no --recipe at all on a new run: the default recipe, recorded
    code, _, err = _train(data, tmp_path / "default", "--epochs", 1)
    assert code == 0, err
    settings = load_checkpoint(tmp_path / "default" / "last.pt")["settings"]
    default = yaml.safe_load(recipe_paths()[DEFAULT_RECIPE].read_text())
    assert settings["resolved_from"]["recipe"] == DEFAULT_RECIPE
    assert all(settings[k] == v for k, v in default.items() if k != "epochs")


# ----------------------------------------------------------------------------- avf compress


def test_compress_config_flag_precedence_report_records_it_and_json(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    config = write_yaml(tmp_path / "compress.yaml", {"precision": "int8", "calib_size": 32, "eval_size": 16,
                                                     "min_retention": 0.5})
    code, out, err = cli("compress", tiny_run / "run" / "best.pt", "-o", tmp_path / "art", "--config", config,
                         "--calib-size", 48, "--json")
    assert code == 0, err
    report = json.loads((tmp_path / "art" / "report.json").read_text())
    assert json.loads(out) == report  # stdout: exactly report.json
    assert "verdict" in err and "verdict" not in out and "retention:" in err  # the table and the stages: stderr
    options = report["options"]
    assert options["precision"] == "int8" and options["eval_size"] == 16 and options["min_retention"] == 0.5
    assert options["calib_size"] == 48  # the typed flag beats the config's 32
    assert options["resolved_from"]["config"] == {"path": str(config), "sha256": sha256(config)}
    assert "calib_size" in options["resolved_from"]["command_line"]
    # a precision flag beats the config's precision
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "-o", tmp_path / "dyn", "--config", config,
                       "--int8-dynamic")
    assert code == 0, err
    assert json.loads((tmp_path / "dyn" / "report.json").read_text())["options"]["precision"] == "int8-dynamic"


def test_compress_config_refusals(tiny_run, tmp_path):
    checkpoint = str(tiny_run / "run" / "best.pt")
    write_yaml(tmp_path / "unknown.yaml", {"precison": "int8"})
    refused(["compress", checkpoint, "-o", "art", "--config", "unknown.yaml"], tmp_path, "precison", "'precision'")
    write_yaml(tmp_path / "bad.yaml", {"precision": "int9"})
    refused(["compress", checkpoint, "-o", "art", "--config", "bad.yaml"], tmp_path, "bad.yaml", "'precision'")
    write_yaml(tmp_path / "force.yaml", {"force": True})
    refused(["compress", checkpoint, "-o", "art", "--config", "force.yaml"], tmp_path, "force")


# ----------------------------------------------------------------------------- avf tune


def test_tune_config_flag_precedence_tune_json_records_it_and_json(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    config = write_yaml(tmp_path / "tune.yaml", {"profile": "x86-cpu", "min_retention": 0.5, "ratio_step": 0.3,
                                                 "calib_size": 64, "bench_duration": 0.05, "max_latency_ms": 1000,
                                                 "threads": 1})
    code, out, err = cli("tune", tiny_run / "run" / "best.pt", "--config", config, "-o", tmp_path / "tune",
                         "--ratio-step", 0.45, "--json")
    assert code == 0, err
    state = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert json.loads(out) == state  # stdout: exactly tune.json's state
    assert "Pareto front" in err and "Pareto front" not in out and "chosen:" in err
    identity = state["identity"]
    assert identity["profile"] == "x86-cpu" and identity["min_retention"] == 0.5 and identity["calib_size"] == 64
    assert identity["ratio_step"] == 0.45  # the typed flag beats the config's 0.3
    assert state["resolved_from"]["config"] == {"path": str(config), "sha256": sha256(config)}
    assert "resolved_from" not in identity  # where the settings came from is no part of which search this is
    # the same settings typed as flags continue the same search (nothing rebuilt), not "other settings"
    code, out, err = cli("tune", tiny_run / "run" / "best.pt", "-p", "x86-cpu", "-o", tmp_path / "tune",
                         "--min-retention", 0.5, "--ratio-step", 0.45, "--calib-size", 64, "--duration", 0.05,
                         "--max-latency-ms", 1000, "--threads", 1)
    assert code == 0, err
    assert "resuming" in err
    assert json.loads((tmp_path / "tune" / "tune.json").read_text())["resolved_from"]["config"] is None


def test_tune_config_refusals(tiny_run, tmp_path):
    checkpoint = str(tiny_run / "run" / "best.pt")
    write_yaml(tmp_path / "unknown.yaml", {"profile": "x86-cpu", "budget": 3})
    refused(["tune", checkpoint, "-o", "t", "--config", "unknown.yaml"], tmp_path, "'budget'")
    write_yaml(tmp_path / "bad.yaml", {"profile": "x86-cpu", "ratio_step": 0.9})
    refused(["tune", checkpoint, "-o", "t", "--config", "bad.yaml"], tmp_path, "bad.yaml", "'ratio_step'")
    refused(["tune", checkpoint, "-o", "t"], tmp_path, "--profile")
