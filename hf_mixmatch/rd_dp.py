"""Rate–distortion allocation by dynamic programming (Xu et al., ICCV 2023), given per-layer distortion curves.

The curves come from :func:`hf_mixmatch.rd.distortion_curves`; this module only solves: with additivity
``D ≈ sum_l D_l(a_l)``, :func:`solve_dp` picks one pruning amount per layer minimizing the total distortion
under the survivor budget, :func:`rd_strategy` is that as a strategy hook, :func:`rd_ranges` the per-layer
min/max over several targets.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

import torch

from .errors import ConfigError
from .layers import LayerInfo

__all__ = ["make_monotone", "rd_ranges", "rd_strategy", "solve_dp"]


def make_monotone(curves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each curve replaced by its running maximum (non-decreasing in the pruning amount)."""
    return {name: torch.cummax(c.to(torch.float64), dim=0).values for name, c in curves.items()}


def _survivors(grid: torch.Tensor, n: int) -> torch.Tensor:
    """Surviving weights of an ``n``-weight layer at each grid amount (mask stage: floor(a*n) pruned)."""
    return n - torch.floor(grid * n + 1e-9).clamp(max=n).to(torch.int64)


def solve_dp(
    curves: dict[str, torch.Tensor],
    layer_numels: dict[str, int],
    target: float,
    *,
    grid: torch.Tensor | None = None,
    buckets: int = 10000,
    refill: bool = True,
    return_info: bool = False,
):
    """Per-layer sparsities minimizing ``sum_l D_l(a_l)`` with overall sparsity >= ``target``.

    Knapsack over the layers in the order of ``layer_numels``: the state is the number of survivor
    buckets used so far (``buckets`` buckets over all ``N`` weights), ``dp[l][b]`` the least total
    distortion with ``b`` buckets used by layers ``<= l``; each layer picks one grid amount. Vectorized
    over states and grid choices: O(L·K·B).

    Budget guarantee: a layer's survivors are rounded *up* to whole buckets and the budget
    ``floor(S / u)`` (``S = N - floor(target*N)`` survivors, ``u = N / buckets``) is rounded *down*,
    so the real survivors never exceed ``S``: the overall sparsity is >= ``floor(target*N)/N``. The
    rounding can leave up to ``L·u`` survivors unused; with ``refill`` they are handed back greedily
    (segment by segment down each layer's grid, largest distortion saved per restored weight first,
    interpolating inside a segment), so the overall sparsity is then exactly ``floor(target*N)/N``.
    With ``refill=False`` every sparsity is a grid point and the result is the optimum over the grid
    under the bucketed budget (the exact optimum when ``buckets == N``).
    """
    if not (0.0 <= target < 1.0) or math.isnan(target):
        raise ConfigError(f"target sparsity must be in [0, 1), got {target!r}")
    if buckets < 1:
        raise ConfigError(f"buckets must be >= 1, got {buckets}")
    names = list(layer_numels)
    missing = [n for n in names if n not in curves]
    if missing:
        raise ConfigError(f"no distortion curve for layers {missing[:3]}; recompute curves for this model")
    k_points = len(curves[names[0]])
    if grid is None:
        grid = torch.linspace(0.0, 1.0, k_points, dtype=torch.float64)
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if any(len(curves[n]) != len(grid) for n in names):
        raise ConfigError(f"every curve must have one value per grid point ({len(grid)})")
    mono = make_monotone({n: curves[n].cpu() for n in names})

    total = sum(layer_numels.values())
    pruned_target = math.floor(target * total + 1e-9 * max(1.0, target * total))
    budget = total - pruned_target
    unit = total / buckets
    budget_b = math.floor(budget / unit + 1e-9)

    inf = torch.tensor(math.inf, dtype=torch.float64)
    dp = torch.full((budget_b + 1,), math.inf, dtype=torch.float64)
    dp[0] = 0.0
    states = torch.arange(budget_b + 1)
    choices = []
    costs = []
    for name in names:
        surv = _survivors(grid, layer_numels[name])
        cost = torch.ceil(surv.to(torch.float64) / unit - 1e-9).to(torch.int64)  # buckets, rounded up
        prev = states[None, :] - cost[:, None]  # (K, B+1): state before adding this layer
        valid = prev >= 0
        cand = torch.where(valid, dp[prev.clamp(min=0)], inf) + mono[name][:, None]
        dp, choice = cand.min(dim=0)
        choices.append(choice)
        costs.append(cost)
    if torch.isinf(dp).all():
        raise ConfigError(f"target {target} is infeasible on this grid (largest amount {grid.max().item():.2f}); extend the grid to 1.0")
    b = int(torch.argmin(dp))
    best = float(dp[b])
    picks = [0] * len(names)
    for li in range(len(names) - 1, -1, -1):
        k = int(choices[li][b])
        picks[li] = k
        b -= int(costs[li][k])

    pruned = {name: int(layer_numels[name] - _survivors(grid, layer_numels[name])[k]) for name, k in zip(names, picks)}
    if refill:
        _refill(pruned, picks, names, mono, grid, layer_numels, slack=sum(pruned.values()) - pruned_target)

    from .allocation_math import fraction

    sparsities = {name: fraction(pruned[name], layer_numels[name]) for name in names}
    if return_info:
        return sparsities, {"predicted_distortion": best, "grid_indices": dict(zip(names, picks)), "buckets": buckets}
    return sparsities


