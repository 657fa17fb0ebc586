"""Attention heads as pruning units: find attention modules, describe their head groups, remove heads.

A head ``h`` owns rows ``h*d .. (h+1)*d`` of every chunk of the query/key/value projections (one fused
``qkv`` Linear with 3 chunks, ``q`` + ``kv`` with 1 + 2, or split ``query``/``key``/``value``), the same
columns of the output projection, and one slice of every per-head parameter (relative-position bias tables,
logit scales, the last layer of a continuous position-bias MLP). Its output reaches the model only through the
output projection's input columns, so gating those columns to zero computes exactly what removing the head
does. Head counts and widths are updated on the module so its forward reshapes to the new shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# rules as data: how attention modules name their parts and attributes
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads")
HEAD_DIM_ATTRS = ("head_dim", "attention_head_size", "dim_head")
WIDTH_ATTRS = ("attn_dim", "all_head_size", "all_head_dim", "inner_dim")
SHAPE_ATTRS = ("bias_shape",)  # tuples ending in the head count (timm's relative-position bias modules)
# (child names, chunks of each): the projections that produce q, k and v
QKV_LAYOUTS = (
    (("qkv",), (3,)),
    (("q", "kv"), (1, 2)),
    (("query", "key", "value"), (1, 1, 1)),
    (("q_proj", "k_proj", "v_proj"), (1, 1, 1)),
    (("q", "k", "v"), (1, 1, 1)),
)
# where the output projection lives: a child of the attention module, or of its parent (transformers ViT-likes)
PROJ_PATHS = ("proj", "out_proj", "o_proj", "^output.dense", "^proj", "^out_proj")
# normalisations across all heads' channels couple the heads: removing one changes the others' outputs
_CROSS_HEAD_NORMS = (nn.LayerNorm, nn.GroupNorm)


@dataclass
class AttnSite:
    """One attention module whose heads can be removed as units."""

    name: str  # the module holding the head count
    projections: list[tuple[str, int]]  # (q/k/v Linear, number of head-blocks of width num_heads*head_dim)
    proj: str  # output projection reading the heads' concatenated values
    num_heads: int
    head_dim: int
    per_head: list[tuple[str, int]]  # (parameter or buffer, dim of length num_heads)
    per_channel: list[tuple[str, int]]  # (parameter or buffer, dim of length num_heads * head_dim)
    reason: str = ""  # why its heads stay (empty: prunable)

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def modules(self) -> list[str]:
        return [n for n, _ in self.projections]

    def rows(self, heads) -> list[int]:
        """Output rows of a projection with one head-block (chunk) that belong to ``heads``."""
        d = self.head_dim
        return [h * d + j for h in heads for j in range(d)]


def _int_attr(module: nn.Module, names) -> tuple[str | None, int | None]:
    for n in names:
        v = getattr(module, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return n, v
    return None, None


def _child(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _site(model: nn.Module, name: str, module: nn.Module) -> AttnSite | None:
    _, heads = _int_attr(module, HEAD_COUNT_ATTRS)
    if heads is None:
        return None
    projections = None
    for names, chunks in QKV_LAYOUTS:
        mods = [getattr(module, n, None) for n in names]
        if all(isinstance(m, nn.Linear) for m in mods):
            projections = [(_join(name, n), c, m) for n, c, m in zip(names, chunks, mods)]
            break
    if projections is None:
        return None
    widths = {m.out_features // c for _, c, m in projections if m.out_features % c == 0}
    if len(widths) != 1 or len(projections) != sum(1 for _, c, m in projections if m.out_features % c == 0):
        return None
    width = widths.pop()
    _, head_dim = _int_attr(module, HEAD_DIM_ATTRS)
    head_dim = head_dim or (width // heads if width % heads == 0 else None)
    if head_dim is None or head_dim * heads != width:
        return None
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    proj = None
    for path in PROJ_PATHS:
        full = _join(parent, path[1:]) if path.startswith("^") else _join(name, path)
        m = _child(model, full)
        if isinstance(m, nn.Linear) and m.in_features == width:
            proj = full
            break
    if proj is None:
        return None
    own = {p for p, _, _ in projections} | {proj}
    per_head, per_channel, reason = [], [], ""
    for cname, child in module.named_modules():
        full_child = _join(name, cname)
        if full_child in own or any(full_child.startswith(o + ".") for o in own):
            continue
        if isinstance(child, nn.Linear) and child.in_features == heads == child.out_features:
            reason = f"{full_child} mixes the heads (talking heads): heads not pruned"
            continue
        if isinstance(child, nn.Linear):  # only its outputs can be per head (a position-bias MLP's last layer)
            which = per_head if child.out_features == heads else per_channel if child.out_features == width else None
            if which is not None:
                which.extend([(f"{full_child}.{p}", 0) for p, _ in child.named_parameters(recurse=False)])
            continue
        if isinstance(child, _CROSS_HEAD_NORMS) and _norm_size(child) == width:
            reason = f"{full_child} normalises across all heads: heads not pruned"
        if "norm" in type(child).__name__.lower():
            continue  # q/k norms act within a head
        for pname, t in [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]:
            if not t.is_floating_point():
                continue
            dims_w = [d for d, s in enumerate(t.shape) if s == width]
            dims_h = [d for d, s in enumerate(t.shape) if s == heads]
            if len(dims_w) == 1:
                per_channel.append((_join(full_child, pname), dims_w[0]))
            elif len(dims_h) == 1 and isinstance(t, nn.Parameter):  # buffers of that size are coordinates
                per_head.append((_join(full_child, pname), dims_h[0]))
    if heads < 2 and not reason:
        reason = "a single head"
    return AttnSite(name=name, projections=[(p, c) for p, c, _ in projections], proj=proj, num_heads=heads,
                    head_dim=head_dim, per_head=per_head, per_channel=per_channel, reason=reason)


def _norm_size(norm: nn.Module) -> int:
    shape = getattr(norm, "normalized_shape", None) or (getattr(norm, "num_channels", 0),)
    return int(shape[-1])


def find_attention(model: nn.Module) -> list[AttnSite]:
    """Every attention module of ``model`` with a head count, q/k/v projections and an output projection."""
    sites = []
    for name, module in model.named_modules():
        site = _site(model, name, module) if name else None
        if site is not None:
            sites.append(site)
    return sites


# --------------------------------------------------------------------------------------------- removal


def slice_tensor(model: nn.Module, full: str, dim: int, index: torch.Tensor) -> None:
    owner_name, _, leaf = full.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if leaf in owner._parameters and owner._parameters[leaf] is not None:
        old = owner._parameters[leaf]
        owner._parameters[leaf] = nn.Parameter(old.data.index_select(dim, index.to(old.device)).clone(),
                                               requires_grad=old.requires_grad)
    else:
        old = owner._buffers[leaf]
        owner._buffers[leaf] = old.index_select(dim, index.to(old.device)).clone()


def slice_layer(model: nn.Module, name: str, keep: torch.Tensor, *, out: bool) -> None:
    """Keep output (``out``) or input channels ``keep`` of the Linear or ungrouped conv ``name``, in place."""
    layer = model.get_submodule(name)
    conv = isinstance(layer, nn.modules.conv._ConvNd)
    slice_tensor(model, f"{name}.weight", 0 if out else 1, keep)
    if out and layer.bias is not None:
        slice_tensor(model, f"{name}.bias", 0, keep)
    attr = ("out_channels" if out else "in_channels") if conv else ("out_features" if out else "in_features")
    setattr(layer, attr, len(keep))


def prune_heads(model: nn.Module, site: AttnSite, kept: list[int]) -> dict:
    """Keep only heads ``kept`` of ``site`` in ``model`` (in place); returns the attributes it set."""
    kept = sorted(int(h) for h in kept)
    width = site.width
    channels = torch.tensor(site.rows(kept), dtype=torch.long)
    heads = torch.tensor(kept, dtype=torch.long)
    for name, chunks in site.projections:
        rows = torch.cat([channels + j * width for j in range(chunks)])
        slice_layer(model, name, rows, out=True)
    slice_layer(model, site.proj, channels, out=False)
    for full, dim in site.per_channel:
        slice_tensor(model, full, dim, channels)
    for full, dim in site.per_head:
        slice_tensor(model, full, dim, heads)
    for sub in model.get_submodule(site.name).modules():  # e.g. the last Linear of a position-bias MLP
        if isinstance(sub, nn.Linear):
            sub.out_features, sub.in_features = sub.weight.shape
    module = model.get_submodule(site.name)
    for sub in list(module.modules())[1:]:  # helpers that know the head count (position-bias modules)
        for attr in HEAD_COUNT_ATTRS:
            if getattr(sub, attr, None) == site.num_heads:
                setattr(sub, attr, len(kept))
        for attr in SHAPE_ATTRS:
            shape = getattr(sub, attr, None)
            if isinstance(shape, tuple) and shape and shape[-1] == site.num_heads:
                setattr(sub, attr, (*shape[:-1], len(kept)))
    attrs = {}
    for attr in HEAD_COUNT_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            attrs[attr] = len(kept)
    for attr in WIDTH_ATTRS:
        if getattr(module, attr, None) == width:
            attrs[attr] = len(kept) * site.head_dim
    for k, v in attrs.items():
        setattr(module, k, v)
    return attrs
