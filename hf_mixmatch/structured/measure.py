"""Parameter count, FLOPs (multiply-accumulates of conv / linear / attention matmuls) and CPU latency."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..adapters import copy_model


def _gen() -> torch.Generator:
    """Inputs for timing come from their own generator, so measuring never shifts the global RNG."""
    return torch.Generator().manual_seed(0)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (conv, transposed conv, linear).

    Functional ops are not counted: attention score/value matmuls, norms, activations, pooling (small
    next to the layers above for CNNs; for ViTs the attention matmuls are left out, so FLOPs are a floor).
    """
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = 1
        for s in m.kernel_size:
            k *= s
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            total += inp[0].numel() * (m.out_channels // m.groups) * k
        else:
            total += out.numel() * (m.in_channels // m.groups) * k

    def linear_hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return int(total // example.shape[0]) if example.shape[0] else 0


def latency_ms(model: nn.Module, input_shape: tuple[int, ...], *, batch: int, runs: int = 20, warmup: int = 10,
               threads: int | None = None) -> float:
    """Median wall time (ms) of ``runs`` CPU forward passes at ``batch`` after ``warmup`` passes.

    To compare models, prefer :func:`latency_interleaved`: timing one model after the other lets load on a
    shared machine change between them.
    """
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.eval()
        x = torch.randn(batch, *input_shape[1:], generator=_gen())
        times = []
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(runs):
                t = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t) * 1000.0)
        return float(statistics.median(times))
    finally:
        torch.set_num_threads(old)


def _channels_last(models: dict[str, nn.Module], input_shape) -> dict[str, nn.Module]:
    """Copies of ``models`` with 4-D weights in channels-last layout (the originals are left as they are)."""
    if len(input_shape) != 4:
        return models
    return {name: copy_model(m).to(memory_format=torch.channels_last) for name, m in models.items()}


def latency_interleaved(models: dict[str, nn.Module], input_shape: tuple[int, ...], *, batch: int, runs: int = 30,
                        warmup: int = 10, threads: int | None = None, channels_last: bool = False) -> dict[str, float]:
    """Median wall time (ms) per model of ``runs`` CPU forward passes at ``batch``, the models timed in turn
    (A B C A B C ...) after ``warmup`` passes each, so a change of machine load hits every model alike.

    ``channels_last``: time copies of the models in NHWC layout with an NHWC input (PyTorch's fast CPU path
    for CNNs; e.g. its max-pool is far faster there than in NCHW)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, *input_shape[1:], generator=_gen())
        if channels_last and x.dim() == 4:
            models = _channels_last(models, input_shape)
            x = x.contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for m in models.values():
                m.eval()
                for _ in range(warmup):
                    m(x)
            for _ in range(runs):
                for name, m in models.items():
                    t = time.perf_counter()
                    m(x)
                    times[name].append((time.perf_counter() - t) * 1000.0)
        return {name: float(statistics.median(ts)) for name, ts in times.items()}
    finally:
        torch.set_num_threads(old)


def measure_many(models: dict[str, nn.Module], input_shape: tuple[int, ...], *, runs: int = 30,
                 warmup: int | None = None, threads: int | None = None, channels_last: bool = False) -> dict[str, dict]:
    """:func:`measure` for several models (e.g. dense and pruned) with interleaved latency timing
    (``warmup`` passes per model and batch size; default ``min(10, runs)``; ``channels_last``: NHWC layout)."""
    example = torch.randn(1, *input_shape[1:], generator=_gen())
    warm = min(10, runs) if warmup is None else warmup
    lat = {b: latency_interleaved(models, input_shape, batch=b, runs=runs, warmup=warm, threads=threads,
                                  channels_last=channels_last)
           for b in (1, 32)}
    fmt = "channels_last" if channels_last and len(input_shape) == 4 else "contiguous"
    return {name: {"params": count_params(m), "flops": count_flops(m, example),
                   "latency_ms": {"b1": lat[1][name], "b32": lat[32][name]},
                   "threads": threads or torch.get_num_threads(), "latency_runs": runs, "memory_format": fmt}
            for name, m in models.items()}


def measure(model: nn.Module, input_shape: tuple[int, ...], *, runs: int = 20, threads: int | None = None) -> dict:
    """``{"params", "flops", "latency_ms": {"b1", "b32"}, "threads"}`` of ``model`` on CPU."""
    example = torch.randn(1, *input_shape[1:], generator=_gen())
    return {
        "params": count_params(model),
        "flops": count_flops(model, example),
        "latency_ms": {"b1": latency_ms(model, input_shape, batch=1, runs=runs, threads=threads),
                       "b32": latency_ms(model, input_shape, batch=32, runs=runs, threads=threads)},
        "threads": threads or torch.get_num_threads(),
    }
