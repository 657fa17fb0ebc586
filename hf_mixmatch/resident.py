"""Evaluation data kept on the accelerator for the whole run.

A run evaluates the same images once per variant (~40 times). On a GPU, moving each batch from host memory
again costs more than the forward pass of a small model (measured on an H200: a timm ResNet-50 at 224 px ran
3,000 img/s from host batches and 9,300 img/s from batches already on the GPU; docs/BENCHMARKS.md). So on CUDA
the selection and evaluation splits are uploaded once, in chunks (host memory stays bounded by one chunk), when
they fit in a share of the free accelerator memory; otherwise they stay memory-mapped on the host, as on CPU.
The values are the decoded float32 tensors themselves: results are the same either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .errors import ConfigError

RESIDENT_MODES = ("auto", "never")
RESIDENT_FRACTION = 0.25  # of the free accelerator memory, measured after the model is on it
UPLOAD_CHUNK = 1024  # images read from the host cache per copy


class DeviceSplit(Dataset):
    """A split's ``(X, Y)`` on ``device``; ``get_batch`` returns device tensors (a view for a contiguous range).
    Every other attribute (``split``, ``rows``, ``skipped``, ...) is the host split's."""

    def __init__(self, split, device: torch.device | str, *, chunk: int = UPLOAD_CHUNK):
        from .evaluate import read_batch

        n = len(split)
        x0, _ = read_batch(split, range(min(1, n)))
        self.host = split
        self.x = torch.empty((n, *x0.shape[1:]), dtype=x0.dtype, device=device)
        self.y = torch.empty(n, dtype=torch.long, device=device)
        for s in range(0, n, chunk):
            xb, yb = read_batch(split, range(s, min(n, s + chunk)))
            self.x[s : s + len(xb)].copy_(xb)
            self.y[s : s + len(yb)].copy_(yb)

    def __len__(self) -> int:
        return int(self.y.numel())

    def __getitem__(self, i: int):
        return self.x[int(i)], self.y[int(i)]

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(indices, range) and indices.step == 1:
            return self.x[indices.start : indices.stop], self.y[indices.start : indices.stop]
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        idx = idx.to(self.x.device)
        return self.x[idx], self.y[idx]

    def __getattr__(self, name: str):
        if name == "host":  # not yet set (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.host, name)


def split_bytes(split) -> int:
    """float32 bytes of ``split``'s images once decoded (from its first image)."""
    from .evaluate import read_batch

    if len(split) == 0:
        return 0
    x, _ = read_batch(split, range(1))
    return len(split) * math.prod(x.shape[1:]) * x.element_size()


def make_resident(data, device: torch.device | str, *, mode: str = "auto", free_bytes: int | None = None,
                  fraction: float = RESIDENT_FRACTION):
    """``data`` with its selection and evaluation splits on ``device`` where they fit (selection first: every
    variant sees it), and a record of what was done. CPU devices and ``mode="never"`` change nothing."""
    if mode not in RESIDENT_MODES:
        raise ConfigError(f"unknown --eval-resident '{mode}': pass one of {', '.join(RESIDENT_MODES)}")
    device = torch.device(device)
    if mode == "never" or (device.type != "cuda" and free_bytes is None):
        return data, {"resident": [], "reason": "never asked" if mode == "never" else f"{device.type}: host memory"}
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    budget = int(fraction * free_bytes)
    changes, placed, used = {}, [], 0
    for name in ("select", "eval"):
        split = getattr(data, name, None)
        if split is None or isinstance(split, DeviceSplit):
            continue
        size = split_bytes(split)
        if used + size <= budget:
            changes[name] = DeviceSplit(split, device)
            placed.append(name)
            used += size
    record = {"resident": placed, "bytes": used, "budget_bytes": budget}
    return (dataclasses.replace(data, **changes) if changes else data), record
