"""BatchNorm statistics in structured pruning: the searches score selections as they will be saved
(:func:`bn_aware`), and the physically pruned model's statistics are re-estimated (:func:`recalibrate_pruned`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .search import SearchConfig
from .tasks import Task


def calibration_inputs(model: nn.Module, task: Task, cfg: SearchConfig) -> torch.Tensor | None:
    """The task's calibration images when the pruned model's BatchNorm statistics will be re-estimated on them."""
    from ..bn_recalibrate import batchnorm_modules, check_calibration_size

    if not cfg.bn_recalibrate or task.batches is None or not batchnorm_modules(model):
        return None
    inputs = torch.cat([batch[0] for batch in task.batches()])
    check_calibration_size(len(inputs))  # fails before any search
    return inputs


def _reestimated_metric(model: nn.Module, task: Task, inputs: torch.Tensor) -> tuple[float, Callable[[], None]]:
    """``task.metric`` of ``model`` with its BatchNorm statistics re-estimated on ``inputs`` (in place), and a
    function that puts the previous statistics back."""
    from ..bn_recalibrate import batchnorm_modules, batchnorm_state, load_batchnorm_state, recalibrate_batchnorm

    modules = batchnorm_modules(model)
    saved = batchnorm_state(modules)
    try:
        recalibrate_batchnorm(model, inputs, forward=lambda m, batch: m(batch), modules=modules)
        metric = float(task.metric(model))
    except BaseException:
        load_batchnorm_state(modules, saved)
        raise
    return metric, lambda: load_batchnorm_state(modules, saved)


def bn_aware(task: Task, inputs: torch.Tensor) -> Task:
    """``task`` whose metric is what a selection will score once pruned and its BatchNorm statistics re-estimated
    on ``inputs`` (the better of the model's own statistics and re-estimated ones, then put back), so the searches
    choose units for the model that is saved. Called on the gated dense model: every unit's statistics come from
    the same activations as in the physically pruned one (gates act on the consumers' inputs), and the removed
    units' statistics feed only gated inputs."""
    from dataclasses import replace

    def metric(model: nn.Module) -> float:
        own = float(task.metric(model))
        estimated, put_back = _reestimated_metric(model, task, inputs)
        put_back()
        return max(own, estimated)

    return replace(task, metric=metric)


def recalibrate_pruned(model: nn.Module, task: Task, inputs: torch.Tensor, metric: float) -> dict:
    """Re-estimate the BatchNorm statistics of the physically pruned ``model`` on ``inputs`` (the statistics the
    dense model kept describe channels that are gone and activations that have shifted), and keep them only when
    they raise ``task.metric`` (the selection data) above ``metric``, the metric with the dense statistics."""
    from ..bn_recalibrate import batchnorm_modules

    estimated, put_back = _reestimated_metric(model, task, inputs)
    kept = estimated > metric
    if not kept:
        put_back()
    return {"kept": kept, "layers": len(batchnorm_modules(model)), "samples": len(inputs),
            "metric_dense_statistics": metric, "metric_reestimated": estimated,
            "rule": "re-estimated on the calibration images, kept when they raise the metric on the selection data"}
