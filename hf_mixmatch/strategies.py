"""Phase 2 of Mix-and-Match: per-layer sparsity strategies from a range table.

The paper's ten strategies map ``(ranges, layers) -> {layer name: sparsity}``. Three more
(:data:`SIGNAL_STRATEGIES`) also read the sensitivity signal's scores: ``signal_balanced`` / ``signal_p90`` put one
global threshold on the signal with every layer clipped to its range, at the overall sparsity of ``balanced`` /
``percentile_90``, so the signal decides *which* layers take more sparsity inside the architecture-aware ranges;
``signal_max`` does the same at ``aggressive``'s sparsity with the measured (observed / rd) maxima lifted, since
at that sparsity they would leave no choice. Names are shared by the CLI, the recipe file and the card.
"""

from __future__ import annotations

from typing import Callable

import torch

from .allocation_math import clipped_global_counts
from .errors import ConfigError
from .layers import LayerInfo, is_transformer_like
from .ranges import LayerRange, RangeTable

Strategy = Callable[..., dict[str, float]]
STRATEGIES: dict[str, Strategy] = {}
STRATEGY_DESCRIPTIONS: dict[str, str] = {}
SIGNAL_STRATEGIES: set[str] = set()  # strategies that need the signal's scores (``scores=`` keyword)

ATTENTION_ROLES = ("attn_qkv", "attn_proj")
MLP_ROLES = ("mlp_up", "mlp_down")


def register(name: str, description: str):
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        STRATEGY_DESCRIPTIONS[name] = description
        return fn

    return deco


def _interp(alpha: float) -> Strategy:
    def fn(ranges: RangeTable, layers: list[LayerInfo]) -> dict[str, float]:
        return {layer.name: ranges[layer.name].min + alpha * ranges[layer.name].delta for layer in layers}

    return fn


register("conservative", "every layer at rho_min")(_interp(0.0))
register("aggressive", "every layer at rho_max")(_interp(1.0))
register("balanced", "every layer at the middle of its range")(_interp(0.5))
for _alpha in (0.3, 0.5, 0.7, 0.9):
    register(f"percentile_{int(_alpha * 100)}", f"rho_min + {_alpha} * (rho_max - rho_min)")(_interp(_alpha))


@register("param_proportional", "rho_min + beta * delta, beta = min(1, 0.1 * |W_l| / mean_k |W_k|)")
def param_proportional(ranges: RangeTable, layers: list[LayerInfo]) -> dict[str, float]:
    mean = sum(layer.numel for layer in layers) / max(len(layers), 1)
    out = {}
    for layer in layers:
        beta = min(1.0, 0.1 * layer.numel / mean)
        out[layer.name] = ranges[layer.name].min + beta * ranges[layer.name].delta
    return out


