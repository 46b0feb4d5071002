"""Building blocks shared by the zoo. Every block works on token tensors (B, N, d).

With video-level features each modality is one token (N = 1); mean/std features give N = 2
and frame features N = T, so attention gets a real axis to attend over.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FCStack(nn.Sequential):
    """Linear -> ReLU -> Dropout for each width: the paper's fully connected layers.

    Applied per token, so (B, N, in_dim) -> (B, N, widths[-1]); ``out_dim`` is the last width
    (``in_dim`` for an empty stack, which is then the identity).
    """

    def __init__(self, in_dim: int, widths: Sequence[int], dropout: float = 0.4, batch_norm: bool = False):
        layers: list[nn.Module] = []
        for width in widths:
            # batch_norm: Linear -> BatchNorm1d -> ReLU -> Dropout (avf-compress folds the BN into the Linear)
            norm = [TokenBatchNorm(width)] if batch_norm else []
            layers += [nn.Linear(in_dim, width), *norm, nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        super().__init__(*layers)
        self.out_dim = in_dim


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the feature axis of (B, d) or token tensors (B, N, d) (statistics over B and N)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


class ResidualBlock(nn.Module):
    """Eq. 1: y = F(x) + x, with F a stack of ``layers`` width-preserving FC layers.

    Choice for the last layer: every layer of F is a full paper FC layer (Linear + ReLU +
    Dropout), the last one included, and no ReLU follows the sum. So F(x) >= 0 is a
    non-negative correction added to an exactly linear identity path; stacked blocks keep a
    clean identity path (as in pre-activation ResNets). Parameters: layers * (width^2 + width).
    """

    def __init__(self, width: int, layers: int = 2, dropout: float = 0.4):
        super().__init__()
        self.residual = FCStack(width, [width] * layers, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + x


class GatedResidualBlock(nn.Module):
    """Eq. 2-3: g = sigmoid(W_g x + b_g); y = g * F(x) + (1 - g) * x (context gating).

    F is built as in :class:`ResidualBlock` (last layer ends in ReLU + Dropout); the gate is one
    width x width Linear. Parameters: (layers + 1) * (width^2 + width).
    """

    def __init__(self, width: int, layers: int = 1, dropout: float = 0.4):
        super().__init__()
        self.residual = FCStack(width, [width] * layers, dropout)
        self.gate = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(x))
        return g * self.residual(x) + (1 - g) * x


class _Projected(nn.Module):
    """Run attention at ``attention_width`` inside a ``width`` stream (identity when equal/None)."""

    def __init__(self, width: int, attention_width: int | None):
        super().__init__()
        attention_width = attention_width or width
        self.dim, self.attention_width = width, attention_width
        same = width == attention_width
        self.into = nn.Identity() if same else nn.Linear(width, attention_width)
        self.back = nn.Identity() if same else nn.Linear(attention_width, width)


class SelfAttention(_Projected):
    """Eq. 4-5: softmax(Q K^T / sqrt(d)) V over the tokens of one modality.

    Over a single token the softmax is exactly 1, so the output is W_o (W_v x + b_v) + b_o and
    W_q, W_k never matter: the form the paper's parameter counts imply, kept faithfully here
    (the compressor folds it into one matrix).

    ``SelfAttention(dim, heads)`` is one ``nn.MultiheadAttention(dim, heads, batch_first=True)``
    with q = k = v = x: 4 dim^2 + 4 dim parameters. With ``attention_width`` set (and different
    from ``dim``) the tokens are first projected into that width and back afterwards.
    ``forward(x, mask=None)``: x (B, N, dim), mask (B, N) bool, True = padding; returns (B, N, dim).
    """

    def __init__(self, dim: int, heads: int = 8, *, attention_width: int | None = None):
        super().__init__(dim, attention_width)
        self.attention = nn.MultiheadAttention(self.attention_width, heads, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.into(x)
        return self.back(self.attention(h, h, h, key_padding_mask=_key_mask(mask), need_weights=False)[0])


class CrossModalAttention(_Projected):
    """Eq. 6-9: audio queries attend to visual tokens (X_v|a) and visual queries to audio (X_a|v).

    Two ``nn.MultiheadAttention(dim, heads, batch_first=True)``: 2 * (4 dim^2 + 4 dim) parameters.
    ``forward(audio, visual, mask=None)`` -> ``(X_v|a, X_a|v)``, each shaped like its query stream.
    One ``mask`` (B, N) serves both directions: with frame tokens audio and visual share the frame
    axis and its padding. Over single tokens each direction is again the linear map
    W_o (W_v x_other + b_v) + b_o.
    """

    def __init__(self, dim: int, heads: int = 8, *, attention_width: int | None = None):
        super().__init__(dim, attention_width)
        self.audio_to_visual = nn.MultiheadAttention(self.attention_width, heads, batch_first=True)
        self.visual_to_audio = nn.MultiheadAttention(self.attention_width, heads, batch_first=True)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor | None = None):
        a, v = self.into(audio), self.into(visual)
        mask = _key_mask(mask)
        visual_given_audio = self.audio_to_visual(a, v, v, key_padding_mask=mask, need_weights=False)[0]
        audio_given_visual = self.visual_to_audio(v, a, a, key_padding_mask=mask, need_weights=False)[0]
        return self.back(visual_given_audio), self.back(audio_given_visual)


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Key padding mask for attention; an all-padding row (an empty video) is left unmasked so
    softmax stays finite instead of NaN (its tokens are then dropped by :func:`masked_mean`)."""
    if mask is None:
        return None
    mask = mask.bool()
    return mask & ~mask.all(dim=1, keepdim=True)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis, ignoring padded tokens (mask True = padding)."""
    if mask is None:
        return tokens.mean(dim=1)
    keep = (~mask).unsqueeze(-1).to(tokens.dtype)
    return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


@torch.no_grad()
def identity_attention_init_(model: nn.Module) -> int:
    """Start every attention as a pass-through: W_v = W_o = I, zero biases. Returns how many.

    The paper's attention over one token is two linear maps in a row with no non-linearity; at
    PyTorch's default init they scramble the branch features and a deep stack starts slowly
    (real YouTube-8M, tools/probe_training_start.py: GAP 0.31 vs 0.23 after 60 steps; 0.643 vs
    0.625 after 10 epochs). Starting at the identity
    keeps the function class and lets training move away from a working network instead.
    Query/key projections keep their default init (they matter only with several tokens).
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            d = module.embed_dim
            module.in_proj_weight[2 * d:].copy_(torch.eye(d))
            module.in_proj_bias[2 * d:].zero_()
            module.out_proj.weight.copy_(torch.eye(d))
            module.out_proj.bias.zero_()
            count += 1
    return count


