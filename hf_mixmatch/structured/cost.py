"""Differentiable parameter and MAC counts of a model whose groups keep a (soft) share of their units."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .groups import GroupPlan, ParamDim


def _expected(plan: "GroupPlan", keeps: dict[int, torch.Tensor], cost: dict[str, int], total: float) -> torch.Tensor:
    """``total`` minus what the kept shares save: each parameter's ``cost`` scales with the kept share of every
    dimension a prunable group governs (a product where two groups meet in one weight: its in- and out-side)."""
    per_param: dict[str, list[tuple[ParamDim, int]]] = {}
    for g in plan.prunable:
        if g.index in keeps:
            for pd in g.dims:
                if pd.param in cost:
                    per_param.setdefault(pd.param, []).append((pd, g.index))
    count = torch.tensor(float(total - sum(cost[p] for p in per_param)))
    for pname, dims in per_param.items():
        term = torch.tensor(float(cost[pname]))
        for pd, gi in dims:
            kept = keeps[gi][torch.tensor(pd.unit)].sum() + (pd.full - len(pd.chan))
            term = term * kept / pd.full
        count = count + term
    return count


def expected_params(plan: "GroupPlan", keeps: dict[int, torch.Tensor], total: int) -> torch.Tensor:
    """Parameter count when group ``g`` keeps ``keeps[g][u]`` (in [0, 1]) of unit ``u``; differentiable.

    Parameters whose dimensions no prunable group governs count in full. ``total`` is the dense count.
    """
    return _expected(plan, keeps, plan.param_sizes, total)


def expected_macs(plan: "GroupPlan", keeps: dict[int, torch.Tensor]) -> torch.Tensor:
    """Multiply-accumulates per example (conv / linear, as ``count_flops``) when group ``g`` keeps ``keeps[g][u]``
    of unit ``u``; differentiable. With 0/1 keeps it is the MAC count of the physically pruned model: a layer
    whose input channels belong to one group and output channels to another costs the product of both kept
    shares. Layers no prunable group touches count in full."""
    return _expected(plan, keeps, plan.param_macs, plan.dense_macs)