def _late_stages(layers: list[LayerInfo]) -> set[int]:
    stages = sorted({layer.stage for layer in layers if layer.role != "classifier"})
    return set(stages[len(stages) // 2 :]) if stages else set()


@register("late_heavy", "late stages and the classifier at rho_max, the rest at rho_min")
def late_heavy(ranges: RangeTable, layers: list[LayerInfo]) -> dict[str, float]:
    late = _late_stages(layers)
    return {
        layer.name: ranges[layer.name].max if (layer.role == "classifier" or layer.stage in late) else ranges[layer.name].min
        for layer in layers
    }


@register("early_heavy", "CNNs: early stages at rho_max, the rest at rho_min; transformers: MLPs at rho_max, attention at rho_min")
def early_heavy(ranges: RangeTable, layers: list[LayerInfo]) -> dict[str, float]:
    if is_transformer_like(layers):
        return {
            layer.name: ranges[layer.name].max if layer.role in MLP_ROLES else ranges[layer.name].min for layer in layers
        }
    late = _late_stages(layers)
    return {
        layer.name: ranges[layer.name].max
        if (layer.role != "classifier" and layer.stage not in late)
        else ranges[layer.name].min
        for layer in layers
    }


PAPER_STRATEGIES = tuple(STRATEGIES)


def overall_sparsity(sparsities: dict[str, float], layers: list[LayerInfo]) -> float:
    total = sum(layer.numel for layer in layers)
    return sum(sparsities[layer.name] * layer.numel for layer in layers) / max(total, 1)


def _signal_strategy(reference: str) -> Strategy:
    def fn(ranges: RangeTable, layers: list[LayerInfo], *, scores: dict[str, torch.Tensor]) -> dict[str, float]:
        target = overall_sparsity(STRATEGIES[reference](ranges, layers), layers)
        counts = clipped_global_counts(scores, layers, ranges, target)
        return {layer.name: counts[layer.name] / layer.numel for layer in layers}

    return fn


for _name, _ref in (("signal_balanced", "balanced"), ("signal_p90", "percentile_90")):
    register(_name, f"one global threshold on the signal, every layer clipped to its range, at {_ref}'s overall "
                    "sparsity")(_signal_strategy(_ref))
    SIGNAL_STRATEGIES.add(_name)


def _measured(reason: str) -> bool:
    """A range measured from global runs (observed / rd), as opposed to a rule (clamp, preset, file)."""
    return reason.startswith(("observed", "rd:"))


@register("signal_max", "aggressive's overall sparsity by one global threshold on the signal; every layer kept at "
                        "or above rho_min, and below rho_max only where the range is a rule (clamp / preset)")
def signal_max(ranges: RangeTable, layers: list[LayerInfo], *, scores: dict[str, torch.Tensor]) -> dict[str, float]:
    # At aggressive's sparsity, clipping to the measured maxima leaves no freedom (every layer at its max, a
    # mix of the global runs' extremes that no criterion chose); here only the rules and the minima bind.
    target = overall_sparsity(STRATEGIES["aggressive"](ranges, layers), layers)
    lifted = RangeTable({layer.name: LayerRange(ranges[layer.name].min,
                                                1.0 if _measured(ranges[layer.name].reason) else ranges[layer.name].max,
                                                ranges[layer.name].reason) for layer in layers}, ranges.source)
    counts = clipped_global_counts(scores, layers, lifted, target)
    return {layer.name: counts[layer.name] / layer.numel for layer in layers}


SIGNAL_STRATEGIES.add("signal_max")

# Curve-driven strategies (runs with --ranges rd): the RD/DP allocation on the run's own distortion curves at a
# reference strategy's overall sparsity, every layer clipped to its range. With reconstruction-aware curves
# (--rd-distortion sparsegpt) this is the allocation the reconstructed model pays least for; the interpolating
# strategies only reach it at the ranges' ends. Added to the default set when the run has curves.
# One per interpolating strategy whose overall sparsity leaves RD/DP any freedom (at conservative's / aggressive's
# every layer sits at its range's end, so the clipped DP is that strategy itself): the front then has the
# reconstruction-aware allocation at every sparsity the family visits, not only at three of them.
CURVE_REFERENCES: dict[str, str] = {"rd_p30": "percentile_30", "rd_balanced": "balanced", "rd_p70": "percentile_70",
                                    "rd_p90": "percentile_90", "rd_param_proportional": "param_proportional",
                                    "rd_late_heavy": "late_heavy", "rd_early_heavy": "early_heavy"}
CURVE_STRATEGIES: tuple[str, ...] = tuple(CURVE_REFERENCES)


def _curve_strategy(reference: str) -> Strategy:
    def fn(ranges: RangeTable, layers: list[LayerInfo], *, curves: dict[str, torch.Tensor],
           grid: torch.Tensor) -> dict[str, float]:
        from .rd_dp import rd_strategy

        target = overall_sparsity(STRATEGIES[reference](ranges, layers), layers)
        dp = rd_strategy(curves, layers, target, grid=grid)
        return {layer.name: min(max(dp[layer.name], ranges[layer.name].min), ranges[layer.name].max) for layer in layers}

    return fn


for _name, _ref in CURVE_REFERENCES.items():
    register(_name, f"RD/DP allocation on the run's distortion curves at {_ref}'s overall sparsity, every layer "
                    "clipped to its range (needs --ranges rd)")(_curve_strategy(_ref))

# Default: the paper's ten plus the three signal-driven ones (3 more evaluations per signal; on the reference CNN
# they close the gap to global SNIP at 88-93% sparsity: docs/BENCHMARKS_quality.md). ``paper`` = the ten.
DEFAULT_STRATEGIES = tuple(s for s in STRATEGIES if s not in CURVE_STRATEGIES)
STRATEGY_SETS = {"default": DEFAULT_STRATEGIES, "paper": PAPER_STRATEGIES, "all": tuple(STRATEGIES)}


def default_strategies(ranges: str | None) -> tuple[str, ...]:
    """The default set: the 13, plus the curve-driven ones when the ranges come from RD/DP curves."""
    return DEFAULT_STRATEGIES + (CURVE_STRATEGIES if ranges == "rd" else ())


def strategy_sparsities(name: str, ranges: RangeTable, layers: list[LayerInfo], *,
                        scores: dict[str, torch.Tensor] | None = None, curves: dict[str, torch.Tensor] | None = None,
                        grid: torch.Tensor | None = None) -> dict[str, float]:
    try:
        fn = STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown strategy '{name}': choose from {list(STRATEGIES)}") from None
    if name in CURVE_STRATEGIES:
        if curves is None:
            raise ConfigError(f"strategy '{name}' needs RD/DP distortion curves: run with --ranges rd")
        return fn(ranges, layers, curves=curves, grid=grid)
    if name in SIGNAL_STRATEGIES:
        if scores is None:
            raise ConfigError(f"strategy '{name}' needs the signal's scores (scores=...)")
        return fn(ranges, layers, scores=scores)
    return fn(ranges, layers)

