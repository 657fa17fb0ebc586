"""BatchNorm re-estimation after pruning (``--bn-recalibrate``, on by default).

Pruning changes what every BatchNorm layer sees: its running mean and variance, estimated on the dense model, no
longer match the pruned model's activations, and at high sparsity that mismatch — not the lost weights — is most
of the accuracy a masked CNN loses. Re-estimating the statistics on a few hundred unlabeled images is the standard
remedy (NNCF's "BN adaptation", the "batchnorm tuning" of OBC-style one-shot pruning, timm/SWA's ``update_bn``).

How: every BatchNorm's running statistics are reset, its momentum set to ``None`` (a cumulative average over the
batches), and the calibration images run through the model with **only the BatchNorm layers in train mode**
(dropout, stochastic depth and the rest stay in eval mode, unlike ``torch.optim.swa_utils.update_bn``; also the
dropout a timm ``BatchNormAct2d`` holds as a child); momentum
and train/eval flags are put back afterwards. Only buffers change, no weight: the variant's sparsity and masks are
untouched. The result is a deterministic function of the pruned weights, the calibration images, their order and
the batch size, so a published variant can be re-derived from its ``mixmatch.json``. With several processes the
main process's statistics are broadcast, so every process holds the same model.

Models without BatchNorm (ViT, Swin, ConvNeXt, ...) are left exactly as they are.
"""

from __future__ import annotations

