"""Issue 13: the YouTube-8M challenge anchors (moe, context_gating_moe), batch norm in FC stacks, and
the training-recipe options of `avf train` (EMA, early stopping, label smoothing, mixup, distillation)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from avf.compress.fold import fold_model  # noqa: E402
from avf.data.synthetic import synthesize  # noqa: E402
from avf.errors import InputError  # noqa: E402
from avf.models import build_model, parameter_count  # noqa: E402
from avf.models.blocks import ContextGating, MixtureOfExperts, TokenBatchNorm  # noqa: E402
from avf.train import loop  # noqa: E402
from avf.train.checkpoint import load_checkpoint  # noqa: E402
from avf.train.loop import TrainSettings, train  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe") / "data"
    synthesize(root, videos=320, classes=12, seed=2)
    return root


def _settings(data, out, **overrides):
    base = {"model": "fc_early_fusion", "train": str(data / "train*.tfrecord"), "val": str(data / "validate*.tfrecord"),
            "out": str(out), "epochs": 2, "batch_size": 64, "lr": 3e-3, "width": 32, "threads": 1}
    base.update(overrides)
    return TrainSettings(**base)


# ----------------------------------------------------------------------------- anchors


def _mixture_probabilities(head: MixtureOfExperts, x: torch.Tensor) -> torch.Tensor:
    """The starter code's MoeModel, literally: softmax gates (dummy expert last) times sigmoid experts."""
    k, c = head.experts, head.num_classes
    gates = torch.softmax(head.gates(x).reshape(-1, c, k + 1), dim=-1)
    experts = torch.sigmoid(head.expert_logits(x).reshape(-1, c, k))
    p = (gates[..., :k] * experts).sum(-1)
    if head.output_gate is not None:
        p = p * torch.sigmoid(head.output_gate.gate(p))
    return p


@pytest.mark.parametrize("output_gating", [False, True])
def test_moe_logits_are_the_logit_of_the_starter_code_mixture(output_gating):
    torch.manual_seed(0)
    head = MixtureOfExperts(20, 7, experts=3, output_gating=output_gating).eval()
    x = 4 * torch.randn(50, 20)  # large inputs: probabilities near 0 and 1 stay finite in log space
    logits = head(x)
    assert torch.isfinite(logits).all()
    assert torch.allclose(torch.sigmoid(logits), _mixture_probabilities(head, x), atol=1e-6)


def test_anchor_models_parameter_counts_by_hand_and_rebuild():
    c, d, k = 3862, 1024 + 128, 2
    moe = lambda i: i * c * (k + 1) + i * c * k + c * k  # noqa: E731  gates (no bias), experts
    assert parameter_count("moe") == moe(d)
    w = 1024
    cg = lambda n: n * n + 2 * n  # noqa: E731  gate Linear without bias, BN weight and bias
    assert parameter_count("context_gating_moe") == (d * w + w + 2 * w) + cg(w) + moe(w) + cg(c)
    for name in ("moe", "context_gating_moe"):
        model = build_model(name, num_classes=9, width=16)
        assert build_model(**model.config()).config() == model.config()
        assert model(torch.randn(2, 1024), torch.randn(2, 128)).shape == (2, 9)


def test_batch_norm_option_and_folding_are_exact():
    torch.manual_seed(0)
    for name, kwargs in (("fc_early_fusion", {"batch_norm": True}), ("attend_fusion", {"batch_norm": True}),
                         ("context_gating_moe", {})):
        model = build_model(name, num_classes=9, width=16, attention_width=16, heads=2, **kwargs)
        assert any(isinstance(m, TokenBatchNorm) for m in model.modules())
        model.train()
        for _ in range(3):  # move the running statistics away from their start
            model(3 * torch.randn(32, 1024) + 1, torch.randn(32, 128))
        model.eval()
        probe = (torch.randn(16, 1024), torch.randn(16, 128))
        result = fold_model(model, probe)
        assert any("batch norm" in r for r in result.rewrites), result.rewrites
        assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in result.model.modules())
        assert result.max_logit_difference < 1e-4
        if name == "context_gating_moe":  # the gating and the mixture are not affine: they stay
            assert any(isinstance(m, ContextGating) for m in result.model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in build_model("fc_early_fusion", width=8).modules())


