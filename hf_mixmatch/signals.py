"""Sensitivity signals, computed in one calibration pass and shared across processes with Accelerate.

Per prunable layer (lower score = pruned first):
- ``magnitude``  |w|
- ``gradient``   mean over calibration batches of |dL/dw|   (E_b|g_b|, not |E_b g_b|)
- ``hybrid``     |w| * mean_b |dL/dw|
- ``snip``       |w * mean_b dL/dw|                        (used by Phase-1 ranges and the SNIP baseline)
- ``grasp``      w * (H g)                                  (GraSP removes the highest -w*Hg first)
- ``activation`` |w_ij| * ||x_j||_2 over calibration tokens/pixels (Wanda; :mod:`hf_mixmatch.activations`)
- ``activation_row``  rank of ``activation`` inside the weight's output row (Wanda's per-row comparison)

Each process takes its share of a fixed list of calibration batches; per-batch sums are reduced across
processes, so the result equals the single-process result up to float summation order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .layers import LayerInfo, weights_of
from .models import logits as default_forward
from .precision import autocast

logger = logging.getLogger(__name__)

SIGNALS = ("magnitude", "gradient", "hybrid")
EXTRA_SIGNALS = ("snip", "grasp")
ACTIVATION_SIGNALS = ("activation", "activation_row")
ALL_SIGNALS = SIGNALS + EXTRA_SIGNALS + ACTIVATION_SIGNALS
SELECTABLE_SIGNALS = SIGNALS + ("activation",)  # what a Mix-and-Match run may use as its signals

Scores = dict[str, dict[str, torch.Tensor]]  # signal -> layer name -> score tensor


def _double_backward_attention():
    """Force the math SDPA kernel, the only one with a second derivative (GraSP's Hessian-gradient product)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _reduce_sum(tensors: list[torch.Tensor], accelerator) -> list[torch.Tensor]:
    if accelerator is None or accelerator.num_processes == 1:
        return tensors
    return [accelerator.reduce(t, reduction="sum") for t in tensors]


def compute_scores(
    model: nn.Module,
    layers: list[LayerInfo],
    calib: TensorDataset,
    *,
    signals: tuple[str, ...] = ALL_SIGNALS,
    batch_size: int = 64,
    accelerator=None,
    train_mode: bool = False,
    forward: Callable = default_forward,
    progress: bool = True,
    precision: str = "fp32",
) -> Scores:
    """Compute the requested signals for every prunable layer (returned on CPU, float32). Forward passes run
    under ``autocast(precision)``; gradients land on the fp32 weights and are accumulated in fp32.

    GraSP is optional: when an operation of the model has no second derivative (MobileNetV3's hardsigmoid),
    it is skipped with a warning and ``"grasp"`` is absent from the result.
    """
    unknown = set(signals) - set(ALL_SIGNALS)
    if unknown:
        from .errors import ConfigError

        raise ConfigError(f"unknown signal(s) {sorted(unknown)}: choose from {list(ALL_SIGNALS)}")
    weights = weights_of(model, layers)
    names = [layer.name for layer in layers]
    params = [weights[n] for n in names]
    out: Scores = {}
    if "magnitude" in signals:
        out["magnitude"] = {n: w.detach().abs().float().cpu() for n, w in zip(names, params)}
    if any(s in signals for s in ACTIVATION_SIGNALS):
        from .activations import activation_scores

        out.update(activation_scores(model, layers, calib.tensors[0], signals=tuple(signals), batch_size=batch_size,
                                     accelerator=accelerator, forward=forward))
    needs_grad = any(s in signals for s in ("gradient", "hybrid", "snip", "grasp"))
    if not needs_grad:
        return out

    device = params[0].device
    x_all, y_all = calib.tensors
    all_batches = _batches(len(x_all), batch_size)
    if accelerator is not None and accelerator.num_processes > 1:
        my_batches = all_batches[accelerator.process_index :: accelerator.num_processes]
    else:
        my_batches = all_batches
    is_main = accelerator is None or accelerator.is_main_process
    was_training = model.training
    # scoring passes may update buffers (BatchNorm running stats under train_mode): put every one back afterwards
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    model.train(train_mode)
    requires = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    loss_fn = nn.CrossEntropyLoss()
    try:
        abs_sum = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        sum_g = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        for s, e in tqdm(my_batches, desc="scoring (gradients)", unit="batch", leave=False,
                         disable=not (progress and is_main)):
            x, y = x_all[s:e].to(device), y_all[s:e].to(device)
            with autocast(precision, device):
                loss = loss_fn(forward(model, x).float(), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)  # unused by the forward: no gradient
            for a, g_sum, g in zip(abs_sum, sum_g, grads):
                if g is None:
                    continue
                a.add_(g.abs().float())
                g_sum.add_(g.float())
        abs_sum = _reduce_sum(abs_sum, accelerator)
        sum_g = _reduce_sum(sum_g, accelerator)
        nb = float(len(all_batches))
        mean_abs = [a / nb for a in abs_sum]
        mean_g = [g / nb for g in sum_g]
        if "gradient" in signals:
            out["gradient"] = {n: a.cpu() for n, a in zip(names, mean_abs)}
        if "hybrid" in signals:
            out["hybrid"] = {n: (p.detach().abs().float() * a).cpu() for n, p, a in zip(names, params, mean_abs)}
        if "snip" in signals:
            out["snip"] = {n: (p.detach().float() * g).abs().cpu() for n, p, g in zip(names, params, mean_g)}
        if "grasp" in signals:
            try:
                out["grasp"] = _grasp(model, names, params, mean_g, x_all, y_all, my_batches, len(all_batches), device,
                                      forward, loss_fn, accelerator, progress and is_main, precision)
            except RuntimeError as exc:
                if not no_second_derivative(exc):
                    raise
                logger.warning("GraSP skipped: %s (an operation has no second derivative); the scores without it "
                               "are still computed", str(exc).splitlines()[0])
    finally:
        for p, r in zip(params, requires):
            p.requires_grad_(r)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buf, value in saved_buffers:
                buf.copy_(value)
    return out


def no_second_derivative(exc: BaseException) -> bool:
    """True when ``exc`` says an operation of the model has no double backward (e.g. hardsigmoid)."""
    msg = str(exc)
    return "derivative for" in msg and "not implemented" in msg


def _grasp(model, names, params, mean_g, x_all, y_all, batches, n_batches, device, forward, loss_fn, accelerator,
           progress, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """GraSP's w * (H g): a Hessian-gradient product per batch (double backward), averaged over all batches."""
    hg_sum = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for s, e in tqdm(batches, desc="scoring (GraSP Hg)", unit="batch", leave=False, disable=not progress):
        x, y = x_all[s:e].to(device), y_all[s:e].to(device)
        with _double_backward_attention(), autocast(precision, device):  # fused attention: no 2nd derivative
            loss = loss_fn(forward(model, x).float(), y)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            z = sum((g * gm.to(g.dtype)).sum() for g, gm in zip(grads, mean_g) if g is not None)
            hg = torch.autograd.grad(z, params, allow_unused=True)
        for acc, h in zip(hg_sum, hg):
            if h is not None:
                acc.add_(h.detach().float())
    hg_sum = _reduce_sum(hg_sum, accelerator)
    return {n: (p.detach().float() * (h / n_batches)).cpu() for n, p, h in zip(names, params, hg_sum)}


# ------------------------------------------------------------------------------------------- caching


def fingerprint(model: nn.Module, layers: list[LayerInfo], calib: TensorDataset, **options) -> str:
    """A hash of the prunable weights, the calibration tensors and the scoring options."""
    h = hashlib.sha256()
    for layer in layers:
        w = model.get_submodule(layer.name).weight.detach().float().cpu()
        h.update(layer.name.encode())
        h.update(w.numpy().tobytes())
    for t in calib.tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_scores(scores: Scores, path: str | Path, *, fingerprint: str) -> None:
    from safetensors.torch import save_file

    flat = {f"{sig}/{layer}": t.contiguous() for sig, per in scores.items() for layer, t in per.items()}
    tmp = Path(str(path) + ".tmp")
    save_file(flat, str(tmp), metadata={"fingerprint": fingerprint, "format": "hf_mixmatch.scores.v1"})
    tmp.replace(path)


def load_scores(path: str | Path, *, fingerprint: str | None = None) -> Scores | None:
    """Scores saved by :func:`save_scores`, or None when absent or computed for other inputs."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            return None
        out: Scores = {}
        for key in f.keys():
            sig, layer = key.split("/", 1)
            out.setdefault(sig, {})[layer] = f.get_tensor(key)
    return out
