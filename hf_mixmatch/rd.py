"""Layer-adaptive sparsity by rate–distortion and dynamic programming (Xu et al., ICCV 2023).

1. :func:`distortion_curves`: for every prunable layer ``l`` and every pruning amount ``a`` of a grid,
   prune only layer ``l`` by magnitude to fraction ``a``, run the calibration inputs and record
   ``D_l(a)``, the MSE between pruned and dense logits (mean over samples, or the worst sample).
   Curves are made non-decreasing (cumulative max) and can be cached as safetensors.
   ``method="sparsegpt"`` (this project's extension, for runs that reconstruct): the layer is pruned *and
   reconstructed* by SparseGPT at each amount instead, so ``D_l`` is the distortion that remains after
   reconstruction — the quantity the reconstructed model pays. Layers whose inputs are redundant reconstruct
   well and can take more sparsity than their masking curve suggests.
2. :func:`~hf_mixmatch.rd_dp.solve_dp` (in :mod:`hf_mixmatch.rd_dp`): with additivity
   ``D ≈ sum_l D_l(a_l)``, a knapsack DP over the layers in order picks one grid amount per layer minimizing
   the total distortion under the survivor budget ``(1 - target) * N``.

Zero-data mode: feed :func:`gaussian_inputs` as calibration inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError
from .layers import LayerInfo, get_weight
from .models import logits as default_forward
from .rd_dp import make_monotone

__all__ = ["default_grid", "distortion_curves", "gaussian_inputs"]

REDUCTIONS = ("mean", "worst")
METHODS = ("magnitude", "sparsegpt")  # how one layer is pruned at each grid amount


def default_grid(step: float = 0.01) -> torch.Tensor:
    """Pruning amounts ``0, step, ..., 1`` (float64)."""
    if not (0 < step <= 1):
        raise ConfigError(f"grid step must be in (0, 1], got {step}")
    k = round(1.0 / step)
    return torch.linspace(0.0, 1.0, k + 1, dtype=torch.float64)


def gaussian_inputs(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Zero-data calibration inputs: ``n`` standard-normal samples of ``shape`` (e.g. ``(3, 224, 224)``)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=gen)


def _batches(calib_inputs, batch_size: int) -> list[torch.Tensor]:
    if isinstance(calib_inputs, torch.Tensor):
        if calib_inputs.dim() < 2 or len(calib_inputs) == 0:
            raise ConfigError("calibration inputs must be a non-empty (N, C, H, W) tensor or an iterable of batches")
        return list(calib_inputs.split(batch_size))
    batches = []
    for batch in calib_inputs:
        if isinstance(batch, dict):
            batch = batch["pixel_values"]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        batches.append(batch)
    if not batches:
        raise ConfigError("calibration inputs are empty; give at least one batch")
    return batches


def _cache_key(model: nn.Module, layers: list[LayerInfo], batches: list[torch.Tensor], grid: torch.Tensor, reduction: str,
               method: str = "magnitude") -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([layer.name for layer in layers]).encode())
    for b in batches:
        h.update(b.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(grid.to(torch.float64).numpy().tobytes())
    h.update(reduction.encode())
    if method != "magnitude":  # magnitude keys stay as they were, so existing caches keep working
        h.update(method.encode())
    return h.hexdigest()


def _per_sample_mse(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (out.float() - ref.float()).pow(2).reshape(len(out), -1).mean(dim=1)


@torch.no_grad()
def distortion_curves(
    model: nn.Module,
    layers: list[LayerInfo],
    calib_inputs: torch.Tensor | Iterable,
    *,
    grid: torch.Tensor | None = None,
    step: float | None = None,
    reduction: str = "mean",
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    monotone: bool = True,
    device: torch.device | str | None = None,
    progress: bool = False,
    method: str = "magnitude",
) -> dict[str, torch.Tensor]:
    """Per-layer output distortion ``D_l(a)`` on ``grid`` (float64 tensors, one value per grid point).

    ``reduction="mean"``: mean over samples of the per-sample logits MSE; ``"worst"``: the largest
    per-sample MSE (the paper's runs). Weights are restored after each layer. With ``cache_dir`` the
    curves are saved to / loaded from ``rd_curves_<hash>.safetensors`` keyed by the model's state,
    the layers, the inputs, the grid, the reduction and the method (raw curves are cached; ``monotone``
    is applied after loading). ``method``: ``"magnitude"`` (the paper: the layer's smallest weights
    zeroed) or ``"sparsegpt"`` (the layer pruned and reconstructed by SparseGPT, every other layer dense).
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if method not in METHODS:
        raise ConfigError(f"RD distortion method must be one of {METHODS}, got {method!r}")
    if grid is None:
        grid = default_grid(step if step is not None else 0.01)
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if grid.dim() != 1 or len(grid) == 0 or grid.min() < 0 or grid.max() > 1 or (grid.diff() <= 0).any():
        raise ConfigError("grid must be a strictly increasing 1-D sequence of amounts in [0, 1]")
    forward = forward or default_forward
    batches = _batches(calib_inputs, batch_size)

    cache_path = None
    if cache_dir is not None:
        from safetensors.torch import load_file, save_file

        key = _cache_key(model, layers, batches, grid, reduction, method)
        cache_path = Path(cache_dir) / f"rd_curves_{key[:32]}.safetensors"
        if cache_path.exists():
            curves = load_file(str(cache_path))
            if all(layer.name in curves for layer in layers):
                curves = {layer.name: curves[layer.name] for layer in layers}
                return make_monotone(curves) if monotone else curves

    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    batches = [b.to(device) for b in batches]
    dense = [forward(model, b) for b in batches]

    curves: dict[str, torch.Tensor] = {}
    iterator = layers
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(layers, desc="distortion curves")
    inputs = torch.cat(batches) if method == "sparsegpt" else None
    for layer in iterator:
        weight = get_weight(model, layer)
        original = weight.detach().clone()
        values = torch.zeros(len(grid), dtype=torch.float64)
        counts = [min(original.numel(), math.floor(a * original.numel() + 1e-9)) for a in grid.tolist()]
        levels = (_magnitude_levels(weight, original, counts) if method == "magnitude"
                  else _sparsegpt_levels(model, layer, weight, inputs, counts, forward, batch_size))
        try:
            for i in levels:  # the layer now holds its weights pruned at grid point i; 0 pruned: zero distortion
                per_sample = torch.cat([_per_sample_mse(forward(model, b), ref) for b, ref in zip(batches, dense)])
                values[i] = per_sample.mean() if reduction == "mean" else per_sample.max()
        finally:
            weight.data.copy_(original)
        curves[layer.name] = values
    model.train(was_training)

    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in curves.items()}, str(cache_path), metadata={"grid": json.dumps(grid.tolist()), "reduction": reduction})
    return make_monotone(curves) if monotone else curves


