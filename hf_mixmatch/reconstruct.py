"""Layer-wise reconstruction after pruning: SparseGPT (Frantar & Alistarh, 2023) with exact per-layer counts.

For a given allocation (per-layer sparsities ``rho_l``), layers are processed in the order the forward calls
them; each layer's ``H = X^T X`` is accumulated (:mod:`hf_mixmatch.activations`) from the model whose earlier
layers are already pruned and updated, so memory holds one layer's Hessian at a time (layers that read the same
input tensor, like q/k/v, share one pass, and one Hessian when their geometry matches). Per layer (per group for
grouped / depthwise convolutions):

1. ``H += lambda I`` with ``lambda = damp * mean(diag H)`` (1%); ``U`` = upper Cholesky factor of ``H^-1``;
2. columns in blocks of ``blocksize``; at the start of a block the block's quota of pruned weights is taken over
   all rows and the block's columns by the OBS saliency ``w^2 / U_jj^2`` (adaptive mask selection). The quotas
   are ``floor(k * e / d) - floor(k * s / d)`` for block ``[s, e)``, so they add up to exactly
   ``k = floor(rho * n)`` — the measured sparsity equals masking's;
3. column by column, the pruned weight's error ``(w - q) / U_jj`` is compensated on the not-yet-processed columns
   of the same row (``- err * U[j, j+1:]``), then the block's errors are propagated to the later blocks;
4. refit (``refit`` > 0 steps, :func:`refit_kept`): the kept weights move towards the least-squares optimum for
   the mask SparseGPT chose (conjugate gradients on each row's kept coordinates), which its sequential updates do
   not reach because they also compensate on weights pruned later;
5. safeguard: a row whose calibration output error ``e H e^T`` (undamped) would be larger than masking the same
   weights without any update keeps the masked original row, so per row the result is never worse than masking.

The mask is checked afterwards (pruned entries zero, count exact). Deterministic given the calibration set,
its order and the batch size. Multi-process: Hessians are summed over processes, every process then runs the
same float64 solve, so all hold the same weights. Layers the forward never calls are masked by magnitude.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from .activations import accumulate_cross, accumulate_hessians, forward_groups, groups_of, weight_from_matrix, weight_matrix
from .errors import ConfigError
from .layers import LayerInfo, get_weight
from .masks import apply_sparsities, keep_mask, prune_count
from .adapters import copy_model
from .models import logits as default_forward

logger = logging.getLogger(__name__)

RECONSTRUCT_CHOICES = ("none", "sparsegpt")
RECONSTRUCT_TARGETS = ("pruned", "dense")
REFIT_DEFAULT = 20  # conjugate-gradient steps of the kept-weight refit (docs/BENCHMARKS_quality.md)


@dataclass(frozen=True)
class ReconstructSettings:
    """How a variant is reconstructed; recorded in results.json and each variant's ``mixmatch.json``."""

    method: str = "sparsegpt"
    blocksize: int = 128
    damp: float = 0.01
    batch_size: int = 64
    target: str = "dense"  # "dense": the dense model's outputs W X_dense; "pruned": W X (SparseGPT's paper)
    refit: int = REFIT_DEFAULT  # conjugate-gradient steps refitting the kept weights to their mask's optimum (0: SparseGPT's)

    def __post_init__(self) -> None:
        if self.method not in RECONSTRUCT_CHOICES[1:]:
            raise ConfigError(f"reconstruction method must be one of {list(RECONSTRUCT_CHOICES[1:])}, "
                              f"got {self.method!r}")
        if self.target not in RECONSTRUCT_TARGETS:
            raise ConfigError(f"reconstruction target must be one of {list(RECONSTRUCT_TARGETS)}, got {self.target!r}")
        if self.blocksize <= 0 or not (0.0 <= self.damp < 1.0) or self.batch_size <= 0 or self.refit < 0:
            raise ConfigError("reconstruction needs blocksize > 0, 0 <= damp < 1, batch_size > 0 and refit >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------- one layer


def inverse_cholesky(h: torch.Tensor, damp: float, *, with_lambda: bool = False):
    """Upper Cholesky factor of ``(H + lambda I)^-1`` per group; damping raised x10 until it factorizes.
    ``with_lambda``: return ``(U, lambda)`` (``lambda`` per group, the damping actually used).

    At most two ``H``-sized buffers besides ``h`` are alive at once (the damped copy and its factor, then the factor
    and the inverse, then the inverse and ``U``): on a large layer (d = 4608 for a 3x3 conv with 512 input
    channels) each is 170 MB in float64."""
    mean_diag = h.diagonal(dim1=-2, dim2=-1).mean(-1)
    base = torch.where(mean_diag > 0, mean_diag, torch.ones_like(mean_diag))
    factor = damp
    for _ in range(8):
        lam = (factor * base).clamp(min=torch.finfo(h.dtype).tiny)
        damped = h.clone()
        damped.diagonal(dim1=-2, dim2=-1).add_(lam[:, None])
        chol, info = torch.linalg.cholesky_ex(damped)
        del damped
        if int(info.max()) == 0:
            hinv = torch.cholesky_inverse(chol)
            del chol
            u, info = torch.linalg.cholesky_ex(hinv, upper=True)
            del hinv
            if int(info.max()) == 0:
                return (u, lam) if with_lambda else u
        factor = max(factor * 10, 1e-6)
    raise ConfigError("the calibration Hessian of a layer is not positive definite even with 1e2 x damping; "
                      "use more calibration samples")


def _block_quotas(k: int, d: int, blocksize: int) -> list[tuple[int, int, int]]:
    """``(start, end, pruned count)`` per column block; counts add up to ``k`` exactly."""
    return [(s, min(s + blocksize, d), (k * min(s + blocksize, d)) // d - (k * s) // d) for s in range(0, d, blocksize)]


def sparsegpt_matrix(w: torch.Tensor, h: torch.Tensor, k: int, *, blocksize: int = 128, damp: float = 0.01,
                     prune: torch.Tensor | None = None, u: torch.Tensor | None = None,
                     cross: torch.Tensor | None = None, refit: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prune exactly ``k`` of ``w`` ``(G, R, d)`` given ``h`` ``(G, d, d)`` (float64 both).

    Returns ``(new weights, pruned mask, rows reset to plain masking by the safeguard)``. With ``prune`` given
    (a ``(G, R, d)`` bool mask), that mask is used instead of the OBS selection (``k`` is then its count). ``u``:
    the factor :func:`inverse_cholesky` returns for ``h`` and ``damp``, when solving one layer at many counts.

    ``cross`` (``X_dense^T X``, :func:`~hf_mixmatch.activations.accumulate_cross`): the target is the dense model's
    output ``W X_dense`` instead of ``W X``. Since ``sum ||W x_dense - V x||^2 = ||(W* - V) X^T||^2 + const`` with
    ``W*`` the least-squares fit of the dense outputs on the pruned inputs, SparseGPT runs unchanged on ``W*``
    (``W + (W C - W H)(H + lambda I)^-1``, ridge towards ``W``: exactly ``W`` when the inputs are unchanged).
    """
    g, r, d = w.shape
    if prune is not None:
        k = int(prune.sum())
    if not 0 <= k <= w.numel():
        raise ConfigError(f"cannot prune {k} of {w.numel()} weights")
    if u is None:
        u, lam = inverse_cholesky(h, damp, with_lambda=True)
    else:
        lam = damp * h.diagonal(dim1=-2, dim2=-1).mean(-1)
    # linear term of the output error: sum ||target - V x||^2 = V H V^T - 2 V . lin + const, per row
    lin = w @ h if cross is None else w @ cross
    work = w.clone()
    if cross is not None:  # W* = W + (lin - W H) (H + lambda I)^-1, with (H + lambda I)^-1 = U^T U
        work += ((lin - w @ h) @ u.transpose(1, 2)) @ u
    target = work.clone() if refit > 0 else None  # the unconstrained optimum the masked weights approach
    pruned = torch.zeros_like(w, dtype=torch.bool) if prune is None else prune.clone()
    for s, e, quota in _block_quotas(k, d, blocksize):
        blk = work[:, :, s:e]  # a view: updates below land in ``work``
        ub = u[:, s:e, s:e]
        diag = ub.diagonal(dim1=-2, dim2=-1)  # (G, B)
        if prune is None and quota > 0:
            sal = (blk.pow(2) / diag[:, None, :].pow(2)).reshape(-1)
            pruned[:, :, s:e] = (~keep_mask(sal, quota)).view(g, r, e - s)
        mask_b = pruned[:, :, s:e]
        errs = torch.zeros_like(blk)
        for j in range(e - s):
            col = blk[:, :, j]
            q = torch.where(mask_b[:, :, j], torch.zeros_like(col), col)
            err = (col - q) / diag[:, j, None]  # (G, R)
            blk[:, :, j:] -= err[:, :, None] * ub[:, j, None, j:]
            blk[:, :, j] = q
            errs[:, :, j] = err
        if e < d:
            work[:, :, e:] -= errs @ u[:, s:e, e:]
    work[pruned] = 0.0
    if target is not None:
        work = refit_kept(work, ~pruned, h, lam, target, iters=refit)
    # safeguard, per row: never worse than masking the same weights without an update (undamped H)
    masked = torch.where(pruned, torch.zeros_like(w), w)
    worse = _output_error(work, h, lin) > _output_error(masked, h, lin)
    work = torch.where(worse[:, :, None], masked, work)
    return work, pruned, int(worse.sum())


_CG_RTOL = 1e-7  # relative residual at which a row's refit is done


def refit_kept(v: torch.Tensor, keep: torch.Tensor, h: torch.Tensor, lam: torch.Tensor, target: torch.Tensor, *,
               iters: int) -> torch.Tensor:
    """Refit the kept weights of ``v`` ``(G, R, d)`` to the least-squares optimum for their mask.

    SparseGPT's column-by-column updates compensate each pruned weight on every later column, including the ones
    pruned after it, so its result is not the optimum of the damped output error
    ``(V - T)(H + lambda I)(V - T)^T`` over the weights the mask keeps (``T``: the unconstrained optimum, ``W`` or
    the refit of the dense outputs). Here every row runs ``iters`` steps of conjugate gradients (Jacobi
    preconditioned) on its kept coordinates, started from SparseGPT's weights: each step lowers the error, pruned
    entries stay exactly zero, and ``iters`` at least the row's kept count reaches the exact optimum (in exact
    arithmetic). One batched ``(G, R, d) x (G, d, d)`` product per step, all rows at once; besides ``H`` it holds
    a few weight-sized buffers only."""
    lam = lam[:, None, None]

    def damped(m: torch.Tensor) -> torch.Tensor:  # m (H + lambda I), without an H-sized copy
        return m @ h + lam * m

    keep = keep.to(v.dtype)
    diag = h.diagonal(dim1=-2, dim2=-1)[:, None, :] + lam  # (G, 1, d), > 0
    x = v * keep
    res = keep * damped(target - x)  # minus the gradient, on the kept coordinates
    z = res / diag
    p = z.clone()
    rz = (res * z).sum(-1, keepdim=True)
    # a row stops once its residual is down to rounding (steps past that would only fit float noise)
    floor = rz * _CG_RTOL ** 2
    tiny = torch.finfo(v.dtype).tiny
    for _ in range(iters):
        ap = keep * damped(p)
        pap = (p * ap).sum(-1, keepdim=True)
        live = (pap > tiny) & (rz > floor)
        alpha = torch.where(live, rz / pap.clamp(min=tiny), torch.zeros_like(pap))
        x += alpha * p
        res -= alpha * ap
        z = res / diag
        rz_new = (res * z).sum(-1, keepdim=True)
        beta = torch.where(rz > tiny, rz_new / rz.clamp(min=tiny), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
        if not bool(live.any()):
            break
    return x


def _output_error(v: torch.Tensor, h: torch.Tensor, lin: torch.Tensor) -> torch.Tensor:
    """Per row, the calibration output error of weights ``v`` up to a constant: ``v H v^T - 2 v . lin``."""
    return torch.einsum("grd,gde,gre->gr", v, h, v) - 2 * (v * lin).sum(-1)


@torch.no_grad()
def layer_levels(model: nn.Module, layer: LayerInfo, inputs: torch.Tensor, counts: list[int], *,
                 settings: ReconstructSettings = ReconstructSettings(), forward: Callable = default_forward):
    """SparseGPT on ``layer`` alone (every other layer as it is), once per pruned count in ``counts``.

    Yields ``(index, weight)`` per count > 0: the layer's reconstructed weight with exactly that many zeros (the
    model itself is not modified). One Hessian and one inverse factor serve every count."""
    weight = get_weight(model, layer)
    module = model.get_submodule(layer.name)
    h = accumulate_hessians(model, [layer], inputs, batch_size=settings.batch_size, forward=forward)[layer.name]
    mat = weight_matrix(weight.detach(), layer, groups_of(module, layer)).double().cpu()
    u = inverse_cholesky(h, settings.damp)
    for i, k in enumerate(counts):
        if k > 0:
            new, _, _ = sparsegpt_matrix(mat, h, k, blocksize=settings.blocksize, damp=settings.damp, u=u)
            yield i, weight_from_matrix(new, layer, tuple(weight.shape)).to(weight.dtype)


# --------------------------------------------------------------------------------------------- the model


@torch.no_grad()
def reconstruct(model: nn.Module, layers: list[LayerInfo], sparsities: dict[str, float], inputs: torch.Tensor, *,
                settings: ReconstructSettings = ReconstructSettings(), accelerator=None,
                forward: Callable = default_forward) -> dict:
    """Prune every layer to ``floor(rho * n)`` zeros and reconstruct it, in forward order, in place.

    Returns ``{"masks": {layer: keep mask}, "safeguard_rows": int, "masked_only": [layers never called]}``.
    """
    if len(inputs) == 0:
        raise ConfigError("reconstruction needs calibration samples (--calib-samples > 0)")
    groups, uncalled = forward_groups(model, layers, inputs[:1], forward)
    dense = copy_model(model) if settings.target == "dense" else None  # the outputs every layer aims at
    masks: dict[str, torch.Tensor] = {}
    reset_rows = 0
    for group in groups:
        todo = [layer for layer in group if prune_count(sparsities.get(layer.name, 0.0), layer.numel) > 0]
        if not todo:
            continue
        stats = dict(batch_size=settings.batch_size, accelerator=accelerator, forward=forward)
        if dense is None:
            hessians, cross = accumulate_hessians(model, todo, inputs, **stats), None
        else:
            hessians, cross = accumulate_cross(model, dense, todo, inputs, **stats)
        for layer in todo:
            weight = get_weight(model, layer)
            k = prune_count(sparsities[layer.name], layer.numel)
            mat = weight_matrix(weight.detach(), layer, groups_of(model.get_submodule(layer.name), layer))
            new, pruned, reset = sparsegpt_matrix(mat.double().cpu(), hessians[layer.name], k,
                                                  blocksize=settings.blocksize, damp=settings.damp,
                                                  cross=None if cross is None else cross[layer.name],
                                                  refit=settings.refit)
            reset_rows += reset
            weight.copy_(weight_from_matrix(new, layer, tuple(weight.shape)).to(weight.dtype))
            keep = ~weight_from_matrix(pruned, layer, tuple(weight.shape)).to(weight.device)
            # re-check the mask: exact count, pruned entries exactly zero
            if int((~keep).sum()) != k or bool((weight[~keep] != 0).any()):
                raise RuntimeError(f"reconstruction of {layer.name} broke its mask (expected {k} zeros)")
            masks[layer.name] = keep
        del hessians, cross
    if uncalled:
        logger.warning("layers never called by the forward are masked by magnitude, not reconstructed: %s",
                       [layer.name for layer in uncalled])
        magnitude = {layer.name: get_weight(model, layer).detach().abs() for layer in uncalled}
        masks.update(apply_sparsities(model, uncalled, sparsities, magnitude))
    for layer in layers:
        if layer.name not in masks:
            masks[layer.name] = torch.ones_like(get_weight(model, layer), dtype=torch.bool)
    return {"masks": masks, "safeguard_rows": reset_rows, "masked_only": [layer.name for layer in uncalled]}


def make_reconstructor(settings: ReconstructSettings, inputs: torch.Tensor, *, accelerator=None,
                       forward: Callable = default_forward):
    """A callable with :func:`~hf_mixmatch.masks.apply_sparsities`' signature that reconstructs instead of masking
    (the score is not used: SparseGPT chooses its own mask by OBS saliency)."""

    def apply(model, layers, sparsities, score=None):
        return reconstruct(model, layers, sparsities, inputs, settings=settings, accelerator=accelerator,
                           forward=forward)["masks"]

    return apply


RECONSTRUCTORS = {"sparsegpt": make_reconstructor}


# ----------------------------------------------------------------------------------- which variants to do


def nondominated_layers(points: list[dict], *, x: str = "sparsity", y: str = "accuracy") -> dict[str, int]:
    """``{id: depth}``: 1 for the Pareto front, 2 for the front of the rest, and so on (both maximized)."""
    from .pareto import pareto_front

    depth: dict[str, int] = {}
    rest = list(points)
    level = 0
    while rest:
        level += 1
        ids = set(pareto_front(rest, x=x, y=y))
        for p in rest:
            if p["id"] in ids:
                depth[p["id"]] = level
        rest = [p for p in rest if p["id"] not in ids]
    return depth


def reconstruction_candidates(variants: list[dict], depth: int) -> list[str]:
    """The rule: reconstruct the one-shot variants on the first ``depth`` non-dominated layers (1 = the one-shot
    front). Reconstruction keeps each variant's sparsity and usually raises its accuracy; a variant dominated
    one-shot by ``depth`` layers of others is taken as unlikely to overtake all of them."""
    levels = nondominated_layers(variants)
    return [v["id"] for v in variants if levels[v["id"]] <= depth]
