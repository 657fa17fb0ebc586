"""The counting behind the allocators (:mod:`hf_mixmatch.allocators`): whole-weight targets, largest-remainder
rounding, water-filling under per-layer caps, and one global threshold over all scores.

A sparsity ``rho`` is always chosen so that ``floor(rho * n)`` in float64 is the intended count (:func:`fraction`).
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError

__all__ = [
    "achieved_sparsity",
    "check_target",
    "counts_to_sparsities",
    "fraction",
    "global_threshold",
    "round_counts",
    "target_count",
    "waterfill",
]


# --------------------------------------------------------------------------------------------------
# counting helpers


def check_target(target: float) -> None:
    if not isinstance(target, (int, float)) or math.isnan(target) or not (0.0 <= target < 1.0):
        raise ConfigError(f"target sparsity must be in [0, 1), got {target!r}; e.g. --target 0.5 prunes half the weights")


def target_count(target: float, total: int) -> int:
    """``floor(target * total)``, robust to float error such as ``0.29 * 100 = 28.999...``."""
    return int(math.floor(target * total + 1e-9 * max(1.0, target * total)))


def fraction(count: int, n: int) -> float:
    """A float ``rho`` with ``floor(rho * n) == count`` exactly (float64)."""
    if n == 0 or count <= 0:
        return 0.0
    if count >= n:
        return 1.0
    rho = count / n
    while math.floor(rho * n) < count:
        rho = math.nextafter(rho, 2.0)
    while math.floor(rho * n) > count:
        rho = math.nextafter(rho, -1.0)
    return rho


def achieved_sparsity(sparsities: dict[str, float], numels: dict[str, int]) -> float:
    """Zeros / all prunable weights that the mask stage produces: ``sum floor(rho*n) / sum n``."""
    total = sum(numels.values())
    pruned = sum(math.floor(sparsities.get(name, 0.0) * n) for name, n in numels.items())
    return pruned / total if total else 0.0


def counts_to_sparsities(counts: dict[str, int], numels: dict[str, int]) -> dict[str, float]:
    return {name: fraction(int(counts[name]), numels[name]) for name in numels}


def round_counts(ideal: dict[str, float], numels: dict[str, int], max_counts: dict[str, int], total: int) -> dict[str, int]:
    """Integer pruned counts close to ``ideal`` (real counts) that sum to ``total`` exactly.

    Largest-remainder rounding within ``[0, max_counts]``.
    """
    counts = {name: min(max_counts[name], max(0, math.floor(ideal[name] + 1e-9))) for name in numels}
    remainder = total - sum(counts.values())
    # layers by fractional part, largest first; then any layer with room
    order = sorted(numels, key=lambda name: -(ideal[name] - math.floor(ideal[name] + 1e-9)))
    while remainder != 0:
        step = 1 if remainder > 0 else -1
        moved = False
        for name in order if step > 0 else reversed(order):
            if remainder == 0:
                break
            new = counts[name] + step
            if 0 <= new <= max_counts[name]:
                counts[name] = new
                remainder -= step
                moved = True
        if not moved:
            raise ConfigError(f"cannot place {total} pruned weights under the per-layer limits; lower the target")
    return counts


def waterfill(slopes: dict[str, float], caps: dict[str, float], numels: dict[str, int], total: float) -> dict[str, float]:
    """Per-layer fractions ``f_l = min(cap_l, lam * slope_l)`` with ``sum f_l * n_l = total``.

    Layers whose ``lam * slope_l`` would pass their cap are fixed at the cap and ``lam`` is re-solved
    over the others, until no layer passes its cap.
    """
    capacity = sum(caps[name] * numels[name] for name in numels if slopes[name] > 0)
    if total > capacity * (1 + 1e-12) + 1e-9:
        raise ConfigError(f"infeasible: the layer limits allow at most {capacity:.0f} of the requested {total:.0f} weights")
    saturated: set[str] = {name for name in numels if slopes[name] <= 0}
    while True:
        free = [name for name in numels if name not in saturated]
        fixed = sum(caps[name] * numels[name] for name in saturated if slopes[name] > 0)
        denom = sum(slopes[name] * numels[name] for name in free)
        lam = (total - fixed) / denom if denom > 0 else 0.0
        over = [name for name in free if lam * slopes[name] > caps[name]]
        if not over:
            break
        saturated.update(over)
    out = {}
    for name in numels:
        if slopes[name] <= 0:
            out[name] = 0.0
        elif name in saturated:
            out[name] = caps[name]
        else:
            out[name] = lam * slopes[name]
    return out


# --------------------------------------------------------------------------------------------------
# the shared global-threshold helper


def global_threshold(scores_by_layer: dict[str, torch.Tensor], target: float) -> dict[str, float]:
    """Per-layer sparsities from one threshold over all scores (lowest pruned first).

    Exactly ``floor(target * N)`` weights are pruned in total: weights strictly below the k-th
    smallest score are pruned, and weights tied with it are taken in layer order until the count is
    reached (the mask stage ranks within a layer, so the tied ones it picks inside a layer may
    differ, but the count per layer is exact). ``+inf`` scores are never pruned; raise
    :class:`ConfigError` if the target needs them.
    """
    check_target(target)
    names = list(scores_by_layer)
    if not names:
        raise ConfigError("no prunable layers: nothing to allocate")
    sizes = [scores_by_layer[name].numel() for name in names]
    numels = dict(zip(names, sizes))
    total = sum(sizes)
    flat = torch.empty(total, dtype=torch.float64)  # one float64 copy of all scores, no more
    flats = flat.split(sizes)
    for name, view in zip(names, flats):
        view.copy_(scores_by_layer[name].detach().reshape(-1))
        if torch.isnan(view).any():
            raise ConfigError(f"scores of layer {name!r} contain NaN; recompute the signal (check the calibration data)")
    k = target_count(target, total)
    if k == 0:
        return {name: 0.0 for name in names}
    kth = flat.kthvalue(k).values
    if torch.isinf(kth) and kth > 0:
        n_finite = int(torch.isfinite(flat).sum()) + int((flat == -math.inf).sum())
        raise ConfigError(
            f"target {target} needs {k} pruned weights but only {n_finite} may be pruned "
            f"(the rest are protected); lower the target to at most {n_finite / total:.6f}"
        )
    below = torch.stack([(f < kth).sum() for f in flats])
    ties = torch.stack([(f == kth).sum() for f in flats])
    needed = k - int(below.sum())
    before = torch.cumsum(ties, 0) - ties
    take = (needed - before).clamp(min=0)
    take = torch.minimum(take, ties)
    counts = {name: int(b + t) for name, b, t in zip(names, below, take)}
    return counts_to_sparsities(counts, numels)
