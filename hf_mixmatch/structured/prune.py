"""Physical removal with Torch-Pruning, and the whole flow: groups → searches → winner → smaller model."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..adapters import copy_model
from ..errors import ConfigError, MetricFloorError, ModelLoadError
from .attention import find_attention, prune_heads
from .batchnorm import bn_aware, calibration_inputs, recalibrate_pruned
from .groups import GroupPlan, build_graph, find_groups, unit_channels
from .guard import unsupported_on_failure
from .mlp import find_mlps, prune_units
from .measure import count_params
from .gradient import gradient_search
from .search import SearchConfig, Selection, grid_search, l1_baseline
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
    ``[root module, is_out, channel indices]`` list; ``heads``: kept heads per attention module; ``attributes``:
    head counts and widths set on those modules)."""
    pruned = copy_model(model).eval()
    by_index = {g.index: g for g in plan.groups}
    history = []
    channels = [gi for gi in sorted(removed) if removed[gi] and by_index[gi].kind == "channels"]
    if channels:
        with unsupported_on_failure("torch-pruning could not remove the channels"):
            dg = build_graph(pruned, torch.zeros(plan.example_shape))
            for gi in channels:
                _prune_channels(pruned, dg, by_index[gi].root, unit_channels(by_index[gi], removed[gi]))
            history = [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in dg.pruning_history()]
    heads, units, attrs = {}, {}, {}
    with unsupported_on_failure("removing attention heads or MLP units failed"):
        for gi in sorted(removed):
            g = by_index[gi]
            kept = [u for u in range(g.size) if u not in set(removed[gi])]
            if removed[gi] and g.kind == "heads":
                heads[g.root] = kept
                attrs[g.root] = prune_heads(pruned, g.site, kept)
            elif removed[gi] and g.kind == "units":
                units[g.root] = kept
                prune_units(pruned, g.site, kept)
    return pruned, {"history": history, "heads": heads, "units": units, "attributes": attrs}


def _extra_out_params(module: nn.Module) -> list[str]:
    """Own parameters of a conv/linear besides weight and bias that scale its output channels (e.g. ``gain``)."""
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return []
    n_out = module.weight.shape[0]
    return [n for n, p in module.named_parameters(recurse=False)
            if n not in ("weight", "bias") and p.dim() >= 1 and p.shape[0] == n_out]


def _prune_channels(model: nn.Module, dg, root: str, channels: list[int]) -> None:
    """Torch-Pruning removes ``channels`` of ``root``'s group; per-channel scales it does not know (NFNet's
    ``gain``) are cut with their layer's output channels."""
    module = model.get_submodule(root)
    group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, channels)
    scaled = {}
    for item in group:
        target = item.dep.target.module
        if isinstance(target, nn.Module) and _extra_out_params(target):
            scaled.setdefault(id(target), (target, _extra_out_params(target), [int(i) for i in item.idxs]))
    group.prune()
    for target, names, idxs in scaled.values():
        _cut_extra(target, names, idxs)


def _cut_extra(module: nn.Module, names: list[str], idxs: list[int]) -> None:
    n_out = module.weight.shape[0]
    for n in names:
        p = module._parameters[n]
        if p.shape[0] != n_out:
            drop = set(idxs)
            keep = torch.tensor([i for i in range(p.shape[0]) if i not in drop][:n_out], dtype=torch.long)
            if len(keep) != n_out:  # indices that do not explain the new width: keep the shape right anyway
                keep = torch.arange(n_out)
            module._parameters[n] = nn.Parameter(p.data.index_select(0, keep).clone(), requires_grad=p.requires_grad)


