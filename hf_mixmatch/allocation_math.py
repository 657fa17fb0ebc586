"""The counting behind the allocators (:mod:`hf_mixmatch.allocators`): whole-weight targets, largest-remainder
rounding, water-filling under per-layer caps, and one global threshold over all scores.

A sparsity ``rho`` is always chosen so that ``floor(rho * n)`` in float64 is the intended count (:func:`fraction`).
"""

from __future__ import annotations

import math
import struct

import torch

from .errors import ConfigError

__all__ = [
    "achieved_sparsity",
    "check_target",
    "clipped_global_counts",
    "counts_to_sparsities",
    "fraction",
    "global_threshold",
    "global_thresholds",
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
    return global_thresholds(scores_by_layer, (target,))[0]


def global_thresholds(scores_by_layer: dict[str, torch.Tensor], targets) -> list[dict[str, float]]:
    """:func:`global_threshold` at each of ``targets``, from one flat copy of the scores (in the widest float
    dtype of the layers, at least float32, so every layer's values are kept exactly; float64 for integer
    scores)."""
    for target in targets:
        check_target(target)
    names = list(scores_by_layer)
    if not names:
        raise ConfigError("no prunable layers: nothing to allocate")
    sizes = [scores_by_layer[name].numel() for name in names]
    numels = dict(zip(names, sizes))
    total = sum(sizes)
    dtype = torch.float32
    for name in names:  # integer scores: float64, as wide as a copy gets
        layer_dtype = scores_by_layer[name].dtype
        dtype = torch.promote_types(dtype, layer_dtype) if layer_dtype.is_floating_point else torch.float64
    flat = torch.empty(total, dtype=dtype)  # one copy of all scores, no more
    flats = flat.split(sizes)
    for name, view in zip(names, flats):
        view.copy_(scores_by_layer[name].detach().reshape(-1))
        if torch.isnan(view).any():
            raise ConfigError(f"scores of layer {name!r} contain NaN; recompute the signal (check the calibration data)")
    # ascending targets: the k-th smallest score is searched for only among the scores above the previous
    # target's threshold (``rest``; ``at_or_below`` scores lie at or below it), so each search is over what is left
    by_target: dict[float, dict[str, float]] = {}
    rest, at_or_below, kth = flat, 0, None
    ascending = sorted(set(targets))
    for i, target in enumerate(ascending):
        k = target_count(target, total)
        if k == 0:
            by_target[target] = {name: 0.0 for name in names}
            continue
        if k > at_or_below:
            kth = rest.kthvalue(k - at_or_below).values
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
        take = torch.minimum((needed - before).clamp(min=0), ties)
        counts = {name: int(b + t) for name, b, t in zip(names, below, take)}
        by_target[target] = counts_to_sparsities(counts, numels)
        if i + 1 < len(ascending):  # what the next target searches
            at_or_below, rest = int(below.sum() + ties.sum()), rest[rest > kth]
    return [by_target[target] for target in targets]


# --------------------------------------------------------------------------------------------------
# one global threshold with every layer clipped to a range (the signal_* strategies)

_SORTED: list = []  # one entry (key, scores kept alive, sorted per layer): a signal's strategies share its sort


def _sorted_scores(scores: dict[str, torch.Tensor], names: list[str], numel: dict[str, int]) -> dict:
    """Each layer's scores sorted ascending in float64; reused while the same tensors (same versions) come back."""
    tensors = [scores.get(n) for n in names]
    key = tuple((n, id(t), getattr(t, "_version", None)) for n, t in zip(names, tensors))
    if _SORTED and _SORTED[0][0] == key:
        return _SORTED[0][2]
    srt = {}
    for n, t in zip(names, tensors):
        if t is None or t.numel() != numel[n]:
            raise ConfigError(f"signal scores for layer {n!r} are missing or have the wrong size: recompute the signal")
        srt[n] = t.detach().reshape(-1).double().sort().values
    _SORTED[:] = [(key, tensors, srt)]  # the tensors stay referenced, so their ids are not reused meanwhile
    return srt


def _order_key(x: float) -> int:
    """An integer that orders float64 values as the values are ordered (bisection over the doubles)."""
    b = struct.unpack("<q", struct.pack("<d", x))[0]
    return b if b >= 0 else b ^ 0x7FFFFFFFFFFFFFFF


def _order_value(k: int) -> float:
    b = k if k >= 0 else k ^ 0x7FFFFFFFFFFFFFFF
    return struct.unpack("<d", struct.pack("<q", b))[0]


def clipped_global_counts(scores: dict[str, torch.Tensor], layers, ranges, target: float) -> dict[str, int]:
    """Pruned-weight counts per layer from one global threshold on ``scores``, each layer clipped to its range.

    Exactly ``round(target * N)`` weights in all (clamped to what the ranges allow): the largest threshold
    whose clipped count (weights strictly below it) does not exceed the budget, found by bisection over the
    float64 values (64 steps, each a binary search per sorted layer: no sort of all scores together); the
    remainder goes to the layers (not yet at their maximum) whose next weights score lowest.
    """
    names = [layer.name for layer in layers]
    numel = {layer.name: layer.numel for layer in layers}
    lo = {n: math.ceil(ranges[n].min * numel[n] - 1e-9) for n in names}
    hi = {n: max(lo[n], math.floor(ranges[n].max * numel[n] + 1e-9)) for n in names}
    budget = min(max(round(target * sum(numel.values())), sum(lo.values())), sum(hi.values()))
    srt = _sorted_scores(scores, names, numel)

    def counts_at(th: float) -> dict[str, int]:  # prune the scores strictly below th
        t = torch.tensor(th, dtype=torch.float64)
        return {n: min(max(int(torch.searchsorted(srt[n], t, side="left")), lo[n]), hi[n]) for n in names}

    if budget == sum(hi.values()):
        return dict(hi)
    present = [srt[n] for n in names if len(srt[n])]
    a = _order_key(min(float(v[0]) for v in present))  # counts_at(min) = the minima <= budget
    b = _order_key(max(float(v[-1]) for v in present)) + 1  # above the maximum: every layer at hi > budget
    while b - a > 1:
        mid = (a + b) // 2
        if sum(counts_at(_order_value(mid)).values()) <= budget:
            a = mid
        else:
            b = mid
    return spend_remainder(srt, counts_at(_order_value(a)), hi, budget)


def spend_remainder(srt: dict[str, torch.Tensor], counts: dict[str, int], hi: dict[str, int],
                    budget: int) -> dict[str, int]:
    """``counts`` raised to ``budget`` in all: the missing weights go to the layers (not yet at ``hi``) whose next
    sorted scores are lowest (ties: layer order)."""
    deficit = budget - sum(counts.values())
    if deficit <= 0:
        return counts
    nxt = [(srt[n][counts[n]: counts[n] + min(deficit, hi[n] - counts[n])], n) for n in counts if counts[n] < hi[n]]
    vals = torch.cat([v for v, _ in nxt])
    owner = torch.cat([torch.full((len(v),), i, dtype=torch.long) for i, (v, _) in enumerate(nxt)])
    picked = owner[vals.argsort(stable=True)[:deficit]]
    for i, (_, n) in enumerate(nxt):
        counts[n] += int((picked == i).sum())
    return counts
