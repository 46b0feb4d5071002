"""The paper's networks (Table 1) and Attend-Fusion's ablations (Table 3), by stable name.

The paper gives widths (FC 8192 for baselines, 2048 for the proposed models), dropout 0.4 and
parameter counts, but not every layer. The layer plans below are inferred so that, with 4716
classes and 1024 + 128 inputs, every model lands within 10% of the paper's count (see
``avf models --classes 4716``). Notation: ``in -> W`` is a Linear+ReLU+Dropout layer,
``Res(k)`` a residual block of k width-preserving layers, ``Gate`` a gated residual block
with one layer, ``SA`` self-attention, ``XA`` cross-modal attention, ``pool`` a mean over tokens.

One note on attention width: the paper states 1024-wide attention, but its counts (72M for
Attend-Fusion) only fit attention as wide as the 2048 FC stream, so ``attention_width``
defaults to the stream width; set it to 1024 to project into a narrower attention.

Parameters at 4716 classes, 1024 + 128 inputs (ours / paper, millions): fc_audio 106.8/103,
fc_visual 114.1/110, fc_early_fusion 115.2/111, fc_late_fusion 316.5/341,
fc_residual_early_fusion 182.3/175, fc_residual_late_fusion 316.5/341,
fc_residual_gated_early_fusion 182.3/175, fc_residual_gated_late_fusion 450.8/416,
fc_attention 79.2/83, residual_attention_early_fusion 79.2/79, residual_attention_late_fusion
79.2/83, attend_fusion 70.8/72, audio_visual_attention 112.7/113, self_cross_modal_attention
179.9/172, self_attended_cross_modal_fcrn 171.5/172, attend_fusion_audio_only 35.1/35,
attend_fusion_visual_only 36.9/37, attend_fusion_no_attention 20.4/22 (all within 10%).

Inputs per ``tokens`` setting: ``single`` (faithful): rgb (B, rgb_dim), audio (B, audio_dim),
one token each; ``mean_std``: (B, 2*dim) mean and std features, two tokens each for attention
models and one flat vector for FC baselines; ``frames``: (B, T, dim) with an optional padding
mask (B, T), attended over by attention models and mean-pooled by FC baselines. Every model
returns logits; apply a sigmoid for probabilities.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from avf.models.blocks import (
    ContextGating,
    CrossModalAttention,
    FCStack,
    GatedResidualBlock,
    MixtureOfExperts,
    ResidualBlock,
    SelfAttention,
    masked_mean,
)

TOKENS = ("single", "mean_std", "frames")
BASELINE_WIDTH, PROPOSED_WIDTH = 8192, 2048


class FusionModel(nn.Module):
    """Common input handling and settings; subclasses implement ``features``."""

    name = ""
    uses_attention = False
    default_width = PROPOSED_WIDTH

    def __init__(self, num_classes: int = 3862, rgb_dim: int = 1024, audio_dim: int = 128, *, width: int | None = None,
                 attention_width: int | None = None, dropout: float = 0.4, heads: int = 8, tokens: str = "single",
                 batch_norm: bool = False):
        super().__init__()
        if tokens not in TOKENS:
            raise ValueError(f"tokens must be one of {', '.join(TOKENS)}, not {tokens!r}")
        for name, value in (("num_classes", num_classes), ("width", width), ("attention_width", attention_width),
                            ("heads", heads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        self.num_classes, self.rgb_dim, self.audio_dim = num_classes, rgb_dim, audio_dim
        self.width = self.default_width if width is None else width
        self.attention_width = self.width if attention_width is None else attention_width
        if self.uses_attention and self.attention_width % heads:
            raise ValueError(f"attention width {self.attention_width} is not divisible by {heads} heads")
        self.dropout, self.heads, self.tokens = dropout, heads, tokens
        # BatchNorm1d after every Linear of the FC stacks (Linear -> BN -> ReLU -> Dropout)
        self.batch_norm = bool(batch_norm)
        # Per-token input sizes: a flat FC baseline sees mean+std as one 2*dim vector.
        flat_mean_std = tokens == "mean_std" and not self.uses_attention
        self.rgb_in = rgb_dim * (2 if flat_mean_std else 1)
        self.audio_in = audio_dim * (2 if flat_mean_std else 1)

    def config(self) -> dict:
        """Constructor settings as a plain dict: ``build_model(**model.config())`` rebuilds the model."""
        return {"name": self.name, "num_classes": self.num_classes, "rgb_dim": self.rgb_dim,
                "audio_dim": self.audio_dim, "width": self.width, "attention_width": self.attention_width,
                "dropout": self.dropout, "heads": self.heads, "tokens": self.tokens, "batch_norm": self.batch_norm}

    def _tokens(self, x: torch.Tensor, dim: int, mask):
        if self.tokens == "frames":
            if x.dim() != 3:
                raise ValueError(f"tokens='frames' expects (B, T, {dim}) inputs, got {tuple(x.shape)}")
            return (x, mask) if self.uses_attention else (masked_mean(x, mask).unsqueeze(1), None)
        if self.tokens == "mean_std" and self.uses_attention:
            return x.reshape(x.shape[0], 2, dim), None
        return x.unsqueeze(1), None

    def forward(self, rgb: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """rgb, audio shaped per ``tokens``; mask (B, T) bool, True = padding (``frames`` only).

        Returns logits (B, num_classes): no sigmoid here; train with
        ``binary_cross_entropy_with_logits`` and apply ``torch.sigmoid`` at inference.
        """
        visual, token_mask = self._tokens(rgb, self.rgb_dim, mask)
        audio, _ = self._tokens(audio, self.audio_dim, mask)
        return self.classifier(self.features(visual, audio, token_mask))

    def features(self, visual: torch.Tensor, audio: torch.Tensor, mask) -> torch.Tensor:
        raise NotImplementedError

    def _classifier(self, in_dim: int) -> None:
        self.classifier = nn.Linear(in_dim, self.num_classes)


def _fc(model: FusionModel, in_dim: int, layers: int) -> FCStack:
    return FCStack(in_dim, [model.width] * layers, model.dropout, batch_norm=model.batch_norm)


def _sa(model: FusionModel) -> SelfAttention:
    return SelfAttention(model.width, model.heads, attention_width=model.attention_width)


# ----------------------------------------------------------------------------- baselines


class FCUnimodal(FusionModel):
    """FC Audio / FC Visual: in -> W -> W -> classes (the paper's "three FC layers")."""

    default_width = BASELINE_WIDTH
    modality = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.body = _fc(self, self.audio_in if self.modality == "audio" else self.rgb_in, 2)
        self._classifier(self.width)

    def features(self, visual, audio, mask):
        return self.body(audio if self.modality == "audio" else visual)[:, 0]


class FCAudio(FCUnimodal):
    """audio -> W -> W -> classes."""

    name, modality = "fc_audio", "audio"


class FCVisual(FCUnimodal):
    """rgb -> W -> W -> classes."""

    name, modality = "fc_visual", "visual"


class FCEarlyFusion(FusionModel):
    """concat(rgb, audio) -> W -> W -> classes."""

    name, default_width = "fc_early_fusion", BASELINE_WIDTH

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.body = _fc(self, self.rgb_in + self.audio_in, 2)
        self._classifier(self.width)

    def features(self, visual, audio, mask):
        return self.body(torch.cat([visual, audio], dim=-1))[:, 0]


class LateFusionBaseline(FusionModel):
    """Per-modality branches, concat (2W) -> W -> classes. Subclasses choose the branch."""

    default_width = BASELINE_WIDTH

    def branch(self, in_dim: int) -> nn.Module:
        raise NotImplementedError

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.visual_branch = self.branch(self.rgb_in)
        self.audio_branch = self.branch(self.audio_in)
        self.fusion = _fc(self, 2 * self.width, 1)
        self._classifier(self.width)

    def features(self, visual, audio, mask):
        return self.fusion(torch.cat([self.visual_branch(visual), self.audio_branch(audio)], dim=-1))[:, 0]


class FCLateFusion(LateFusionBaseline):
    """branches in -> W -> W; concat -> W -> classes."""

    name = "fc_late_fusion"

    def branch(self, in_dim):
        return _fc(self, in_dim, 2)


class FCResidualLateFusion(LateFusionBaseline):
    """branches in -> W, Res(1); concat -> W -> classes."""

    name = "fc_residual_late_fusion"

    def branch(self, in_dim):
        return nn.Sequential(_fc(self, in_dim, 1), ResidualBlock(self.width, 1, self.dropout))


class FCResidualGatedLateFusion(LateFusionBaseline):
    """branches in -> W, Gate; concat -> W -> classes."""

    name = "fc_residual_gated_late_fusion"

    def branch(self, in_dim):
        return nn.Sequential(_fc(self, in_dim, 1), GatedResidualBlock(self.width, 1, self.dropout))


class FCResidualEarlyFusion(FusionModel):
    """concat -> W, Res(2) -> classes."""

    name, default_width = "fc_residual_early_fusion", BASELINE_WIDTH

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.body = nn.Sequential(_fc(self, self.rgb_in + self.audio_in, 1), ResidualBlock(self.width, 2, self.dropout))
        self._classifier(self.width)

    def features(self, visual, audio, mask):
        return self.body(torch.cat([visual, audio], dim=-1))[:, 0]


class FCResidualGatedEarlyFusion(FCResidualEarlyFusion):
    """concat -> W, Gate -> classes."""

    name = "fc_residual_gated_early_fusion"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.body = nn.Sequential(_fc(self, self.rgb_in + self.audio_in, 1),
                                  GatedResidualBlock(self.width, 1, self.dropout))


# ----------------------------------------------------------------------------- proposed models


class AttendFusion(FusionModel):
    """branches in -> W -> W -> W, SA; pool; concat (2W) -> W -> classes."""

    name, uses_attention = "attend_fusion", True
    branch_layers, fusion_layers, attention = 3, 1, True
    modalities = ("visual", "audio")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ins = {"visual": self.rgb_in, "audio": self.audio_in}
        self.branches = nn.ModuleDict({m: _fc(self, ins[m], self.branch_layers) for m in self.modalities})
        self.attentions = nn.ModuleDict({m: _sa(self) for m in self.modalities}) if self.attention else None
        fused = self.width * len(self.modalities)
        self.fusion = _fc(self, fused, self.fusion_layers) if self.fusion_layers else nn.Identity()
        self._classifier(self.width if self.fusion_layers else fused)

    def attend(self, modality: str, x: torch.Tensor, mask) -> torch.Tensor:
        x = self.branches[modality](x)
        return self.attentions[modality](x, mask) if self.attentions is not None else x

    def features(self, visual, audio, mask):
        inputs = {"visual": visual, "audio": audio}
        pooled = [masked_mean(self.attend(m, inputs[m], mask), mask) for m in self.modalities]
        return self.fusion(torch.cat(pooled, dim=-1))


class AttendFusionAudioOnly(AttendFusion):
    """the audio branch (in -> W -> W -> W, SA) and the classifier."""

    name, modalities, fusion_layers = "attend_fusion_audio_only", ("audio",), 0


class AttendFusionVisualOnly(AttendFusion):
    """the visual branch and the classifier."""

    name, modalities, fusion_layers = "attend_fusion_visual_only", ("visual",), 0


class AttendFusionNoAttention(AttendFusion):
    """branches in -> W without attention; concat -> W -> classes (~20M, paper 22M)."""

    name, branch_layers, attention = "attend_fusion_no_attention", 1, False


class FCAttention(AttendFusion):
    """Attend-Fusion branches; concat -> W -> W -> W -> classes."""

    name, fusion_layers = "fc_attention", 3


class ResidualAttentionEarlyFusion(FusionModel):
    """concat -> W, then twice [Res(2), Res(2), SA]; pool -> classes."""

    name, uses_attention = "residual_attention_early_fusion", True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stem = _fc(self, self.rgb_in + self.audio_in, 1)
        self.stages = nn.ModuleList(
            nn.ModuleList([ResidualBlock(self.width, 2, self.dropout), ResidualBlock(self.width, 2, self.dropout), _sa(self)])
            for _ in range(2))
        self._classifier(self.width)

    def features(self, visual, audio, mask):
        x = self.stem(torch.cat([visual, audio], dim=-1))
        for first, second, attention in self.stages:
            x = attention(second(first(x)), mask)
        return masked_mean(x, mask)


class ResidualAttentionLateFusion(FusionModel):
    """branches in -> W, Res(2), SA; pool; concat -> W, Res(2) -> classes."""

    name, uses_attention = "residual_attention_late_fusion", True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.visual_branch = nn.Sequential(_fc(self, self.rgb_in, 1), ResidualBlock(self.width, 2, self.dropout))
        self.audio_branch = nn.Sequential(_fc(self, self.audio_in, 1), ResidualBlock(self.width, 2, self.dropout))
        self.visual_attention, self.audio_attention = _sa(self), _sa(self)
        self.fusion = nn.Sequential(_fc(self, 2 * self.width, 1), ResidualBlock(self.width, 2, self.dropout))
        self._classifier(self.width)

    def features(self, visual, audio, mask):
        v = masked_mean(self.visual_attention(self.visual_branch(visual), mask), mask)
        a = masked_mean(self.audio_attention(self.audio_branch(audio), mask), mask)
        return self.fusion(torch.cat([v, a], dim=-1))


class AudioVisualAttention(AttendFusion):
    """Attend-Fusion branches, then XA; concat pooled [X_a, X_v, X_v|a, X_a|v] (4W) -> W -> classes."""

    name = "audio_visual_attention"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cross = CrossModalAttention(self.width, self.heads, attention_width=self.attention_width)
        self.fusion = self.fusion_head()

    def fusion_head(self) -> nn.Module:
        return _fc(self, 4 * self.width, 1)

    def refine(self, streams: list[torch.Tensor], mask) -> list[torch.Tensor]:
        return streams

    def features(self, visual, audio, mask):
        v, a = self.attend("visual", visual, mask), self.attend("audio", audio, mask)
        v_given_a, a_given_v = self.cross(a, v, mask)
        streams = self.refine([a, v, v_given_a, a_given_v], mask)
        return self.fusion(torch.cat([masked_mean(s, mask) for s in streams], dim=-1))


class SelfCrossModalAttention(AudioVisualAttention):
    """Audio-Visual Attention plus SA on each of the four streams after the cross-modal step."""

    name = "self_cross_modal_attention"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream_attention = nn.ModuleList(_sa(self) for _ in range(4))

    def refine(self, streams, mask):
        return [attention(s, mask) for attention, s in zip(self.stream_attention, streams)]


class SelfAttendedCrossModalFCRN(AudioVisualAttention):
    """Audio-Visual Attention plus Res(2) on each stream; fusion 4W -> W then 3 x Res(2)."""

    name = "self_attended_cross_modal_fcrn"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream_residual = nn.ModuleList(ResidualBlock(self.width, 2, self.dropout) for _ in range(4))

    def fusion_head(self):
        return nn.Sequential(_fc(self, 4 * self.width, 1), *(ResidualBlock(self.width, 2, self.dropout) for _ in range(3)))

    def refine(self, streams, mask):
        return [block(s) for block, s in zip(self.stream_residual, streams)]


# ----------------------------------------------------------------------------- YouTube-8M challenge anchors


class MoE(FusionModel):
    """concat(rgb, audio), L2-normalised -> per-class softmax gating over 2 logistic experts (starter-code MoeModel)."""

    # no hidden layer (width and dropout are unused; the starter code's MoE has no dropout)
    name, default_width, experts, output_gating = "moe", 1, 2, False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.classifier = MixtureOfExperts(self.rgb_in + self.audio_in, self.num_classes, self.experts,
                                           output_gating=self.output_gating)

    def features(self, visual, audio, mask):
        # the starter code's train.py L2-normalises every model's input
        return nn.functional.normalize(torch.cat([visual, audio], dim=-1)[:, 0], dim=-1)


class ContextGatingMoE(MoE):
    """concat, L2-normalised -> W (BN, ReLU) -> Context Gating -> MoE (2 experts) -> Context Gating (2017 winners' head)."""

    name, default_width, output_gating = "context_gating_moe", 1024, True

    def __init__(self, *args, **kwargs):
        FusionModel.__init__(self, *args, **kwargs)
        # the winners' video-level head is batch-normalised throughout, whatever --batch-norm says
        self.hidden = FCStack(self.rgb_in + self.audio_in, [self.width], self.dropout, batch_norm=True)
        self.gating = ContextGating(self.width)
        self.classifier = MixtureOfExperts(self.width, self.num_classes, self.experts, output_gating=True)

    def features(self, visual, audio, mask):
        return self.gating(self.hidden(super().features(visual, audio, mask)))


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., FusionModel]
    paper_params_m: float | None
    paper_name: str
    paper_gap: float | None = None  # % on YouTube-8M, Table 1 / Table 3
    paper_f1: float | None = None
    paper_table: int = 1

    @property
    def description(self) -> str:
        """One line: the paper's name and our layer plan (the builder's docstring summary)."""
        return f"{self.paper_name}: {(inspect.getdoc(self.builder) or '').splitlines()[0]}"


