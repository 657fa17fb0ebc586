"""Application metrics and losses: top-1 accuracy, reconstruction PSNR, or any ``metric(model) -> float``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


from ..adapters.base import extract_logits as _logits  # the one place that reads logits from an output


@dataclass
class Task:
    """What the search optimises: ``metric`` (higher is better, e.g. accuracy or PSNR) must stay above the
    floor; ``loss(model, batch)`` drives the gradient search over ``batches()`` (calibration data)."""

    name: str
    metric: Callable[[nn.Module], float]
    loss: Callable[[nn.Module, tuple], torch.Tensor] | None = None
    batches: Callable[[], Iterable] | None = None


def _loader(data, batch_size: int, shuffle: bool = False) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(0) if shuffle else None)


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset | DataLoader, *, batch_size: int = 128) -> float:
    was = model.training
    model.eval()
    correct = seen = 0
    for x, y in _loader(data, batch_size):
        pred = _logits(model(x)).argmax(-1)
        correct += int((pred == y).sum())
        seen += int(y.numel())
    model.train(was)
    return correct / max(seen, 1)


@torch.no_grad()
def psnr(model: nn.Module, data: TensorDataset | DataLoader, *, batch_size: int = 128, peak: float = 1.0) -> float:
    """PSNR (dB) of reconstructions ``model(x)`` against ``x`` (images scaled to [0, peak])."""
    was = model.training
    model.eval()
    se = n = 0.0
    for batch in _loader(data, batch_size):
        x = batch[0]
        se += float(F.mse_loss(_logits(model(x)), x, reduction="sum"))
        n += x.numel()
    model.train(was)
    mse = se / max(n, 1)
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def classification_task(calib, evaluation, *, batch_size: int = 64) -> Task:
    """Top-1 accuracy on ``evaluation``; cross-entropy on ``calib`` for the gradient search."""
    return Task(
        name="accuracy",
        metric=lambda m: accuracy(m, evaluation, batch_size=batch_size),
        loss=lambda m, b: F.cross_entropy(_logits(m(b[0])), b[1]),
        batches=lambda: _loader(calib, batch_size, shuffle=True),
    )


def reconstruction_task(calib, evaluation, *, batch_size: int = 64, peak: float = 1.0) -> Task:
    """PSNR of reconstructions on ``evaluation``; MSE on ``calib`` for the gradient search."""
    return Task(
        name="psnr",
        metric=lambda m: psnr(m, evaluation, batch_size=batch_size, peak=peak),
        loss=lambda m, b: F.mse_loss(_logits(m(b[0])), b[0]),
        batches=lambda: _loader(calib, batch_size, shuffle=True),
    )