def test_pruning_keeps_the_mixture_head_and_refuses_moe_without_hidden_layers():
    pytest.importorskip("torch_pruning")
    from avf.compress.prune import check_ratio_honoured, hidden_widths, prune_channels

    model = fold_model(build_model("context_gating_moe", num_classes=9, width=32).eval()).model
    before = hidden_widths(model)
    pruned = prune_channels(model, 0.5, 1024, 128)
    assert hidden_widths(pruned) == [w // 2 for w in before]
    assert pruned.classifier.gates.out_features == 9 * 3
    assert pruned(torch.randn(2, 1024), torch.randn(2, 128)).shape == (2, 9)
    check_ratio_honoured(0.5, before, hidden_widths(pruned))
    moe = build_model("moe", num_classes=9)
    assert hidden_widths(moe) == []
    with pytest.raises(InputError, match="no hidden layers"):
        check_ratio_honoured(0.5, [], [])


@pytest.mark.parametrize("name", ["moe", "context_gating_moe"])
def test_anchors_train_and_start_at_the_label_priors(data, tmp_path, name):
    result = train(_settings(data, tmp_path / name, model=name, epochs=2, lr=1e-2))
    assert result["history"][-1]["val_gap"] > 0.3
    model = build_model(name, num_classes=12, width=32)
    from avf.train.data import load_training_data

    train_data = load_training_data(str(data / "train*.tfrecord"))
    loop._init_classifier_to_priors(model, train_data)
    model.eval()
    prior = torch.sigmoid(model(torch.zeros(1, 1024), torch.zeros(1, 128)))[0]
    if name == "moe":  # zero input: the experts' biases alone, so exactly the priors
        counts = torch.bincount(torch.from_numpy(train_data.label_indices).long(), minlength=12).float()
        assert torch.allclose(prior, (counts / len(train_data)).clamp(1e-5, 1 - 1e-5), rtol=1e-3)


# ----------------------------------------------------------------------------- recipe options


def test_ema_scores_and_saves_the_averaged_weights_and_resumes(data, tmp_path):
    out = tmp_path / "ema"
    train(_settings(data, out, ema=0.9, epochs=1))
    last = load_checkpoint(out / "last.pt")
    assert "train_state_dict" in last and last["ema_steps"] > 0
    key = "classifier.weight"
    assert not torch.equal(last["state_dict"][key], last["train_state_dict"][key])
    assert torch.equal(load_checkpoint(out / "best.pt")["state_dict"][key], last["state_dict"][key])
    resumed = train(_settings(data, out, ema=0.9, epochs=2), resume=True, resume_epochs=2)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert load_checkpoint(out / "last.pt")["ema_steps"] == 2 * last["ema_steps"]
    with pytest.raises(InputError, match="ema"):  # a run-defining option: refused when changed on resume
        train(_settings(data, out, ema=0.5, epochs=3), resume=True, given={"ema"})


def test_early_stop_stops_when_validation_gap_stalls(data, tmp_path, monkeypatch):
    gaps = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.9])

    def fake_evaluate(model, data, batch_size, device):
        return {"gap": next(gaps), "map": 0.0, "hit_at_one": 0.0, "perr": 0.0, "f1": 0.0}

    monkeypatch.setattr(loop, "evaluate_model", fake_evaluate)
    result = train(_settings(data, tmp_path / "stop", epochs=6, early_stop=2))
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "stop" / "metrics.json").read_text())["stopped_early"] == 4
    assert load_checkpoint(tmp_path / "stop" / "best.pt")["epoch"] == 2
    assert loop._stalled([{"val_gap": g} for g in (0.1, 0.2, 0.2)], 1)
    assert not loop._stalled([{"val_gap": g} for g in (0.1, 0.2, 0.3)], 1)
    with pytest.raises(InputError, match="--val"):
        train(_settings(data, tmp_path / "noval", val=None, early_stop=2))


def test_gradient_clipping_bounds_every_step(data, tmp_path):
    """--clip-grad-norm clips the true (unscaled) gradients' global norm before the optimizer sees them."""
    seen = []
    original = torch.optim.AdamW.step

    def record(self, *args, **kwargs):  # the norm the optimizer is about to apply, after any clipping
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = record
    try:
        train(_settings(data, tmp_path / "plain", epochs=1))
        plain, seen[:] = list(seen), []
        result = train(_settings(data, tmp_path / "clipped", epochs=1, clip_grad_norm=0.05))
    finally:
        torch.optim.AdamW.step = original
    assert max(plain) > 0.05  # the data's gradients exceed the bound, so the clip is exercised
    assert seen and max(seen) <= 0.05 * (1 + 1e-4)
    assert result["settings"]["clip_grad_norm"] == 0.05
    assert load_checkpoint(tmp_path / "clipped" / "best.pt")["settings"]["clip_grad_norm"] == 0.05