_SPECS = [
    ModelSpec("fc_audio", FCAudio, 103, "FC Audio", 50.32, 49.09),
    ModelSpec("fc_visual", FCVisual, 110, "FC Visual", 76.25, 72.69),
    ModelSpec("fc_early_fusion", FCEarlyFusion, 111, "FC Early Fusion", 80.16, 75.25),
    ModelSpec("fc_late_fusion", FCLateFusion, 341, "FC Late Fusion", 80.87, 75.96),
    ModelSpec("fc_residual_early_fusion", FCResidualEarlyFusion, 175, "FC Residual Early Fusion", 80.73, 75.79),
    ModelSpec("fc_residual_late_fusion", FCResidualLateFusion, 341, "FC Residual Late Fusion", 79.1, 74.37),
    ModelSpec("fc_residual_gated_early_fusion", FCResidualGatedEarlyFusion, 175, "FC Residual Gated Early Fusion", 79.75, 74.2),
    ModelSpec("fc_residual_gated_late_fusion", FCResidualGatedLateFusion, 416, "FC Residual Gated Late Fusion", 79.2, 74.24),
    ModelSpec("fc_attention", FCAttention, 83, "FC Attention", 79.76, 75.09),
    ModelSpec("residual_attention_early_fusion", ResidualAttentionEarlyFusion, 79, "Residual Attention Early Fusion", 80.53, 75.34),
    ModelSpec("residual_attention_late_fusion", ResidualAttentionLateFusion, 83, "Residual Attention Late Fusion", 80.59, 75.56),
    ModelSpec("attend_fusion", AttendFusion, 72, "Attend-Fusion", 80.55, 75.64),
    ModelSpec("audio_visual_attention", AudioVisualAttention, 113, "Audio-Visual Attention Network", 80.44, 75.56),
    ModelSpec("self_cross_modal_attention", SelfCrossModalAttention, 172, "Self and Cross Modal Attention Network", 80.61, 75.52),
    ModelSpec("self_attended_cross_modal_fcrn", SelfAttendedCrossModalFCRN, 172, "Self-Attended Cross-Modal FCRN Network", 80.68, 75.45),
    ModelSpec("attend_fusion_audio_only", AttendFusionAudioOnly, 35, "Attend-Fusion, audio only (Table 3)", 49.59, 49.15, 3),
    ModelSpec("attend_fusion_visual_only", AttendFusionVisualOnly, 37, "Attend-Fusion, visual only (Table 3)", 76.96, 71.87, 3),
    ModelSpec("attend_fusion_no_attention", AttendFusionNoAttention, 22, "Attend-Fusion, no attention (Table 3)", 79.06, 73.31, 3),
    # YouTube-8M challenge anchors (not in the paper): paper_table 0
    ModelSpec("moe", MoE, None, "MoE (starter code, 2 experts)", paper_table=0),
    ModelSpec("context_gating_moe", ContextGatingMoE, None, "Context Gating MoE (2017 winners' video-level head)",
              paper_table=0),
]
REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
MODEL_NAMES: list[str] = list(REGISTRY)
PAPER_PARAMS: dict[str, float | None] = {spec.name: spec.paper_params_m for spec in _SPECS}


def build_model(name: str, num_classes: int = 3862, rgb_dim: int = 1024, audio_dim: int = 128, *,
                width: int | None = None, attention_width: int | None = None, dropout: float = 0.4,
                heads: int = 8, tokens: str = "single", batch_norm: bool = False) -> FusionModel:
    """Build a registry model by name.

    ``width`` defaults to 8192 for the FC baselines and 2048 for the proposed models;
    ``attention_width`` to ``width``; ``tokens`` is ``single``, ``mean_std`` or ``frames`` (see the
    module docstring). The model returns logits; ``build_model(**model.config())`` rebuilds it.
    Unknown names raise ``ValueError`` listing the known ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return REGISTRY[name].builder(num_classes, rgb_dim, audio_dim, width=width, attention_width=attention_width,
                                  dropout=dropout, heads=heads, tokens=tokens, batch_norm=batch_norm)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (works on the meta device, where no weights are allocated)."""
    return sum(p.numel() for p in model.parameters())


def parameter_count(name: str, **kwargs) -> int:
    """Parameters of a model without allocating its weights (built on the meta device)."""
    with torch.device("meta"):
        return count_parameters(build_model(name, **kwargs))
