"""Lossless folding: the exact same function with fewer parameters and fewer weight bytes to read.

Three rewrites, all exact up to float rounding:

* Dropout is dropped (it is the identity at inference).
* Batch normalisation (eval mode: a per-channel affine map) merges into the Linear before it
  (FC stacks built with ``--batch-norm``, the Context Gating MoE's hidden layer and gates). The
  anchors' context gating (x * sigmoid(W x)) and mixture-of-experts softmax are not affine and stay.
* Attention over a single token is a linear map: softmax over one key is 1, so the output is
  ``W_o (W_v x + b_v) + b_o`` (with the optional ``into``/``back`` projections around it) and
  the query/key projections never matter. Each attention becomes one ``Linear``; a cross-modal
  attention becomes two (each direction depends on the other stream only).
* Consecutive affine maps with nothing between them are merged. In the late-fusion attention
  models (Attend-Fusion and its family) everything between the branch outputs and the first
  fusion layer -- attention, the mean over one token, concatenation, cross-modal attention --
  is affine, so it collapses into the fusion layer's (or the classifier's) own weight matrix.

Folded weights are computed in float64 and checked against the original on probe inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from avf.models.blocks import CrossModalAttention, FCStack, SelfAttention
from avf.models.zoo import AttendFusion, AudioVisualAttention, FusionModel, SelfCrossModalAttention


@dataclass
class FoldResult:
    model: nn.Module
    params_before: int
    params_after: int
    rewrites: list[str]
    max_logit_difference: float | None = None  # measured on check_inputs, when given


class FoldedAttention(nn.Module):
    """A single-token self-attention as the one affine map it computes."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(x)


class FoldedCrossModalAttention(nn.Module):
    """A single-token cross-modal attention: X_v|a depends on the visual token only, X_a|v on audio."""

    def __init__(self, visual_given_audio: nn.Linear, audio_given_visual: nn.Linear):
        super().__init__()
        self.visual_given_audio, self.audio_given_visual = visual_given_audio, audio_given_visual

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor | None = None):
        return self.visual_given_audio(visual), self.audio_given_visual(audio)


