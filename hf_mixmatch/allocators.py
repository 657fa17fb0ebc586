"""Standard baselines as *allocators*: how much of each layer to prune.

An allocator turns the prunable weights (and, for some, the signal scores) into an
:class:`Allocation`: per-layer sparsities plus the name of the score that ranks weights inside each
layer. The mask stage then zeroes, per layer, the ``floor(rho * n)`` lowest-scoring weights.

Registered by name in :data:`ALLOCATORS` (the names the CLI, config and card use):

- ``global_magnitude``: one ``|w|`` threshold over all prunable weights (MAG).
- ``uniform``: every layer pruned by the same fraction.
- ``uniform_plus``: uniform, but the first conv / patch embedding is dense and the classifier keeps
  at least 20% of its weights; the other layers are re-solved to meet the target.
- ``erk``: Erdős–Rényi-Kernel densities, ``density ∝ sum(shape) / numel``; over-full layers dense.
- ``lamp``: LAMP scores ``w_u^2 / sum_{v >= u} w_v^2`` (ascending ``|w|`` within a layer), one
  global threshold; every layer keeps its largest weight.
- ``snip`` / ``grasp``: one global threshold on the ``"snip"`` / ``"grasp"`` signal.
- ``wanda``: uniform per layer, weights ranked by ``|w| * ||x||_2`` inside each output row (``"activation_row"``).
- ``sparsegpt``: uniform per layer, mask chosen and kept weights updated by SparseGPT
  (:mod:`hf_mixmatch.reconstruct`; ``info["reconstruct"]`` tells the pipeline).
- ``rd``: the rate-distortion / dynamic-programming allocator (:mod:`hf_mixmatch.rd`); it needs
  distortion curves, see :class:`RDAllocator`.

Every allocator meets the target exactly in whole weights: the number of pruned weights,
``sum_l floor(rho_l * n_l)``, equals ``floor(target * N)`` (``rd``: at least that minus
``N / buckets``), and each ``rho_l`` is chosen so that ``floor(rho_l * n_l)`` in float64 is the
intended count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .allocation_math import (check_target, counts_to_sparsities, global_threshold, round_counts, target_count,
                              waterfill)
from .errors import ConfigError
from .layers import LayerInfo

__all__ = [
    "ALLOCATORS",
    "ALLOCATOR_SIGNALS",
    "Allocation",
    "Allocator",
    "RDAllocator",
    "allocate",
    "erk_densities",
    "lamp_scores",
]


@dataclass
class Allocation:
    """Per-layer sparsities chosen by an allocator, and the score that ranks weights in a layer."""

    method: str
    sparsities: dict[str, float]
    rank_by: str = "magnitude"
    info: dict = field(default_factory=dict)  # method-specific extras (e.g. rd: predicted distortion)

    def __post_init__(self) -> None:
        for name, rho in self.sparsities.items():
            if not (0.0 <= rho <= 1.0) or math.isnan(rho):
                raise ConfigError(f"allocation {self.method!r}: sparsity of layer {name!r} is {rho}, expected a value in [0, 1]")

    def to_dict(self) -> dict:
        return {"method": self.method, "sparsities": dict(self.sparsities), "rank_by": self.rank_by, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> "Allocation":
        return cls(method=d["method"], sparsities=dict(d["sparsities"]), rank_by=d.get("rank_by", "magnitude"), info=dict(d.get("info", {})))


class Allocator(Protocol):
    def __call__(
        self,
        *,
        weights: dict[str, torch.Tensor],
        layers: list[LayerInfo],
        target: float,
        scores: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> Allocation: ...


# --------------------------------------------------------------------------------------------------
# per-method formulas


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score of every weight: ``w_u^2 / sum_{v >= u} w_v^2`` over ascending ``|w|`` (float64)."""
    sq = weight.detach().reshape(-1).to(torch.float64).cpu() ** 2
    sorted_sq, order = torch.sort(sq, stable=True)
    suffix = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
    sorted_scores = torch.where(suffix > 0, sorted_sq / suffix.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(sq))
    scores = torch.empty_like(sorted_scores)
    scores[order] = sorted_scores
    return scores.reshape(weight.shape)


def erk_densities(layers: list[LayerInfo], target: float) -> dict[str, float]:
    """ERK densities: ``d_l = min(1, eps * sum(shape_l) / numel_l)`` with ``sum d_l n_l = (1 - target) N``."""
    check_target(target)
    numels = {layer.name: layer.numel for layer in layers}
    slopes = {layer.name: sum(layer.shape) / layer.numel for layer in layers}
    kept = (1.0 - target) * sum(numels.values())
    return waterfill(slopes, {name: 1.0 for name in numels}, numels, kept)