def _refill(pruned: dict[str, int], picks: list[int], names: list[str], mono, grid, layer_numels, *, slack: int) -> None:
    """Hand ``slack`` spare survivors back, greedily by distortion saved per restored weight.

    Each layer walks down its grid one segment at a time (linear interpolation inside a segment);
    the segment with the largest ``(D[k] - D[k-1]) / weights`` is taken first.
    """
    heap = []
    position = {name: i for i, name in enumerate(names)}
    pruned_at = {name: layer_numels[name] - _survivors(grid, layer_numels[name]) for name in names}

    def push(name: str, k: int) -> None:
        if k == 0:
            return
        lower = int(pruned_at[name][k - 1])
        room = pruned[name] - lower
        if room > 0:
            gain = float(mono[name][k] - mono[name][k - 1]) / room
            heapq.heappush(heap, (-gain, position[name], name, k))
        else:
            push(name, k - 1)

    for name, k in zip(names, picks):
        push(name, k)
    while slack > 0 and heap:
        _, _, name, k = heapq.heappop(heap)
        lower = int(pruned_at[name][k - 1])
        give = min(pruned[name] - lower, slack)
        pruned[name] -= give
        slack -= give
        if pruned[name] == lower:
            push(name, k - 1)


def rd_strategy(
    curves: dict[str, torch.Tensor],
    layers: list[LayerInfo],
    target: float,
    *,
    grid: torch.Tensor | None = None,
    buckets: int = 10000,
    return_info: bool = False,
):
    """RD/DP per-layer sparsities for ``layers`` at ``target`` (a Mix-and-Match strategy hook)."""
    numels = {layer.name: layer.numel for layer in layers}
    return solve_dp(curves, numels, target, grid=grid, buckets=buckets, return_info=return_info)


def rd_ranges(
    curves: dict[str, torch.Tensor],
    layers: list[LayerInfo],
    targets: Iterable[float] = (0.7, 0.8, 0.9),
    *,
    grid: torch.Tensor | None = None,
    buckets: int = 10000,
) -> dict[str, tuple[float, float]]:
    """RD-informed ranges: per layer, ``(min, max)`` of its RD/DP sparsity over ``targets``.

    The RD analogue of Phase 1's observed ranges (which take min/max over global baselines).
    """
    targets = list(targets)
    if not targets:
        raise ConfigError("rd_ranges needs at least one target")
    runs = [rd_strategy(curves, layers, t, grid=grid, buckets=buckets) for t in targets]
    return {layer.name: (min(r[layer.name] for r in runs), max(r[layer.name] for r in runs)) for layer in layers}