class FoldedLateFusion(nn.Module):
    """Branches, then one merged linear over their concatenated outputs, then the remaining head.

    ``forward(rgb, audio)`` takes (B, rgb_dim) and (B, audio_dim) and returns logits, like the
    model it was folded from. ``classifier`` is kept addressable for pruning (never pruned).
    """

    def __init__(self, source: FusionModel, branches: dict[str, nn.Module], merged: nn.Linear,
                 head: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.name, self.num_classes = source.name, source.num_classes
        self.rgb_dim, self.audio_dim = source.rgb_dim, source.audio_dim
        self.modalities = tuple(branches)
        self.branches = nn.ModuleDict(branches)
        self.merged, self.head, self.classifier = merged, head, classifier

    def forward(self, rgb: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        inputs = {"visual": rgb, "audio": audio}
        hidden = torch.cat([self.branches[m](inputs[m]) for m in self.modalities], dim=-1)
        return self.classifier(self.head(self.merged(hidden)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fold_model(model: FusionModel, check_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
               tolerance: float = 1e-4) -> FoldResult:
    """Fold ``model`` (left untouched) into an equivalent smaller module, for inference only.

    ``check_inputs`` (rgb, audio), e.g. real samples, are run through both models; a folded
    model whose logits differ by more than ``tolerance`` times the largest logit (at least 1)
    is a bug and raises.
    """
    if getattr(model, "tokens", "single") != "single":
        raise ValueError(f"folding needs single-token inputs (tokens='single'), this model has tokens={model.tokens!r}: "
                         "attention over several tokens is not linear")
    before = count_parameters(model)
    folded = copy.deepcopy(model).eval()
    rewrites: list[str] = []
    dropped = _drop_dropout(folded)
    if dropped:
        rewrites.append(f"dropped {dropped} dropout layers")
    merged_norms = _fold_batch_norm(folded)
    if merged_norms:
        rewrites.append(f"merged {merged_norms} batch norms into the linear layer before each")
    if _late_fusion_is_affine(folded):
        folded = _fold_late_fusion(folded)
        rewrites.append("merged attention, pooling and concatenation into the first fusion layer")
    else:
        count = _fold_attention_in_place(folded)
        if count:
            rewrites.append(f"replaced {count} single-token attention blocks by one linear map each")
    folded.eval()
    difference = None
    if check_inputs is not None:
        difference, scale = max_logit_difference(model, folded, *check_inputs, with_scale=True)
        if not difference <= tolerance * max(1.0, scale):
            raise RuntimeError(f"folding changed the logits by {difference:.3g} (largest logit {scale:.3g}); this is a bug")
    return FoldResult(folded, before, count_parameters(folded), rewrites, difference)


def max_logit_difference(reference: nn.Module, other: nn.Module, rgb: torch.Tensor, audio: torch.Tensor,
                         with_scale: bool = False):
    """Largest absolute logit difference (and, with ``with_scale``, the largest reference logit)."""
    was_training = reference.training
    reference.eval()
    with torch.inference_mode():
        expected = reference(rgb, audio)
        difference = (expected - other(rgb, audio)).abs().max().item()
    reference.train(was_training)
    return (difference, expected.abs().max().item()) if with_scale else difference


# ----------------------------------------------------------------------------- rewrites


def _drop_dropout(model: nn.Module) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, nn.Identity())
                count += 1
    return count


@torch.no_grad()
def _fold_batch_norm(model: nn.Module) -> int:
    """Merge every eval-mode BatchNorm1d that directly follows a Linear (in one Sequential) into it."""
    count = 0
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (name, linear), (norm_name, norm) in zip(children, children[1:]):
            if not (isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d) and norm.track_running_stats
                    and norm.running_mean is not None):
                continue
            scale = (norm.weight.double() if norm.affine else 1.0) / torch.sqrt(norm.running_var.double() + norm.eps)
            shift = norm.bias.double() if norm.affine else 0.0
            bias = linear.bias.double() if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
            merged = nn.Linear(linear.in_features, linear.out_features)
            merged.weight.copy_((linear.weight.double() * scale[:, None]).to(linear.weight.dtype))
            merged.bias.copy_(((bias - norm.running_mean.double()) * scale + shift).to(linear.weight.dtype))
            setattr(parent, name, merged)
            setattr(parent, norm_name, nn.Identity())
            count += 1
    return count


@torch.no_grad()
def _affine_as_linear(function, in_dim: int, dtype=torch.float32) -> nn.Linear:
    """The nn.Linear equal to an affine ``function`` of (N, in_dim), measured in float64."""
    basis = torch.cat([torch.zeros(1, in_dim, dtype=torch.float64), torch.eye(in_dim, dtype=torch.float64)])
    out = function(basis)
    bias = out[0]
    weight = (out[1:] - bias).T  # (out_dim, in_dim)
    linear = nn.Linear(in_dim, weight.shape[0])
    linear.weight.copy_(weight.to(dtype))
    linear.bias.copy_(bias.to(dtype))
    return linear


def _single_token_attention(module: SelfAttention) -> nn.Linear:
    attention = copy.deepcopy(module).double()

    def apply(x):  # (N, dim) as N videos of one token each
        return attention(x.unsqueeze(1)).squeeze(1)

    return _affine_as_linear(apply, module.dim)


def _cross_modal_directions(module: CrossModalAttention) -> tuple[nn.Linear, nn.Linear]:
    """Over single tokens the query never matters: X_v|a is a function of v alone, X_a|v of a alone."""
    cross = copy.deepcopy(module).double()

    def visual_given_audio(v):
        return cross(torch.zeros_like(v).unsqueeze(1), v.unsqueeze(1))[0].squeeze(1)

    def audio_given_visual(a):
        return cross(a.unsqueeze(1), torch.zeros_like(a).unsqueeze(1))[1].squeeze(1)

    return _affine_as_linear(visual_given_audio, module.dim), _affine_as_linear(audio_given_visual, module.dim)


def _fold_attention_in_place(model: nn.Module) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SelfAttention):
                setattr(parent, name, FoldedAttention(_single_token_attention(child)))
                count += 1
            elif isinstance(child, CrossModalAttention):
                setattr(parent, name, FoldedCrossModalAttention(*_cross_modal_directions(child)))
                count += 1
    return count


def _late_fusion_is_affine(model: nn.Module) -> bool:
    """True where everything between the branch outputs and the first fusion linear is affine."""
    if not isinstance(model, AttendFusion) or model.attentions is None:
        return False
    if type(model).features is AttendFusion.features:
        return True
    return type(model).refine in (AudioVisualAttention.refine, SelfCrossModalAttention.refine)


def _fold_late_fusion(model: AttendFusion) -> FoldedLateFusion:
    """Collapse [attention ... concat] + first fusion Linear into one Linear over the branch outputs."""
    _fold_attention_in_place(model)
    head_modules = list(model.fusion) if isinstance(model.fusion, nn.Sequential) else [model.fusion]
    if head_modules and isinstance(head_modules[0], FCStack):  # flatten the first FC stack
        head_modules = list(head_modules[0]) + head_modules[1:]
    if head_modules and isinstance(head_modules[0], nn.Linear):
        first, rest, classifier = head_modules[0], head_modules[1:], model.classifier
    else:  # no fusion layers (one-modality ablations): the classifier is the next linear map
        first, rest, classifier = model.classifier, [], None
    widths = {m: model.branches[m].out_dim for m in model.modalities}
    stream = copy.deepcopy(model).double()
    first64 = copy.deepcopy(first).double()

    def between(hidden):  # hidden: concatenated branch outputs (N, sum widths)
        parts = dict(zip(model.modalities, hidden.split([widths[m] for m in model.modalities], dim=-1)))
        if isinstance(model, AudioVisualAttention):
            v = stream.attentions["visual"](parts["visual"].unsqueeze(1))
            a = stream.attentions["audio"](parts["audio"].unsqueeze(1))
            v_given_a, a_given_v = stream.cross(a, v)
            streams = stream.refine([a, v, v_given_a, a_given_v], None)
            pooled = torch.cat([s.squeeze(1) for s in streams], dim=-1)
        else:
            pooled = torch.cat([stream.attentions[m](parts[m].unsqueeze(1)).squeeze(1) for m in model.modalities], dim=-1)
        return first64(pooled)

    merged = _affine_as_linear(between, sum(widths.values()))
    branches = {m: model.branches[m] for m in model.modalities}
    if classifier is None:
        return FoldedLateFusion(model, branches, nn.Identity(), nn.Identity(), merged)
    return FoldedLateFusion(model, branches, merged, nn.Sequential(*rest), classifier)