# --------------------------------------------------------------------------------------------------
# the allocators


def _numels(layers: list[LayerInfo]) -> dict[str, int]:
    if not layers:
        raise ConfigError("no prunable layers: nothing to allocate")
    return {layer.name: layer.numel for layer in layers}


def _signal(scores: dict[str, dict[str, torch.Tensor]] | None, name: str, layers: list[LayerInfo]) -> dict[str, torch.Tensor]:
    if not scores or name not in scores:
        raise ConfigError(f"allocator {name!r} needs the {name!r} signal; compute it first (signals=[..., {name!r}])")
    missing = [layer.name for layer in layers if layer.name not in scores[name]]
    if missing:
        raise ConfigError(f"the {name!r} signal lacks layers {missing[:3]}; recompute signals for this model")
    return {layer.name: scores[name][layer.name] for layer in layers}


def global_magnitude(*, weights, layers, target, scores=None) -> Allocation:
    """MAG: one ``|w|`` threshold over all prunable weights."""
    _numels(layers)
    mags = {layer.name: weights[layer.name].detach().abs() for layer in layers}
    return Allocation("global_magnitude", global_threshold(mags, target), "magnitude")


def uniform(*, weights, layers, target, scores=None) -> Allocation:
    """Every layer at ``target`` (counts rounded so the total is exact)."""
    check_target(target)
    numels = _numels(layers)
    total = target_count(target, sum(numels.values()))
    ideal = {name: target * n for name, n in numels.items()}
    counts = round_counts(ideal, numels, numels, total)
    return Allocation("uniform", counts_to_sparsities(counts, numels), "magnitude")


UNIFORM_PLUS_CLASSIFIER_MAX = 0.8


def _first_layer(layers: list[LayerInfo]) -> LayerInfo:
    for layer in layers:
        if layer.kind == "conv" or layer.role in ("stem", "patch_embed"):
            return layer
    return layers[0]


def _classifier(layers: list[LayerInfo]) -> LayerInfo:
    for layer in reversed(layers):
        if layer.role == "classifier":
            return layer
    return layers[-1]


def uniform_plus(*, weights, layers, target, scores=None) -> Allocation:
    """Uniform+, Gale et al.: first conv / patch embedding dense, classifier sparsity <= 0.8."""
    check_target(target)
    numels = _numels(layers)
    first, head = _first_layer(layers).name, _classifier(layers).name
    caps = {name: 1.0 for name in numels}
    caps[head] = UNIFORM_PLUS_CLASSIFIER_MAX
    caps[first] = 0.0
    slopes = {name: (0.0 if name == first else 1.0) for name in numels}
    total = target_count(target, sum(numels.values()))
    try:
        fractions = waterfill(slopes, caps, numels, total)
    except ConfigError as err:
        raise ConfigError(f"uniform_plus cannot reach target {target}: the first layer stays dense and the classifier keeps 20% ({err})") from None
    max_counts = {name: math.floor(caps[name] * numels[name] + 1e-9) for name in numels}
    counts = round_counts({name: fractions[name] * numels[name] for name in numels}, numels, max_counts, total)
    return Allocation("uniform_plus", counts_to_sparsities(counts, numels), "magnitude", {"dense": [first], "classifier": head})


def erk(*, weights, layers, target, scores=None) -> Allocation:
    """ERK: density proportional to ``sum(shape) / numel``; over-full layers are kept dense."""
    numels = _numels(layers)
    densities = erk_densities(layers, target)
    total = target_count(target, sum(numels.values()))
    ideal = {name: (1.0 - densities[name]) * numels[name] for name in numels}
    counts = round_counts(ideal, numels, numels, total)
    return Allocation("erk", counts_to_sparsities(counts, numels), "magnitude")


def lamp(*, weights, layers, target, scores=None) -> Allocation:
    """LAMP: one threshold on LAMP scores; the largest weight of every layer is kept."""
    _numels(layers)
    lamp_by_layer = {}
    for layer in layers:
        s = lamp_scores(weights[layer.name]).reshape(-1)
        s[s.argmax()] = math.inf  # the layer's largest weight (score 1) always survives
        lamp_by_layer[layer.name] = s
    # LAMP is monotone in |w| inside a layer, so magnitude ranks the same weights
    return Allocation("lamp", global_threshold(lamp_by_layer, target), "magnitude")


