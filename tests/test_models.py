"""Model zoo: paper parameter counts, shapes for every token setting, and the attention degeneracy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from avf.models import MODEL_NAMES, PAPER_PARAMS, build_model, count_parameters, parameter_count  # noqa: E402
from avf.models.blocks import SelfAttention  # noqa: E402

SMALL = {"width": 32, "attention_width": 16, "heads": 4, "dropout": 0.0}


def test_registry_covers_table_1_and_table_3():
    assert len(MODEL_NAMES) == 18 and "attend_fusion" in MODEL_NAMES
    assert all(PAPER_PARAMS[name] for name in MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
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


def test_single_token_attention_is_a_linear_map():
    torch.manual_seed(0)
    block = SelfAttention(64, 64, heads=8).eval()
    x = torch.randn(5, 1, 64)
    attention = block.attention
    w_v = attention.in_proj_weight[128:]
    b_v = attention.in_proj_bias[128:]
    expected = (x @ w_v.T + b_v) @ attention.out_proj.weight.T + attention.out_proj.bias
    assert torch.allclose(block(x), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["attend_fusion", "fc_residual_gated_late_fusion", "self_attended_cross_modal_fcrn"])
def test_config_rebuilds_the_same_model(name):
    model = build_model(name, num_classes=12, **SMALL)
    again = build_model(**model.config())
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
    assert count_parameters(model) == count_parameters(again)


def test_bad_settings():
    with pytest.raises(ValueError, match="known models: fc_audio"):
        build_model("attend_fusoin")
    with pytest.raises(ValueError, match="tokens"):
        build_model("attend_fusion", tokens="clips", **SMALL)
    with pytest.raises(ValueError, match="divisible"):
        build_model("attend_fusion", width=32, attention_width=30, heads=4)


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
        assert abs(row["params"] / row["paper_params"] - 1) <= 0.10
