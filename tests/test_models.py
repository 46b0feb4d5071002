"""Model zoo: paper parameter counts, shapes for every token setting, and the attention degeneracy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from avf.models import MODEL_NAMES, PAPER_PARAMS, REGISTRY, build_model, count_parameters, parameter_count  # noqa: E402
from avf.models.blocks import (  # noqa: E402
    CrossModalAttention,
    FCStack,
    GatedResidualBlock,
    ResidualBlock,
    SelfAttention,
)

SMALL = {"width": 64, "attention_width": 32, "heads": 4, "dropout": 0.0}


PAPER_M = {
    "fc_audio": 103, "fc_visual": 110, "fc_early_fusion": 111, "fc_late_fusion": 341,
    "fc_residual_early_fusion": 175, "fc_residual_late_fusion": 341, "fc_residual_gated_early_fusion": 175,
    "fc_residual_gated_late_fusion": 416, "fc_attention": 83, "residual_attention_early_fusion": 79,
    "residual_attention_late_fusion": 83, "attend_fusion": 72, "audio_visual_attention": 113,
    "self_cross_modal_attention": 172, "self_attended_cross_modal_fcrn": 172, "attend_fusion_audio_only": 35,
    "attend_fusion_visual_only": 37, "attend_fusion_no_attention": 22,
}
# The YouTube-8M challenge anchors of issue 13 (not in the paper: no paper count).
ANCHORS = ["moe", "context_gating_moe"]
PAPER_MODELS = [name for name in MODEL_NAMES if name not in ANCHORS]


def test_registry_covers_table_1_and_table_3():
    assert MODEL_NAMES == list(PAPER_M) + ANCHORS
    assert PAPER_PARAMS == {**PAPER_M, **dict.fromkeys(ANCHORS)}
    assert all(REGISTRY[name].description for name in MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_widths(name):
    with torch.device("meta"):
        model = build_model(name)
    widths = {"moe": 1, "context_gating_moe": 1024}  # moe has no hidden layer
    assert model.width == widths.get(name, 8192 if name.startswith("fc_") and name != "fc_attention" else 2048)
    assert model.config()["num_classes"] == 3862 and model.config()["dropout"] == 0.4


def test_attend_fusion_parameter_count_by_hand():
    w, classes = 2048, 4716
    fc = lambda i, o: i * o + o  # noqa: E731
    attention = 4 * w * w + 4 * w
    branches = fc(1024, w) + fc(128, w) + 4 * fc(w, w) + 2 * attention
    assert parameter_count("attend_fusion", num_classes=classes) == branches + fc(2 * w, w) + fc(w, classes)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_parameter_counts_within_ten_percent_of_the_paper(name):
    ours = parameter_count(name, num_classes=4716)
    assert abs(ours / (PAPER_PARAMS[name] * 1e6) - 1) <= 0.10


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shapes_for_every_token_setting(name):
    torch.manual_seed(0)
    single = build_model(name, num_classes=10, **SMALL).eval()
    assert single(torch.randn(3, 1024), torch.randn(3, 128)).shape == (3, 10)
    mean_std = build_model(name, num_classes=10, tokens="mean_std", **SMALL).eval()
    assert mean_std(torch.randn(3, 2048), torch.randn(3, 256)).shape == (3, 10)
    frames = build_model(name, num_classes=10, tokens="frames", **SMALL).eval()
    rgb, audio = torch.randn(2, 7, 1024), torch.randn(2, 7, 128)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 4:] = True  # video 1 has 4 real frames and 3 padding frames
    padded = frames(rgb, audio, mask)
    alone = frames(rgb[1:, :4], audio[1:, :4])
    assert padded.shape == (2, 10)
    assert torch.allclose(padded[1], alone[0], atol=1e-5)  # padding never changes the output


def _value_map(attention, x):
    """W_o (W_v x + b_v) + b_o: what attention over one token reduces to."""
    d = attention.embed_dim
    w_v, b_v = attention.in_proj_weight[2 * d:], attention.in_proj_bias[2 * d:]
    return (x @ w_v.T + b_v) @ attention.out_proj.weight.T + attention.out_proj.bias


def test_single_token_attention_is_a_linear_map():
    torch.manual_seed(0)
    block = SelfAttention(64, 8).eval()
    assert count_parameters(block) == 4 * 64**2 + 4 * 64
    x = torch.randn(5, 1, 64)
    with torch.no_grad():
        assert torch.allclose(block(x), _value_map(block.attention, x), atol=1e-6)


def test_single_token_cross_modal_attention_is_a_linear_map_of_the_other_modality():
    torch.manual_seed(0)
    block = CrossModalAttention(64, 8).eval()
    assert count_parameters(block) == 2 * (4 * 64**2 + 4 * 64)
    audio, visual = torch.randn(5, 1, 64), torch.randn(5, 1, 64)
    with torch.no_grad():
        visual_given_audio, audio_given_visual = block(audio, visual)
        assert torch.allclose(visual_given_audio, _value_map(block.audio_to_visual, visual), atol=1e-6)
        assert torch.allclose(audio_given_visual, _value_map(block.visual_to_audio, audio), atol=1e-6)


def test_residual_blocks_follow_equations_1_to_3():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16)
    stack = FCStack(16, [32, 16], dropout=0.0)
    assert stack.out_dim == 16 and stack(x).shape == (4, 3, 16)
    residual = ResidualBlock(16, dropout=0.0).eval()
    assert count_parameters(residual) == 2 * (16 * 16 + 16)
    assert torch.allclose(residual(x), residual.residual(x) + x)
    gated = GatedResidualBlock(16, dropout=0.0).eval()
    assert count_parameters(gated) == 2 * (16 * 16 + 16)
    g = torch.sigmoid(gated.gate(x))
    assert torch.allclose(gated(x), g * gated.residual(x) + (1 - g) * x)


def test_attention_ignores_padded_keys_and_survives_empty_rows():
    torch.manual_seed(0)
    block = SelfAttention(32, 4).eval()
    x = torch.randn(2, 6, 32)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 3:] = True
    mask[1] = True  # an empty video: all padding, must stay finite
    with torch.no_grad():
        out = block(x, mask)
        assert torch.allclose(out[0, :3], block(x[:1, :3])[0], atol=1e-5)
        assert torch.isfinite(out).all()
    model = build_model("audio_visual_attention", num_classes=5, tokens="frames", **SMALL).eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 6, 1024), torch.randn(2, 6, 128), mask)).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_rebuilds_the_same_model(name):
    model = build_model(name, num_classes=12, tokens="mean_std", **SMALL)
    config = model.config()
    assert set(config) == {"name", "num_classes", "rgb_dim", "audio_dim", "width", "attention_width", "dropout",
                           "heads", "tokens", "batch_norm"}
    assert json.loads(json.dumps(config)) == config  # plain, checkpoint-friendly values
    again = build_model(**config)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
    assert count_parameters(model) == count_parameters(again)


def test_bad_settings():
    with pytest.raises(ValueError, match="known models: fc_audio"):
        build_model("attend_fusoin")
    with pytest.raises(ValueError, match="tokens"):
        build_model("attend_fusion", tokens="clips", **SMALL)
    with pytest.raises(ValueError, match="divisible"):
        build_model("attend_fusion", width=32, attention_width=30, heads=4)
    with pytest.raises(TypeError):
        build_model("attend_fusion", depth=3)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = build_model("attend_fusion", num_classes=10, **SMALL)
    rgb, audio = torch.randn(64, 1024), torch.randn(64, 128)
    labels = (torch.randn(64, 10) > 1).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(rgb, audio), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_models_command_json():
    result = subprocess.run([sys.executable, "-m", "avf", "models", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == MODEL_NAMES
    assert set(rows[0]) == {"name", "params", "paper_params"}
    for row in rows:
        if row["name"] in ANCHORS:
            assert row["paper_params"] is None and row["params"] > 0
            continue
        assert abs(row["params"] / row["paper_params"] - 1) <= 0.10


def test_identity_attention_init_makes_single_token_attention_a_pass_through():
    from avf.models.blocks import SelfAttention, identity_attention_init_

    attention = SelfAttention(16, 4)
    assert identity_attention_init_(attention) == 1
    x = torch.randn(5, 1, 16)
    assert torch.allclose(attention(x), x, atol=1e-6)
