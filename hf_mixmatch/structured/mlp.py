"""MLP hidden units found by name, without Torch-Pruning: the fallback when its dependency graph cannot be built
in time or at all (CoAtNet, MobileViT-v2, FocalNet, CvT ... trace too slowly or fail inside it).

An MLP site is a module with an up projection and a down projection (``fc1``/``fc2`` Linears or 1x1 convs, or a
transformers ``intermediate.dense``/``output.dense`` pair) whose hidden width matches. Hidden unit ``u`` is row
``u`` of the up projection (and its bias), column ``u`` of the down projection, and entry ``u`` of any per-channel
norm between them (BatchNorm). Gating column ``u`` of the down projection computes what removing the unit does
when nothing else reads the hidden activations, which the pruned-vs-gated check confirms for every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import slice_layer, slice_tensor

# rules as data: (up, down) child paths of an MLP module
PAIRS = (("fc1", "fc2"), ("intermediate.dense", "output.dense"))
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm,)
_CROSS_CHANNEL = (nn.LayerNorm, nn.GroupNorm)


@dataclass
class MlpSite:
    """The hidden units of one MLP."""

    name: str
    up: str
    down: str
    hidden: int
    per_unit: list[str]  # per-channel norms between the projections (sliced with the units)
    reason: str = ""


def _layer(module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size == (1, 1))


def _width(module, out: bool) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features if out else module.in_features
    return module.out_channels if out else module.in_channels


def _get(module: nn.Module, path: str):
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def find_mlps(model: nn.Module) -> list[MlpSite]:
    """Every MLP of ``model`` whose up and down projections are found by name and agree on the hidden width."""
    sites = []
    for name, module in model.named_modules():
        for up_path, down_path in PAIRS:
            up, down = _get(module, up_path), _get(module, down_path)
            if not (_layer(up) and _layer(down)) or _width(up, True) != _width(down, False):
                continue
            hidden = _width(up, True)
            per_unit, reason = [], ""
            for cname, child in module.named_children():
                if isinstance(child, _PER_CHANNEL) and child.num_features == hidden:
                    per_unit.append(f"{name}.{cname}" if name else cname)
                elif isinstance(child, _CROSS_CHANNEL):
                    size = getattr(child, "normalized_shape", None) or (child.num_channels,)
                    if int(size[-1]) == hidden:
                        reason = f"{name}.{cname} normalises across the hidden units"
            prefix = f"{name}." if name else ""
            if hidden < 2 and not reason:
                reason = "fewer than 2 units"
            sites.append(MlpSite(name=name, up=prefix + up_path, down=prefix + down_path, hidden=hidden,
                                 per_unit=per_unit, reason=reason))
            break
    return sites


def prune_units(model: nn.Module, site: MlpSite, kept: list[int]) -> None:
    """Keep only hidden units ``kept`` of ``site`` in ``model`` (in place)."""
    keep = torch.tensor(sorted(int(u) for u in kept), dtype=torch.long)
    slice_layer(model, site.up, keep, out=True)
    slice_layer(model, site.down, keep, out=False)
    for norm_name in site.per_unit:
        norm = model.get_submodule(norm_name)
        for n, t in [*norm.named_parameters(recurse=False), *norm.named_buffers(recurse=False)]:
            if t is not None and t.dim() == 1 and t.shape[0] == site.hidden:
                slice_tensor(model, f"{norm_name}.{n}", 0, keep)
        norm.num_features = len(keep)
