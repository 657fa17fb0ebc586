"""Physical removal with Torch-Pruning, and the whole flow: groups → searches → winner → smaller model."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError, MetricFloorError
from .groups import GroupPlan, build_graph, find_groups, unit_channels
from .measure import count_params
from .search import SearchConfig, Selection, gradient_search, grid_search, l1_baseline
from .tasks import Task

log = logging.getLogger(__name__)


@dataclass
class StructuredResult:
    """The pruned model, its replayable recipe, and every candidate the searches produced."""

    model: nn.Module
    recipe: dict
    plan: GroupPlan
    dense_metric: float
    selections: list[Selection] = field(default_factory=list)
    winner: Selection | None = None
    baseline: Selection | None = None


def prune_physical(model: nn.Module, plan: GroupPlan, removed: dict[int, list[int]]) -> tuple[nn.Module, dict]:
    """A pruned deep copy of ``model`` and its recipe part (``history``: Torch-Pruning's replayable
    ``[root module, is_out, channel indices]`` list; ``attributes``: head counts to update)."""
    pruned = copy.deepcopy(model).eval()
    dg = build_graph(pruned, torch.zeros(plan.example_shape))
    attrs: dict[str, dict] = {}
    by_index = {g.index: g for g in plan.groups}
    for gi in sorted(removed):
        units = removed[gi]
        if not units:
            continue
        g = by_index[gi]
        module = pruned.get_submodule(g.root)
        pruner = dg.get_pruner_of_module(module)
        dg.get_pruning_group(module, pruner.prune_out_channels, unit_channels(g, units)).prune()
        if g.kind == "heads":
            parent_name = g.root.rsplit(".", 1)[0]
            parent = pruned.get_submodule(parent_name)
            for attr in ("num_attention_heads", "num_heads"):
                if isinstance(getattr(parent, attr, None), int):
                    setattr(parent, attr, g.size - len(units))
                    attrs.setdefault(parent_name, {})[attr] = g.size - len(units)
            if isinstance(getattr(parent, "all_head_size", None), int):
                parent.all_head_size = (g.size - len(units)) * g.unit_width
                attrs.setdefault(parent_name, {})["all_head_size"] = parent.all_head_size
    history = [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in dg.pruning_history()]
    return pruned, {"history": history, "attributes": attrs}


def replay(model: nn.Module, recipe: dict) -> nn.Module:
    """Prune a freshly built dense ``model`` in place to the recipe's channels (shapes only, not weights)."""
    dg = build_graph(model, torch.zeros(recipe["example_shape"]))
    dg.load_pruning_history([list(h) for h in recipe["history"]])
    for name, attrs in recipe.get("attributes", {}).items():
        module = model.get_submodule(name)
        for k, v in attrs.items():
            setattr(module, k, v)
    return model


def finetune(model: nn.Module, task: Task, *, steps: int, lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """A few Adam steps of ``task.loss`` over ``task.batches()`` on all weights (in place); eval mode after."""
    if steps <= 0:
        return model.eval()
    if task.loss is None or task.batches is None:
        raise ConfigError("fine-tuning needs a loss and calibration batches: give Task(loss=..., batches=...)")
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    done = 0
    while done < steps:
        for batch in task.batches():
            if done >= steps:
                break
            opt.zero_grad()
            task.loss(model, batch).backward()
            opt.step()
            done += 1
    return model.eval()


def structured_prune(
    model: nn.Module,
    task: Task,
    *,
    example: torch.Tensor,
    config: SearchConfig | None = None,
    components=None,
    ignore: list[str] | None = None,
    layout: str | None = None,
    with_baseline: bool = True,
) -> StructuredResult:
    """Remove ``config.sparsity`` ± ``config.tolerance`` of the parameters as whole channels / units / heads,
    keeping ``task.metric`` ≥ ``config.metric_floor``; grid and/or gradient search, the better one wins.

    Raises :class:`MetricFloorError` when no search reaches the floor at this sparsity.
    """
    cfg = config or SearchConfig()
    model.eval()
    plan = find_groups(model, example, components=components, ignore=ignore, layout=layout)
    total = count_params(model)
    dense_metric = float(task.metric(model))
    selections = []
    if cfg.search in ("grid", "both"):
        selections.append(grid_search(model, plan, task, cfg, total))
    if cfg.search in ("gradient", "both"):
        selections.append(gradient_search(model, plan, task, cfg, total))
    baseline = l1_baseline(model, plan, task, cfg, total) if with_baseline else None
    feasible = [s for s in selections if abs(s.sparsity - cfg.sparsity) <= cfg.tolerance]
    if not feasible:
        got = ", ".join(f"{s.method}: {s.sparsity:.3f}" for s in selections)
        raise MetricFloorError(
            f"no search removed {cfg.sparsity:.2f} ± {cfg.tolerance:.2f} of the parameters ({got}); "
            "the prunable groups are too few: use finer components, a lower sparsity or a larger tolerance")
    winner = max(feasible, key=lambda s: s.metric)
    pruned, part = prune_physical(model, plan, winner.removed)
    final_metric = winner.metric
    if cfg.finetune_steps:
        finetune(pruned, task, steps=cfg.finetune_steps, lr=cfg.finetune_lr, seed=cfg.seed)
        final_metric = float(task.metric(pruned))
    if cfg.metric_floor is not None and not (final_metric >= cfg.metric_floor):
        raise MetricFloorError(
            f"the best {task.name} at {cfg.sparsity:.0%} parameters removed is {final_metric:.4f} "
            f"({winner.method} search{', fine-tuned' if cfg.finetune_steps else ''}; dense {dense_metric:.4f}), "
            f"below the floor {cfg.metric_floor}: try a lower sparsity or a lower metric floor")
    achieved = 1.0 - count_params(pruned) / total
    recipe = {
        "format": "hf_mixmatch.structured/1",
        "example_shape": list(plan.example_shape),
        "target_sparsity": cfg.sparsity,
        "tolerance": cfg.tolerance,
        "achieved_sparsity": achieved,
        "params": count_params(pruned),
        "params_dense": total,
        "metric_name": task.name,
        "metric_floor": cfg.metric_floor,
        "dense_metric": dense_metric,
        "metric": final_metric,
        "metric_before_finetune": winner.metric,
        "finetune_steps": cfg.finetune_steps,
        "flops_weight": cfg.flops_weight,
        "search": {s.method: {"metric": s.metric, "sparsity": s.sparsity, "seconds": s.seconds,
                              **{k: s.detail[k] for k in ("macs", "start") if k in s.detail}}
                   for s in selections},
        "winner": winner.method,
        "components": plan.components,
        "groups": [
            {"root": g.root, "kind": g.kind, "units": g.size, "unit_width": g.unit_width,
             "components": g.components, "prunable": g.prunable, "reason": g.reason,
             "removed": winner.removed.get(g.index, []),
             "kept": [u for u in range(g.size) if u not in set(winner.removed.get(g.index, []))]}
            for g in plan.groups
        ],
        "shapes": {n: list(p.shape) for n, p in pruned.state_dict().items()},
        **part,
    }
    if not math.isclose(achieved, winner.sparsity, abs_tol=1e-6):
        log.warning("expected share %.6f differs from the counted %.6f", winner.sparsity, achieved)
    return StructuredResult(model=pruned, recipe=recipe, plan=plan, dense_metric=dense_metric,
                            selections=selections, winner=winner, baseline=baseline)