# ----------------------------------------------------------------------------- YouTube-8M challenge anchors


class ContextGating(nn.Module):
    """Context Gating (Miech et al. 2017, "Learnable pooling with Context Gating"): y = x * sigmoid(BN(W x)).

    As in the 2017 winners' code: the gate's Linear has no bias when batch-normalised (the BN's
    shift replaces it) and a bias otherwise. Not affine (the sigmoid), so avf-compress leaves it
    in place; the BN folds into the gate's Linear.
    """

    def __init__(self, dim: int, batch_norm: bool = True):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim, bias=not batch_norm),
                                  *([TokenBatchNorm(dim)] if batch_norm else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(x))


def _logsumexp(*parts: torch.Tensor) -> torch.Tensor:
    """log(sum(exp)) over the last axis of the concatenated parts, max-shifted (exports as plain ONNX ops)."""
    x = torch.cat(parts, dim=-1)
    top = x.amax(dim=-1, keepdim=True).detach()
    return (top + torch.log(torch.exp(x - top).sum(dim=-1, keepdim=True))).squeeze(-1)


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return -nn.functional.softplus(-x)


class MixtureOfExperts(nn.Module):
    """The YouTube-8M starter code's MoeModel as a classifier head, returning logits.

    Per class c: p_c = sum_k softmax(g_c)_k sigmoid(e_ck) over ``experts`` logistic experts and one
    dummy expert that always predicts 0 (its gate takes the rest of the softmax). ``gates`` is
    Linear(in, C*(k+1), no bias) and ``experts`` Linear(in, C*k), laid out class-major as the
    starter code reshapes them. With ``output_gating`` (the 2017 winners' "gating on
    probabilities"), p is re-weighted by a Context Gating over the class probabilities:
    p'_c = p_c sigmoid(BN(W p)_c), W a C x C matrix.

    The model returns logit(p) (or logit(p')) computed in log space, never as log(p / (1 - p)):
    log p = logsumexp_k(log g_k + log sigmoid(e_k)) and log(1 - p) = logsumexp(log g_dummy,
    log g_k + log sigmoid(-e_k)), so training keeps BCE-with-logits and every consumer (eval,
    export, distillation) applies the usual sigmoid. The softmax over experts is not affine:
    avf-compress folds nothing here except the output gate's BN.
    """

    def __init__(self, in_dim: int, num_classes: int, experts: int = 2, output_gating: bool = False):
        super().__init__()
        if isinstance(experts, bool) or not isinstance(experts, int) or experts < 1:
            raise ValueError(f"experts must be a positive integer, not {experts!r}")
        self.in_dim, self.num_classes, self.experts = in_dim, num_classes, experts
        self.gates = nn.Linear(in_dim, num_classes * (experts + 1), bias=False)
        self.expert_logits = nn.Linear(in_dim, num_classes * experts)
        self.output_gate = ContextGating(num_classes) if output_gating else None

    def log_probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p, log(1 - p)) of the mixture, each (B, C)."""
        k = self.experts
        log_gates = torch.log_softmax(self.gates(x).reshape(-1, self.num_classes, k + 1), dim=-1)
        experts = self.expert_logits(x).reshape(-1, self.num_classes, k)
        log_p = _logsumexp(log_gates[..., :k] + _log_sigmoid(experts))
        log_not_p = _logsumexp(log_gates[..., k:], log_gates[..., :k] + _log_sigmoid(-experts))
        return log_p, log_not_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_p, log_not_p = self.log_probabilities(x)
        if self.output_gate is None:
            return log_p - log_not_p
        z = self.output_gate.gate(torch.exp(log_p))
        # p' = p s(z); 1 - p' = (1 - p) + p s(-z)
        log_kept = log_p + _log_sigmoid(z)
        log_not_kept = _logsumexp(log_not_p.unsqueeze(-1), (log_p + _log_sigmoid(-z)).unsqueeze(-1))
        return log_kept - log_not_kept

    @torch.no_grad()
    def init_to_priors(self, prior: torch.Tensor) -> None:
        """Start near the label priors: with the gates at zero every expert gets 1/(k+1) of the
        softmax, so expert biases at logit(prior (k+1)/k) give p = prior (capped below 1)."""
        k = self.experts
        self.gates.weight.zero_()
        target = (prior * (k + 1) / k).clamp(1e-6, 1 - 1e-6)
        self.expert_logits.bias.copy_(torch.log(target / (1 - target)).repeat_interleave(k))