def _magnitude_levels(weight: torch.Tensor, original: torch.Tensor, counts: list[int]):
    """Zero the smallest ``counts[i]`` weights of ``weight`` in place, one grid point after the other (yields i)."""
    flat = weight.data.view(-1) if weight.data.is_contiguous() else None
    order = original.reshape(-1).abs().argsort(stable=True)
    pruned = 0
    for i, k in enumerate(counts):
        if k == 0:
            continue
        if flat is not None:
            flat[order[pruned:k]] = 0  # counts are non-decreasing: extend the pruned prefix
        else:
            w = weight.data.reshape(-1).clone()
            w[order[:k]] = 0
            weight.data.copy_(w.reshape(weight.shape))
        pruned = k
        yield i


def _sparsegpt_levels(model, layer: LayerInfo, weight: torch.Tensor, inputs: torch.Tensor, counts: list[int],
                      forward, batch_size: int):
    """Put the layer's SparseGPT reconstruction at ``counts[i]`` zeros in place, one grid point after the other.
    SparseGPT's update alone, without the kept-weight refit: the curves only rank layers against each other, and
    the refit at every grid point of every layer would multiply their cost."""
    from .reconstruct import ReconstructSettings, layer_levels

    settings = ReconstructSettings(batch_size=batch_size, refit=0)
    for i, new in layer_levels(model, layer, inputs, counts, settings=settings, forward=forward):
        weight.data.copy_(new.to(weight.device))
        yield i
