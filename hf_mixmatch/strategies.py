"""Phase 2 of Mix-and-Match: ten per-layer sparsity strategies from a range table.

Each strategy maps ``(ranges, layers) -> {layer name: sparsity}``. Names are shared by the CLI, the
recipe file and the model card.
"""

from __future__ import annotations

from typing import Callable

from .errors import ConfigError
from .layers import LayerInfo, is_transformer_like
from .ranges import RangeTable

Strategy = Callable[[RangeTable, list[LayerInfo]], dict[str, float]]
STRATEGIES: dict[str, Strategy] = {}
STRATEGY_DESCRIPTIONS: dict[str, str] = {}

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


DEFAULT_STRATEGIES = tuple(STRATEGIES)


def strategy_sparsities(name: str, ranges: RangeTable, layers: list[LayerInfo]) -> dict[str, float]:
    try:
        fn = STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown strategy '{name}': choose from {list(STRATEGIES)}") from None
    return fn(ranges, layers)

