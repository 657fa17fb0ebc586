"""Phase 3: zero the lowest-scored weights of each layer, in place, and put them back afterwards.

One stash of the original prunable weights serves every variant: no deep copy of the model per variant.
Thresholds are vectorized per layer (``topk`` on the flattened scores), so counts are exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ConfigError
from .layers import LayerInfo, get_weight


class WeightStash:
    """Copies of the original prunable weights, to restore after each variant."""

    def __init__(self, model: nn.Module, layers: list[LayerInfo]):
        self.model = model
        self.layers = layers
        self.saved = {layer.name: get_weight(model, layer).detach().clone() for layer in layers}

    @torch.no_grad()
    def restore(self) -> None:
        for layer in self.layers:
            get_weight(self.model, layer).copy_(self.saved[layer.name])

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
        mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
        if k > 0:
            score = scores[layer.name].to(weight.device).reshape(-1)
            if score.numel() != weight.numel():
                raise ConfigError(f"score of {layer.name} has {score.numel()} entries, the weight {weight.numel()}")
            idx = torch.topk(score.float(), k, largest=False, sorted=False).indices
            mask[idx] = False
            weight.view(-1)[idx] = 0
        masks[layer.name] = mask.view_as(weight)
    return masks


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