from typing import Callable, Hashable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import ConfigError
from .models import logits as default_forward

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_modules(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (the ones an eval forward reads)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def check_calibration_size(n: int) -> None:
    """Re-estimation needs at least 2 calibration images (the variance of a single sample is undefined)."""
    if n < 2:
        raise ConfigError("BatchNorm re-estimation needs at least 2 calibration images: raise --calib-samples or "
                          "pass --no-bn-recalibrate")


def _batches(inputs: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``inputs`` in batches of ``batch_size``; a trailing batch of one image joins the one before it (BatchNorm
    cannot take the variance of a single sample in train mode)."""
    check_calibration_size(len(inputs))
    batches = list(inputs.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 64,
                          forward: Callable = default_forward, modules: list[_BatchNorm] | None = None) -> int:
    """Re-estimate the running statistics of every BatchNorm of ``model`` on ``inputs`` (in place); returns the
    number of BatchNorm layers re-estimated (0: nothing to do, the model is untouched)."""
    modules = batchnorm_modules(model) if modules is None else modules
    if not modules:
        return 0
    batches = _batches(inputs, batch_size)
    flags = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in modules]
    device = modules[0].running_mean.device
    try:
        model.eval()
        for m in modules:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.training = True  # this module only: timm's BatchNormAct2d holds its activation and dropout as children
        for batch in batches:
            forward(model, batch.to(device))
    finally:
        for m, momentum in zip(modules, momenta):
            m.momentum = momentum
        for m, flag in flags.items():
            m.train(flag)
    return len(modules)


def batchnorm_state(modules: list[_BatchNorm]) -> list[tuple[torch.Tensor, ...]]:
    """Copies of the running-statistics buffers of ``modules``."""
    return [tuple(getattr(m, name).detach().clone() for name in BUFFERS) for m in modules]


@torch.no_grad()
def load_batchnorm_state(modules: list[_BatchNorm], state: list[tuple[torch.Tensor, ...]]) -> None:
    for m, saved in zip(modules, state):
        for name, tensor in zip(BUFFERS, saved):
            getattr(m, name).copy_(tensor)


@torch.no_grad()
def calibration_loss(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 64,
                     forward: Callable = default_forward, channels_last: bool = False) -> float:
    """Mean cross-entropy of ``model`` (eval mode) on the calibration images (any batch size and layout: each
    image's loss is its own)."""
    from .precision import to_device

    device = next(model.parameters()).device
    total = 0.0
    for x, y in zip(inputs.split(batch_size), labels.split(batch_size)):
        out = forward(model, to_device(x, device, channels_last=channels_last)).float()
        total += float(torch.nn.functional.cross_entropy(out, y.to(device), reduction="sum"))
    return total / len(inputs)


class BatchNormRecalibrator:
    """``recalibrate(model, key=None)``: re-estimate the BatchNorm statistics of a pruned ``model`` on the run's
    calibration images, and keep them only when they fit those images better.

    The guard: with the calibration labels given, the pruned model's cross-entropy on the calibration images is
    measured with the dense statistics and with the re-estimated ones, and the lower wins (ties: the dense ones).
    At low sparsity the dense statistics, estimated on the whole training set, are often the better estimate
    (re-estimating on 256 images cost 0.1–0.4 points there on the reference ResNet), at high sparsity the
    re-estimated ones win by tens of points; the loss picked the better one in 25 of 28 allocations
    (``scripts/benchmark_bn.py``, ``docs/BENCHMARKS_quality.md``). Without labels the re-estimated statistics are always kept.

    With a ``key`` (a variant id), the outcome is kept (a few KB per variant) and re-loaded when the same variant
    is applied again — the racing rounds, the measurement on the whole split, saving — and ``chosen[key]`` says
    whether the re-estimated statistics were kept."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None = None, *,
                 batch_size: int = 64, forward: Callable = default_forward, accelerator=None,
                 loss_batch_size: int | None = None, channels_last: bool = False):
        self.modules = batchnorm_modules(model)
        self.inputs, self.labels = inputs, labels
        self.batch_size, self.forward, self.accelerator = batch_size, forward, accelerator
        # the guard's two loss passes are plain evaluations: the run's evaluation batch size and input layout
        self.loss_batch_size, self.channels_last = loss_batch_size or batch_size, bool(channels_last)
        self.cache: dict[Hashable, list[tuple[torch.Tensor, ...]]] = {}
        self.chosen: dict[Hashable, bool] = {}
        if self.modules:
            _batches(inputs, batch_size)  # fail before any work when the calibration set is too small

    def __bool__(self) -> bool:
        return bool(self.modules)

    def __call__(self, model: nn.Module, key: Hashable | None = None) -> bool:
        """Re-estimate (or re-load) the statistics; returns whether the re-estimated ones are in the model."""
        if not self.modules:
            return False
        if key is not None and key in self.cache:
            load_batchnorm_state(self.modules, self.cache[key])
            return self.chosen[key]
        loss = (lambda: calibration_loss(model, self.inputs, self.labels, batch_size=self.loss_batch_size,
                                         forward=self.forward, channels_last=self.channels_last)
                ) if self.labels is not None else None
        before = loss() if loss else None
        dense = batchnorm_state(self.modules)
        recalibrate_batchnorm(model, self.inputs, batch_size=self.batch_size, forward=self.forward,
                              modules=self.modules)
        keep = True
        if loss is not None and not loss() < before:
            load_batchnorm_state(self.modules, dense)
            keep = False
        if self.accelerator is not None and self.accelerator.num_processes > 1:  # one model on every process
            from accelerate.utils import broadcast, broadcast_object_list

            for m in self.modules:
                for name in BUFFERS:
                    broadcast(getattr(m, name), from_process=0)
            keep = broadcast_object_list([keep], from_process=0)[0]
        if key is not None:
            self.cache[key] = batchnorm_state(self.modules)
            self.chosen[key] = keep
        return keep

    def info(self) -> dict | None:
        """What the run records (results.json, each variant's recipe); ``None`` when the model has no BatchNorm."""
        if not self.modules:
            return None
        return {"layers": len(self.modules), "samples": len(self.inputs), "batch_size": self.batch_size,
                "images": "calibration",
                "rule": "re-estimated statistics kept when they lower the cross-entropy on the calibration images"
                if self.labels is not None else "re-estimated statistics always kept (no labels)"}
