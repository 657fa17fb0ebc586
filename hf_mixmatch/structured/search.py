"""Choosing which units to remove: the options, the grid search and the L1 baseline (the gradient search on
sigmoid gates is in ``gradient.py``).

All searches return a ``Selection`` (removed unit indices per group) whose parameter share removed is
within ``tolerance`` of ``sparsity``; the metric is measured on the masked-dense model (gates 0 on the
removed units), which computes exactly what the physically pruned model computes.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..errors import ConfigError
from .gates import GateHooks, masks_from_removed
from .cost import expected_params
from .groups import GroupPlan, StructGroup
from .tasks import Task


@dataclass
class SearchConfig:
    """Options of the searches. ``sparsity`` is the share of *parameters* removed (0.5 = half)."""

    sparsity: float = 0.5
    tolerance: float = 0.02
    metric_floor: float | None = None
    search: str = "both"  # "grid" | "gradient" | "both"
    grid_weights: tuple[float, ...] = (0.5, 1.0, 1.5)
    max_unit_ratio: float = 0.9  # never remove more than this share of a group's units
    round_to: int = 1  # gradient search: remove units in blocks of this many, so kept widths stay multiples of it
    steps: int = 150
    lr: float = 0.1
    penalty: float = 20.0
    flops_weight: float = 0.0  # λ: the gradient search adds λ·E[MACs]/MACs_dense to its loss (FLOP-aware)
    normalize_loss: bool = True  # gradient search: task loss divided by the dense model's (scale-free)
    init: str = "l1"  # gradient search: "l1" = gate logits start at the L1-uniform selection, "uniform" = all equal
    safeguard: bool = True  # gradient search: return the L1 selection when it is better on the held-out metric
    finetune_steps: int = 0  # short fine-tune of the physically pruned winner (task loss, all weights)
    finetune_lr: float = 1e-3
    bn_recalibrate: bool = True  # re-estimate the pruned model's BatchNorm statistics (kept when they help)
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in (0, 1), got {self.sparsity}: it is the share of parameters removed")
        if not 0.0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")
        if self.search not in ("grid", "gradient", "both"):
            raise ConfigError(f"search must be grid, gradient or both, got '{self.search}'")
        if not 0.0 < self.max_unit_ratio < 1.0:
            raise ConfigError(f"max_unit_ratio must be in (0, 1), got {self.max_unit_ratio}")
        if not (isinstance(self.flops_weight, (int, float)) and math.isfinite(self.flops_weight)
                and self.flops_weight >= 0):
            raise ConfigError(f"flops_weight must be a finite number >= 0, got {self.flops_weight}: 0 = parameters "
                              "only, e.g. 1 = also push expected MACs down")
        if not (isinstance(self.round_to, int) and self.round_to >= 1):
            raise ConfigError(f"round_to must be an integer >= 1, got {self.round_to!r}: e.g. 8 keeps every pruned "
                              "group's width a multiple of 8 (1 = no rounding)")
        if self.init not in ("l1", "uniform"):
            raise ConfigError(f"init must be l1 or uniform, got {self.init!r}: l1 = gradient search starts from the "
                              "L1-uniform selection, uniform = all gates equal")
        if not isinstance(self.steps, int) or self.steps < 0 or self.lr <= 0 or self.finetune_steps < 0:
            raise ConfigError("steps must be an integer >= 0 (0 = no gradient step), lr > 0 and finetune_steps >= 0")


@dataclass
class Selection:
    """Removed unit indices per group index, with the measured outcome."""

    method: str
    removed: dict[int, list[int]]
    sparsity: float  # share of parameters removed
    metric: float = float("nan")
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- helpers


def removed_share(plan: GroupPlan, removed: dict[int, list[int]], total: int) -> float:
    keeps = masks_from_removed(plan, removed)
    return 1.0 - float(expected_params(plan, keeps, total)) / total


def metric_with_removed(model: nn.Module, plan: GroupPlan, task: Task, removed: dict[int, list[int]]) -> float:
    with GateHooks(model, plan) as gates:
        gates.values = masks_from_removed(plan, removed)
        return float(task.metric(model))


def l1_importance(plan: GroupPlan, model: nn.Module) -> dict[int, torch.Tensor]:
    """Torch-Pruning's group L1 magnitude per channel unit; for heads (and groups Torch-Pruning cannot score)
    the L1 norm of every weight slice the unit owns."""
    imp = tp.importance.GroupMagnitudeImportance(p=1)
    out = {}
    for g in plan.prunable:
        score = None
        if g.kind == "channels":
            module = model.get_submodule(g.root)
            try:
                pruner = plan.graph.get_pruner_of_module(module)
                tg = plan.graph.get_pruning_group(module, pruner.prune_out_channels,
                                                  list(range(g.size * g.unit_width)))
                with torch.no_grad():
                    score = imp(tg).detach().float().view(g.size, g.unit_width).sum(1)
            except Exception:  # noqa: BLE001 - e.g. inconsistent channel indices inside torch-pruning
                score = None
        out[g.index] = score if score is not None else slice_l1(g, model)
    return out


def slice_l1(group: StructGroup, model: nn.Module) -> torch.Tensor:
    """Per unit: the summed absolute values of the parameter slices the unit owns (``group.dims``)."""
    params = dict(model.named_parameters())
    score = torch.zeros(group.size)
    with torch.no_grad():
        for pd in group.dims:
            p = params.get(pd.param)
            if p is None:
                continue
            per_chan = p.detach().abs().float().movedim(pd.dim, 0).reshape(p.shape[pd.dim], -1).sum(1)
            score.index_add_(0, torch.tensor(pd.unit), per_chan[torch.tensor(pd.chan)])
    return score


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    return sorted(int(i) for i in torch.argsort(scores, stable=True)[:n])


def _by_ratio(plan: GroupPlan, scores: dict[int, torch.Tensor], ratio_of, cap: float) -> dict[int, list[int]]:
    removed = {}
    for g in plan.prunable:
        r = min(max(ratio_of(g), 0.0), cap)
        n = min(int(math.floor(r * g.size + 1e-9)), g.size - 1)
        if n > 0:
            removed[g.index] = _lowest(scores[g.index], n)
    return removed


def _fit_scale(plan, scores, weight_of, cfg: SearchConfig, total: int) -> tuple[dict[int, list[int]], float]:
    """Bisection on a global factor s (ratio of group g = s·weight(g)) to remove ``cfg.sparsity`` of the params."""
    lo, hi = 0.0, 1.0 / max(min(weight_of(g) for g in plan.prunable), 1e-6)
    best = ({}, 0.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        removed = _by_ratio(plan, scores, lambda g: mid * weight_of(g), cfg.max_unit_ratio)
        share = removed_share(plan, removed, total)
        if abs(share - cfg.sparsity) < abs(best[1] - cfg.sparsity):
            best = (removed, share)
        if share < cfg.sparsity:
            lo = mid
        else:
            hi = mid
    return best


def _check_prunable(plan: GroupPlan) -> None:
    if not plan.prunable:
        raise ConfigError("no prunable group: every group spans two components or is ignored; "
                          "pass finer --components or fewer ignored layers")


# --------------------------------------------------------------------------------------------- searches


def l1_baseline(model: nn.Module, plan: GroupPlan, task: Task | None, cfg: SearchConfig, total: int) -> Selection:
    """Plain L1 channel pruning: one uniform ratio over all groups, lowest L1 units removed."""
    _check_prunable(plan)
    t = time.perf_counter()
    scores = l1_importance(plan, model)
    removed, share = _fit_scale(plan, scores, lambda g: 1.0, cfg, total)
    metric = metric_with_removed(model, plan, task, removed) if task is not None else float("nan")
    return Selection("l1", removed, share, metric, time.perf_counter() - t)


def grid_search(model: nn.Module, plan: GroupPlan, task: Task, cfg: SearchConfig, total: int) -> Selection:
    """Per-component ratios on a coarse grid: component c gets ratio s·w_c (w_c from ``cfg.grid_weights``,
    s fitted so the share removed is ``sparsity``); units of lowest L1 go first. Best metric wins."""
    _check_prunable(plan)
    t = time.perf_counter()
    scores = l1_importance(plan, model)
    comps = sorted(plan.by_component())
    tried, best = [], None
    for ws in itertools.product(cfg.grid_weights, repeat=len(comps)):
        w = dict(zip(comps, ws))
        removed, share = _fit_scale(plan, scores, lambda g: w[g.component], cfg, total)
        if abs(share - cfg.sparsity) > cfg.tolerance:
            tried.append({"weights": w, "sparsity": share, "metric": None})
            continue
        metric = metric_with_removed(model, plan, task, removed)
        tried.append({"weights": w, "sparsity": share, "metric": metric})
        if best is None or metric > best.metric:
            best = Selection("grid", removed, share, metric, detail={"weights": w})
    if best is None:
        best = Selection("grid", {}, 0.0, float("-inf"))
    best.seconds = time.perf_counter() - t
    best.detail["tried"] = tried
    return best