def replay(model: nn.Module, recipe: dict) -> nn.Module:
    """Prune a freshly built dense ``model`` in place to the recipe's shapes (not its weights)."""
    if recipe.get("history"):
        scaled = [(m, _extra_out_params(m)) for m in model.modules() if _extra_out_params(m)]
        with unsupported_on_failure("torch-pruning could not replay the recipe"):
            dg = build_graph(model, torch.zeros(recipe["example_shape"]))
            dg.load_pruning_history([list(h) for h in recipe["history"]])
        for m, names in scaled:
            _cut_extra(m, names, [])  # shapes only: the saved weights are loaded next
    if recipe.get("units"):
        _replay_sites(model, find_mlps(model), recipe["units"], "the MLP", prune_units)
    if recipe.get("heads"):
        _replay_sites(model, find_attention(model), recipe["heads"], "heads of", prune_heads)
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


def _check(*args):
    from .verify import check_equivalent

    return check_equivalent(*args)


def _validate(model, plan, example):
    from .verify import probe_selection, require_prunable, validate_plan

    if not plan.prunable and any(g.reason and "spans components" not in g.reason for g in plan.groups):
        require_prunable(plan)  # the architecture, not the chosen components, leaves nothing to prune
    if plan.prunable:
        validate_plan(model, plan, example, probe_selection(plan, model))
    if plan.prunable:  # one unit per group: a width a grouped convolution can no longer divide fails here, not later
        validate_plan(model, plan, example, probe_selection(plan, model, ratio=0.0))


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
    keeping ``task.metric`` ≥ ``config.metric_floor``; grid and/or gradient search, the better one wins. With
    ``config.bn_recalibrate`` and a model with BatchNorm, the searches score each selection with re-estimated
    statistics (:func:`bn_aware`) and the pruned model's statistics are re-estimated (:func:`recalibrate_pruned`).

    Raises :class:`MetricFloorError` when no search reaches the floor at this sparsity.
    """
    cfg = config or SearchConfig()
    model.eval()
    bn_inputs = calibration_inputs(model, task, cfg)
    plan = find_groups(model, example, components=components, ignore=ignore, layout=layout)
    _validate(model, plan, example)  # groups whose removal breaks the model are kept dense before any search
    total = count_params(model)
    dense_metric = float(task.metric(model))
    scored = task if bn_inputs is None else bn_aware(task, bn_inputs)  # selections scored as they will be saved
    selections = []
    if cfg.search in ("grid", "both"):
        selections.append(grid_search(model, plan, scored, cfg, total))
    if cfg.search in ("gradient", "both"):
        selections.append(gradient_search(model, plan, scored, cfg, total))
    baseline = l1_baseline(model, plan, scored, cfg, total) if with_baseline else None
    feasible = [s for s in selections if abs(s.sparsity - cfg.sparsity) <= cfg.tolerance]
    if not feasible:
        got = ", ".join(f"{s.method}: {s.sparsity:.3f}" for s in selections)
        raise MetricFloorError(
            f"no search removed {cfg.sparsity:.2f} ± {cfg.tolerance:.2f} of the parameters ({got}); "
            "the prunable groups are too few: use finer components, a lower sparsity or a larger tolerance")
    winner = max(feasible, key=lambda s: s.metric)
    pruned, part = prune_physical(model, plan, winner.removed)
    _check(model, plan, winner.removed, pruned, example)  # else "not supported: ...", nothing saved
    final_metric = winner.metric
    bn = None
    if bn_inputs is not None:
        bn = recalibrate_pruned(pruned, task, bn_inputs, float(task.metric(pruned)))
        final_metric = max(bn["metric_dense_statistics"], bn["metric_reestimated"])
    one_shot = final_metric
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
        "metric_before_finetune": one_shot,
        "bn_recalibration": bn,
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


def _replay_sites(model: nn.Module, found, kept_by_name: dict, what: str, prune) -> None:
    """Cut the recipe's kept units (MLP hidden units or attention heads) of each named site of the rebuilt model."""
    sites = {s.name: s for s in found}
    for name, kept in kept_by_name.items():
        if name not in sites:
            raise ModelLoadError(f"the recipe prunes {what} {name}, which the rebuilt model lacks: "
                                 "the base architecture differs from the one the recipe was made on")
        prune(model, sites[name], kept)
