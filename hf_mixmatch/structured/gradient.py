"""The gradient search: sigmoid gates on every unit trained under a parameter target (augmented Lagrangian),
warm-started at the L1 selection and guarded by it on the held-out metric."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..errors import ConfigError
from .cost import expected_macs, expected_params
from .gates import GateHooks, masks_from_removed
from .groups import GroupPlan
from .search import SearchConfig, Selection, _check_prunable, _fit_scale, l1_importance, metric_with_removed, removed_share
from .tasks import Task


def warm_start_logits(plan: GroupPlan, model: nn.Module, cfg: SearchConfig, total: int,
                      scale: float = 3.0) -> tuple[dict[int, torch.Tensor], dict[int, list[int]]]:
    """Gate logits whose hard selection (logit < 0 removed) is the L1-uniform selection (``l1_baseline``'s).

    Within a group the units are ranked by L1 magnitude; with n of its m units removed by L1, the unit of rank r
    (0 = lowest) gets ``scale·(r − n + ½)/n`` if removed (in (−scale, 0)) and ``scale·(r − n + ½)/(m − n)`` if
    kept (in (0, scale)): the L1 order is kept, the units at the L1 cut start near 0 (cheap to swap), the
    clearly (un)important ones far from it. Returns the logits and the L1 selection."""
    scores = l1_importance(plan, model)
    removed, _ = _fit_scale(plan, scores, lambda g: 1.0, cfg, total)
    logits = {}
    for g in plan.prunable:
        m, n = g.size, len(removed.get(g.index, []))
        rank = torch.empty(m)
        rank[torch.argsort(scores[g.index], stable=True)] = torch.arange(m, dtype=torch.float32)
        z = rank - n + 0.5
        z = torch.where(z < 0, z / max(n, 1), z / max(m - n, 1))
        logits[g.index] = scale * z
    return logits, removed


def gradient_search(model: nn.Module, plan: GroupPlan, task: Task, cfg: SearchConfig, total: int) -> Selection:
    """Sigmoid gates g = σ(logit / T) on every unit, weights frozen; minimise
    task loss + μ·c + (ρ/2)·c² + λ·E[MACs]/MACs_dense with c = (expected params − target) / total (augmented
    Lagrangian, μ updated each step, T annealed 1 → 0.2; λ = ``cfg.flops_weight``, 0 by default: under the
    same parameter target, λ > 0 moves the removal towards units that cost many MACs per parameter, e.g.
    early, high-resolution conv channels). Then the units with the lowest logits are removed until the
    parameter target is met exactly (bisection on the count).

    With ``cfg.normalize_loss`` (default) the task loss is divided by the dense model's loss on the first
    calibration batches, so the balance between the task and the cost terms does not depend on the loss's
    units: a reconstruction MSE of 0.007 would otherwise be drowned by the constraint, Adam would move every
    gate in lockstep and the selection would be decided by ties."""
    _check_prunable(plan)
    if task.loss is None or task.batches is None:
        raise ConfigError("the gradient search needs a loss and calibration batches: give Task(loss=..., batches=...)"
                          " or use --search grid")
    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    groups = plan.prunable
    if cfg.init == "l1":
        init, l1_removed = warm_start_logits(plan, model, cfg, total)
        logits = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    else:
        l1_removed = None
        logits = {g.index: torch.full((g.size,), 3.0, requires_grad=True) for g in groups}
    opt = torch.optim.Adam(logits.values(), lr=cfg.lr)
    target = (1.0 - cfg.sparsity) * total
    mu = 0.0
    dense_macs = max(float(plan.dense_macs), 1.0)
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    was = model.training
    model.eval()
    step = 0
    scale = 1.0
    try:
        if cfg.normalize_loss:
            with torch.no_grad():
                seen = [float(task.loss(model, b)) for b, _ in zip(task.batches(), range(4))]
            scale = 1.0 / max(sum(seen) / max(len(seen), 1), 1e-12)
        with GateHooks(model, plan) as gates:
            while step < cfg.steps:
                for batch in task.batches():
                    if step >= cfg.steps:
                        break
                    temp = 1.0 - 0.8 * step / max(cfg.steps - 1, 1)
                    gates.values = {k: torch.sigmoid(v / temp) for k, v in logits.items()}
                    c = (expected_params(plan, gates.values, total) - target) / total
                    loss = scale * task.loss(model, batch) + mu * c + 0.5 * cfg.penalty * c * c
                    if cfg.flops_weight:
                        loss = loss + cfg.flops_weight * expected_macs(plan, gates.values) / dense_macs
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    mu += cfg.penalty * float(c.detach())
                    step += 1
    finally:
        for p, r in zip(model.parameters(), frozen):
            p.requires_grad_(r)
        model.train(was)
    final = {k: v.detach() for k, v in logits.items()}
    removed, share = _threshold(plan, final, cfg, total)
    metric = metric_with_removed(model, plan, task, removed)
    macs = float(expected_macs(plan, masks_from_removed(plan, removed)))
    detail = {"steps": step, "flops_weight": cfg.flops_weight, "loss_scale": scale, "init": cfg.init,
              "start": "gates", "metric_gates": metric}
    if cfg.safeguard:
        removed, share, metric, macs = _safeguard(model, plan, task, cfg, total, removed, share, metric, macs,
                                                  l1_removed, detail)
    detail.update(macs=macs, macs_dense=plan.dense_macs)
    return Selection("gradient", removed, share, metric, time.perf_counter() - t, detail=detail)


def _safeguard(model, plan, task, cfg, total, removed, share, metric, macs, l1_removed, detail):
    """Compare the gates' selection with the L1 selection at the same parameter target on the held-out metric
    (``task.metric``: the selection samples, never a test set) and keep the better one.

    The L1 candidate is L1-uniform (``l1_baseline``'s selection) when ``round_to`` is 1, else the L1 order
    thresholded with the same blocks (so it keeps widths multiples of ``round_to`` too). It is only a
    candidate when its removed share is within ``tolerance`` of ``sparsity`` and, with a FLOP weight λ > 0,
    when its MACs are no more than the gates' selection's (it must be at least as good on the FLOP term, which
    the metric alone does not see); ties keep the gates. ``detail`` records ``start`` ("l1" | "gates"), both
    metrics and why L1 was not a candidate."""
    if l1_removed is None or cfg.round_to > 1:
        warm, l1_plain = warm_start_logits(plan, model, cfg, total)
        l1_removed = l1_plain if cfg.round_to == 1 else _threshold(plan, warm, cfg, total)[0]
    l1_share = removed_share(plan, l1_removed, total)
    l1_macs = float(expected_macs(plan, masks_from_removed(plan, l1_removed)))
    detail.update(l1_sparsity=l1_share, l1_macs=l1_macs)
    if abs(l1_share - cfg.sparsity) > cfg.tolerance:
        detail["l1_skipped"] = "share outside the tolerance"
        return removed, share, metric, macs
    if cfg.flops_weight and l1_macs > macs:
        detail["l1_skipped"] = "more MACs than the gates' selection (λ > 0)"
        return removed, share, metric, macs
    l1_metric = metric_with_removed(model, plan, task, l1_removed)
    detail["metric_l1"] = l1_metric
    if l1_metric > metric:
        detail["start"] = "l1"
        return l1_removed, l1_share, l1_metric, l1_macs
    return removed, share, metric, macs


def _threshold(plan: GroupPlan, scores: dict[int, torch.Tensor], cfg: SearchConfig, total: int):
    """Remove the globally lowest-scored units (each group keeps ≥ 1 and ≤ max_unit_ratio removed) until the
    removed share reaches ``sparsity``: bisection on how many units go."""
    cand = []  # (score, group, units): one block of cfg.round_to units (the lowest-scored first)
    for g in plan.prunable:
        order = torch.argsort(scores[g.index], stable=True).tolist()
        cap = min(int(math.floor(cfg.max_unit_ratio * g.size + 1e-9)), g.size - 1)
        # a group whose width is not a multiple of the block (or no wider than it) is not rounded
        r = cfg.round_to if g.size > cfg.round_to and g.size % cfg.round_to == 0 else 1
        cap -= cap % r
        for i in range(0, cap - r + 1, r):
            block = order[i:i + r]
            cand.append((max(float(scores[g.index][u]) for u in block), g.index, block))
    cand.sort(key=lambda c: (c[0], c[1], c[2]))

    def removed_of(n):
        out: dict[int, list[int]] = {}
        for _, gi, units in cand[:n]:
            out.setdefault(gi, []).extend(units)
        return {k: sorted(v) for k, v in out.items()}

    lo, hi = 0, len(cand)
    while lo < hi:  # smallest n with share >= sparsity
        mid = (lo + hi) // 2
        if removed_share(plan, removed_of(mid), total) < cfg.sparsity:
            lo = mid + 1
        else:
            hi = mid
    options = [n for n in (lo - 1, lo) if 0 <= n <= len(cand)]
    n = min(options, key=lambda k: abs(removed_share(plan, removed_of(k), total) - cfg.sparsity))
    removed = removed_of(n)
    return removed, removed_share(plan, removed, total)