def snip(*, weights, layers, target, scores=None) -> Allocation:
    """SNIP: one threshold on ``|w * g|`` (the ``"snip"`` signal)."""
    return Allocation("snip", global_threshold(_signal(scores, "snip", layers), target), "snip")


def grasp(*, weights, layers, target, scores=None) -> Allocation:
    """GraSP: one threshold on ``w * Hg`` (the ``"grasp"`` signal; lowest pruned first)."""
    return Allocation("grasp", global_threshold(_signal(scores, "grasp", layers), target), "grasp")


def wanda(*, weights, layers, target, scores=None) -> Allocation:
    """Wanda: every layer at ``target``; inside a layer each output row loses its lowest ``|w| * ||x||_2``."""
    _signal(scores, "activation_row", layers)
    return Allocation("wanda", uniform(weights=weights, layers=layers, target=target).sparsities, "activation_row")


def sparsegpt(*, weights, layers, target, scores=None) -> Allocation:
    """SparseGPT: every layer at ``target``; its own OBS mask and weight update (the pipeline reconstructs)."""
    return Allocation("sparsegpt", uniform(weights=weights, layers=layers, target=target).sparsities, "magnitude",
                      {"reconstruct": "sparsegpt"})


class RDAllocator:
    """Rate-distortion / DP allocator (Xu et al., ICCV 2023), see :mod:`hf_mixmatch.rd`.

    Needs per-layer distortion curves. Either

    - ``ALLOCATORS["rd"].prepare(model, calib_inputs, forward=..., grid=..., cache_dir=...)``, which
      measures (or loads cached) curves and returns a *new* prepared allocator (the registered one
      stays stateless), then call it like any allocator; or
    - ``RDAllocator(curves=..., grid=...)`` with curves you already have; or
    - pass the curves as ``scores["rd"]`` (layer -> curve on ``linspace(0, 1, K)``).
    """

    def __init__(self, curves: dict[str, torch.Tensor] | None = None, *, grid: torch.Tensor | None = None, buckets: int = 10000):
        self.curves = curves
        self.grid = grid
        self.buckets = buckets

    def prepare(self, model, calib_inputs, *, forward=None, grid=None, reduction: str = "mean", cache_dir=None,
                batch_size: int = 64, layers=None, method: str = "magnitude") -> "RDAllocator":
        from .layers import list_prunable
        from .rd import default_grid, distortion_curves

        layers = layers if layers is not None else list_prunable(model)
        grid = default_grid() if grid is None else grid
        curves = distortion_curves(model, layers, calib_inputs, grid=grid, reduction=reduction, forward=forward, cache_dir=cache_dir,
                                    batch_size=batch_size, method=method)
        return RDAllocator(curves, grid=grid, buckets=self.buckets)

    def __call__(self, *, weights, layers, target, scores=None) -> Allocation:
        from .rd_dp import rd_strategy

        curves = self.curves
        if curves is None and scores and "rd" in scores:
            curves = scores["rd"]
        if curves is None:
            raise ConfigError("the 'rd' allocator needs distortion curves: use ALLOCATORS['rd'].prepare(model, calib_inputs) first")
        sparsities, info = rd_strategy(curves, layers, target, grid=self.grid, buckets=self.buckets, return_info=True)
        return Allocation("rd", sparsities, "magnitude", info)


ALLOCATORS: dict[str, Allocator] = {
    "global_magnitude": global_magnitude,
    "uniform": uniform,
    "uniform_plus": uniform_plus,
    "erk": erk,
    "lamp": lamp,
    "snip": snip,
    "grasp": grasp,
    "wanda": wanda,
    "sparsegpt": sparsegpt,
    "rd": RDAllocator(),
}
# signals an allocator reads from ``scores`` (the pipeline computes them when the allocator is asked for)
ALLOCATOR_SIGNALS: dict[str, tuple[str, ...]] = {"snip": ("snip",), "grasp": ("grasp",), "wanda": ("activation_row",)}


def allocate(method: str, *, weights, layers, target, scores=None) -> Allocation:
    """Run the allocator registered as ``method``."""
    if method not in ALLOCATORS:
        import difflib

        close = difflib.get_close_matches(method, ALLOCATORS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown allocator {method!r}; choose one of {sorted(ALLOCATORS)}.{hint}")
    return ALLOCATORS[method](weights=weights, layers=layers, target=target, scores=scores)
