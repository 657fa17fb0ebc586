"""Numeric precision of forward passes (evaluation and scoring): fp32, or autocast to bf16 / fp16.

Weights stay float32 (masks, stash and saved variants are unchanged); autocast only lowers the precision
of the matmuls/convolutions inside a forward pass, and every score and accuracy is accumulated in fp32.
On CUDA, batches of convolutional models are fed channels_last (NHWC), which cuDNN runs fastest; on the CPU
NHWC is faster for most convolutional models (ResNets 1.2-1.4x) and slower for some (VGG), so a run probes it.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from .errors import ConfigError

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}': pass --precision {'|'.join(PRECISIONS)}")
    return precision


def cpu_supports(precision: str) -> bool:
    """Does this CPU run ``precision`` natively (oneDNN: AVX512-BF16 / AMX / AVX512-FP16)? fp32: always."""
    if precision == "fp32":
        return True
    try:
        return bool(getattr(torch.ops.mkldnn, f"_is_mkldnn_{precision}_supported")())
    except (AttributeError, RuntimeError):
        return True  # unknown: do not warn


def warn_if_emulated(precision: str, device: torch.device | str) -> None:
    """A one-line warning when a reduced precision would run emulated on this CPU (measured here: bf16 at
    1/10-1/20 of the fp32 throughput on an AVX2-only CPU)."""
    if torch.device(device).type == "cpu" and not cpu_supports(precision):
        warnings.warn(f"--precision {precision} is emulated on this CPU (no native {precision} instructions): "
                      f"expect it to be several times slower than fp32; pass --precision fp32", stacklevel=2)


def autocast(precision: str, device: torch.device | str):
    """A context for forward passes: no-op for fp32, ``torch.autocast`` to bf16/fp16 otherwise."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _is_convolutional(model: nn.Module) -> bool:
    """More than one Conv2d: a single one is a patch embedding (ViT, Swin), not a convolutional model."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def layout_candidates(model: nn.Module, device: torch.device | str) -> tuple[bool, ...]:
    """Input layouts worth probing (False: NCHW, True: NHWC): NHWC on CUDA for a convolutional model (cuDNN
    picks its fast kernels), both on the CPU for a convolutional model, NCHW otherwise."""
    if not _is_convolutional(model):
        return (False,)
    return (True,) if torch.device(device).type == "cuda" else (False, True)


def wants_channels_last(model: nn.Module, device: torch.device | str) -> bool:
    """The layout to use without probing: NHWC only where it is the sole candidate (a convolutional model on
    CUDA)."""
    return layout_candidates(model, device) == (True,)


def to_device(x: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """Move one input batch to ``device`` (non-blocking from pinned memory), NHWC when asked."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