def test_a_collapsed_validation_gap_stops_the_run_and_is_recorded(data, tmp_path, monkeypatch):
    """Self and Cross Modal Attention at lr 1e-3 fell from 0.574 to 0.058 GAP and trained on: a run like that stops."""
    gaps = iter([0.02, 0.3, 0.5, 0.2, 0.9])

    def fake_evaluate(model, data, batch_size, device):
        return {"gap": next(gaps), "map": 0.0, "hit_at_one": 0.0, "perr": 0.0, "f1": 0.0}

    monkeypatch.setattr(loop, "evaluate_model", fake_evaluate)
    with pytest.raises(loop.TrainingDiverged, match=r"collapsed: validation GAP fell from 0.5000 \(epoch 3\) to 0.2000 "
                                                     r"at epoch 4.*lower --lr or --warmup-epochs"):
        train(_settings(data, tmp_path / "collapse", epochs=5))
    log = json.loads((tmp_path / "collapse" / "metrics.json").read_text())
    assert [r["epoch"] for r in log["history"]] == [1, 2, 3, 4]  # the collapsed epoch is shown, and nothing after it
    assert log["collapsed"] == {"epoch": 4, "val_gap": 0.2, "best_epoch": 3, "best_gap": 0.5}
    assert load_checkpoint(tmp_path / "collapse" / "best.pt")["epoch"] == 3
    # not a collapse: a fall from a best too small to mean anything, or a dip above half the best
    assert loop._collapse([{"epoch": 1, "val_gap": 0.04}, {"epoch": 2, "val_gap": 0.001}]) is None
    assert loop._collapse([{"epoch": 1, "val_gap": 0.6}, {"epoch": 2, "val_gap": 0.31}]) is None


def test_mixup_mixes_inputs_and_targets_with_one_lambda():
    settings = _settings_for_unit(mixup=0.4)
    rgb, audio = torch.randn(8, 1024), torch.randn(8, 128)
    targets = (torch.rand(8, 5) < 0.3).float()
    m_rgb, m_audio, m_targets = loop._mixup(rgb, audio, targets, settings, 1, 0)
    # every mixed row is lam * row + (1 - lam) * another row, with one lam for the batch
    assert m_targets.min() >= 0 and m_targets.max() <= 1
    assert not torch.equal(m_rgb, rgb)
    again = loop._mixup(rgb, audio, targets, settings, 1, 0)
    assert all(torch.equal(a, b) for a, b in zip(again, (m_rgb, m_audio, m_targets)))  # seeded


def _settings_for_unit(**overrides):
    return TrainSettings(model="fc_early_fusion", train="x", out="x", **overrides)


@pytest.mark.parametrize("option", [{"label_smoothing": 0.1}, {"mixup": 0.2}, {"batch_norm": True}])
def test_recipe_options_train_and_are_recorded(data, tmp_path, option):
    out = tmp_path / "opt"
    result = train(_settings(data, out, epochs=1, **option))
    assert result["history"][0]["val_gap"] > 0.2
    saved = load_checkpoint(out / "best.pt")
    assert all(saved["settings"][k] == v for k, v in option.items())
    if "batch_norm" in option:
        assert saved["model"]["batch_norm"] is True
    plain = train(_settings(data, tmp_path / "plain", epochs=1))
    if "label_smoothing" in option:  # soft targets: the loss cannot reach the hard-target loss
        assert result["history"][0]["train_loss"] > plain["history"][0]["train_loss"]


def test_distillation_from_teacher_checkpoints(data, tmp_path):
    train(_settings(data, tmp_path / "teacher", epochs=1))
    teacher = str(tmp_path / "teacher" / "best.pt")
    result = train(_settings(data, tmp_path / "student", model="moe", epochs=1, lr=1e-2,
                             distill_from=[teacher, teacher], distill_weight=0.7))
    assert result["history"][0]["val_gap"] > 0.2
    assert load_checkpoint(tmp_path / "student" / "best.pt")["settings"]["distill_from"] == [teacher, teacher]
    with pytest.raises(InputError, match="not found"):
        train(_settings(data, tmp_path / "s2", distill_from=[str(tmp_path / "missing.pt")]))
    other = tmp_path / "other"
    synthesize(other, videos=64, classes=5, seed=1)
    train(_settings(other, tmp_path / "t5", epochs=1))
    with pytest.raises(InputError, match="classes"):
        train(_settings(data, tmp_path / "s3", distill_from=[str(tmp_path / "t5" / "best.pt")]))


def test_cli_validates_recipe_options(data, tmp_path):
    from cli_harness import cli

    base = ["train", "-m", "fc_early_fusion", "--train", data / "train*.tfrecord", "--width", 16, "--threads", 1]
    for bad, mention in ((["--ema", 1], "--ema"), (["--distill-weight", 2], "--distill-weight"),
                         (["--early-stop", -1], "--early-stop"), (["--mixup", -0.5], "--mixup"),
                         (["--label-smoothing", 1], "--label-smoothing")):
        code, _, err = cli(*base, *bad, "-o", tmp_path / "bad")
        assert code == 2 and mention in err and err.count("error") == 1, (bad, err)
        assert not (tmp_path / "bad").exists()
    code, _, err = cli(*base, "--epochs", 1, "--batch-norm", "--ema", 0.9, "-o", tmp_path / "ok")
    assert code == 0, err
    code, _, err = cli(*base, "--epochs", 2, "--resume", "--mixup", 0.2, "-o", tmp_path / "ok")
    assert code == 2 and "mixup" in err
