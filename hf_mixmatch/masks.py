"""Phase 3: zero the lowest-scored weights of each layer, in place, and put them back afterwards.

One stash of the original prunable weights serves every variant: no deep copy of the model per variant.
Thresholds are vectorized per layer (``kthvalue`` + comparisons, ties in index order), so counts are exact and
masks do not depend on the device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ConfigError
from .layers import LayerInfo, get_weight


class WeightStash:
    """Copies of the original prunable weights (and BatchNorm running statistics, which
    :mod:`~hf_mixmatch.bn_recalibrate` re-estimates per variant), to restore after each variant."""

    def __init__(self, model: nn.Module, layers: list[LayerInfo]):
        from .bn_recalibrate import batchnorm_modules, batchnorm_state

        self.model = model
        self.layers = layers
        self.saved = {layer.name: get_weight(model, layer).detach().clone() for layer in layers}
        self.batchnorms = batchnorm_modules(model)
        self.batchnorm_saved = batchnorm_state(self.batchnorms)

    @torch.no_grad()
    def restore(self) -> None:
        from .bn_recalibrate import load_batchnorm_state

        for layer in self.layers:
            get_weight(self.model, layer).copy_(self.saved[layer.name])
        load_batchnorm_state(self.batchnorms, self.batchnorm_saved)

    def __enter__(self) -> "WeightStash":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def prune_count(sparsity: float, numel: int) -> int:
    """Number of weights a layer loses at ``sparsity``: floor(rho * n)."""
    if not 0.0 <= sparsity <= 1.0 or math.isnan(sparsity):
        raise ConfigError(f"a layer sparsity must be in [0, 1], got {sparsity}")
    return int(math.floor(sparsity * numel + 1e-9))


@torch.no_grad()
def apply_sparsities(
    model: nn.Module,
    layers: list[LayerInfo],
    sparsities: dict[str, float],
    scores: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Zero, per layer, the floor(rho * n) weights with the lowest score. Returns the keep-masks."""
    masks = {}
    for layer in layers:
        weight = get_weight(model, layer)
        k = prune_count(sparsities.get(layer.name, 0.0), weight.numel())
        if k == 0:
            masks[layer.name] = torch.ones_like(weight, dtype=torch.bool)
            continue
        score = scores[layer.name].to(weight.device).reshape(-1)
        if score.numel() != weight.numel():
            raise ConfigError(f"score of {layer.name} has {score.numel()} entries, the weight {weight.numel()}")
        mask = keep_mask(score.float(), k).view_as(weight)
        weight.masked_fill_(~mask, 0)
        masks[layer.name] = mask
    return masks


def keep_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Flat keep-mask that prunes exactly the ``k`` lowest of ``score`` (1-D); ties at the threshold are pruned
    in index order, so the mask is the same on every device and every run (``topk`` leaves ties to the kernel).

    One ``kthvalue`` and elementwise comparisons: no sort, no index scatter over the pruned weights.
    """
    if k <= 0:
        return torch.ones(score.numel(), dtype=torch.bool, device=score.device)
    if torch.isnan(score).any():  # NaN ranks above +inf (as in ``topk``): float64 keeps float32's order below it
        score = torch.nan_to_num(score.double(), nan=math.inf, posinf=torch.finfo(torch.float64).max, neginf=-math.inf)
    kth = score.kthvalue(k).values
    keep = score > kth
    surplus = int((~keep).sum()) - k  # ties at kth beyond the k we prune (no NaN left): keep the last ones
    if surplus > 0:
        tied = torch.nonzero(score == kth).flatten()
        keep[tied[len(tied) - surplus:]] = True
    return keep


@torch.no_grad()
def measure_sparsity(model: nn.Module, layers: list[LayerInfo]) -> tuple[float, dict[str, float]]:
    """(zeros / all prunable weights, per-layer zero fraction)."""
    zeros_total, total = 0, 0
    per = {}
    for layer in layers:
        w = get_weight(model, layer)
        z = int((w == 0).sum().item())
        per[layer.name] = z / w.numel()
        zeros_total += z
        total += w.numel()
    return (zeros_total / total if total else 0.0), per


def expected_sparsity(layers: list[LayerInfo], sparsities: dict[str, float]) -> float:
    """Overall sparsity an allocation will give (before counting weights that were already zero)."""
    total = sum(layer.numel for layer in layers)
    pruned = sum(prune_count(sparsities.get(layer.name, 0.0), layer.numel) for layer in layers)
    return pruned / total if total else 0.0
