"""Coupled-parameter groups from Torch-Pruning's DepGraph, split at component boundaries.

A *component* is a set of modules named by patterns (``fnmatch`` globs, or regexes prefixed ``re:``).
A DepGraph group couples every tensor dimension that must shrink together when one channel is removed
(a conv's output channels, its BatchNorm, the next conv's input channels, a residual stream ...).
DepGraph cannot split a coupled group (the shapes would no longer match), so a group whose members fall
in two or more components is **kept dense**; it is listed with ``prunable=False`` and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..errors import ConfigError, StructuredUnsupported
from .attention import AttnSite, find_attention
from .components import LAYOUTS, _match, component_of, derive_components, parse_components
from .guard import time_limit, unsupported_on_failure
from .mlp import MlpSite, find_mlps

DISCOVERY_SECONDS = 60.0  # default time bound of group discovery
# rules as data: groups that cannot be represented by gating their consumers' inputs stay dense
_CROSS_CHANNEL_NORMS = ("LayerNorm", "RMSNorm", "GroupNorm")  # class-name parts: statistics over all channels
_WEIGHT_STANDARDIZED = ("StdConv",)  # class-name parts: weights standardised over the input channels


# ------------------------------------------------------------------------------------------------ groups


@dataclass
class Consumer:
    """A conv/linear layer reading the group's channels: input channel ``chan`` carries unit ``unit``."""

    module: str
    chan: list[int]
    unit: list[int]


@dataclass
class ParamDim:
    """Dimension ``dim`` of parameter ``param`` (full length ``full``): channel ``chan[i]`` carries ``unit[i]``."""

    param: str
    dim: int
    full: int
    chan: list[int]
    unit: list[int]


@dataclass
class StructGroup:
    """One DepGraph group: ``size`` units of ``unit_width`` channels each (1, or a head's width)."""

    index: int
    root: str
    size: int
    unit_width: int
    members: list[str]
    components: list[str]
    prunable: bool
    reason: str = ""
    kind: str = "channels"  # "channels" | "heads"
    consumers: list[Consumer] = field(default_factory=list)
    dims: list[ParamDim] = field(default_factory=list)
    site: AttnSite | MlpSite | None = None  # kinds "heads" / "units": the attention module or MLP

    @property
    def component(self) -> str | None:
        return self.components[0] if len(self.components) == 1 else None


@dataclass
class GroupPlan:
    """All groups of a model plus the DepGraph they came from (None: it could not be built, see ``fallback``)."""

    groups: list[StructGroup]
    graph: tp.DependencyGraph | None
    components: dict[str, list[str]]
    ignored: list[str]
    example_shape: tuple[int, ...]
    param_sizes: dict[str, int] = field(default_factory=dict)
    param_macs: dict[str, int] = field(default_factory=dict)  # weight of a conv/linear → its MACs per example
    fallback: str = ""  # why only attention heads and named MLP units were grouped (no DepGraph)

    @property
    def dense_macs(self) -> int:
        """Multiply-accumulates of one forward pass per example (conv / linear weights, as ``count_flops``)."""
        return int(sum(self.param_macs.values()))

    @property
    def prunable(self) -> list[StructGroup]:
        return [g for g in self.groups if g.prunable]

    def by_component(self) -> dict[str, list[StructGroup]]:
        out: dict[str, list[StructGroup]] = {}
        for g in self.prunable:
            out.setdefault(g.component, []).append(g)
        return out


def execution_order(model: nn.Module, example: torch.Tensor, macs: dict[str, int] | None = None) -> list[str]:
    """Names of conv/linear leaves in the order a forward pass runs them.

    With ``macs`` (a dict, filled in place): ``{"<layer>.weight": multiply-accumulates per example}``. A layer's
    MACs are its weight's element count times the positions it is applied at (output pixels of a conv, input
    pixels of a transposed conv, tokens of a linear), so they shrink exactly as its weight does when channels go.
    """
    order: list[str] = []
    hooks = []
    batch = max(int(example.shape[0]), 1) if example.dim() else 1

    def hook(mod, inp, out, n):
        order.append(n)
        if macs is None:
            return
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            positions = inp[0].numel() // max(inp[0].shape[1], 1)
        elif isinstance(mod, nn.Linear):
            positions = out.numel() // max(out.shape[-1], 1)
        else:
            positions = out.numel() // max(out.shape[1], 1)
        key = f"{n}.weight"
        macs[key] = macs.get(key, 0) + positions * mod.weight.numel() // batch

    for name, m in model.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=name: hook(mod, i, o, n)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order


def build_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    was = model.training
    model.eval()
    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    model.train(was)
    return dg


def find_groups(
    model: nn.Module,
    example: torch.Tensor,
    *,
    components: dict[str, list[str]] | None = None,
    ignore: list[str] | None = None,
    layout: str | None = None,
    timeout: float | None = DISCOVERY_SECONDS,
) -> GroupPlan:
    """Groups of ``model`` (traced on ``example``), each tagged with the components it touches.

    The last conv/linear run in the forward pass (the classifier, or an autoencoder's output layer) is
    never pruned, nor are modules matching ``ignore``; the model's input channels have no producer and
    are never part of a group. Without ``components``, they are derived (``layout``: see
    :func:`derive_components`). Attention heads are the units of their q/k/v and output projections
    (:mod:`.attention`). Discovery taking over ``timeout`` seconds, or failing inside Torch-Pruning, raises
    :class:`~hf_mixmatch.errors.StructuredUnsupported` with a one-line reason.
    """
    if components and layout:
        raise ConfigError("give either components or a layout, not both: a layout derives the components")
    comps = parse_components(components) if components else derive_components(model, layout or LAYOUTS[0])
    names = {m: n for n, m in model.named_modules()}
    macs: dict[str, int] = {}
    order = execution_order(model, example, macs)
    if not order:
        raise ConfigError("the model has no conv/linear layer to prune")
    ignored = [order[-1]] + [n for n in names.values() if n and ignore and any(_match(n, p) for p in ignore)]
    sites = find_attention(model)
    ignored += [n for s in sites for n in s.modules]  # heads are cut by .attention, never channel by channel
    ignored_mods = [m for m, n in names.items() if n in ignored]
    fallback = ""
    try:
        with time_limit(timeout, "group discovery"), \
                unsupported_on_failure("torch-pruning could not trace the model"):
            dg = build_graph(model, example)
            all_groups = list(dg.get_all_groups(ignored_layers=ignored_mods))
    except StructuredUnsupported as exc:  # fall back to the units found by name: heads and MLP hidden units
        if not find_mlps(model) and not sites:
            raise
        dg, all_groups, fallback = None, [], str(exc).removeprefix("not supported: ")
    param_names = {p: n for n, p in model.named_parameters()}
    pshape = {n: p.shape for n, p in model.named_parameters()}
    modules = dict(model.named_modules())
    groups: list[StructGroup] = []
    for k, group in enumerate(all_groups):
        members, consumers, dims, unmapped = [], [], [], []
        for item in group:
            dep, idxs = item.dep, item.idxs
            target = dep.target.module
            name = names.get(target) if isinstance(target, nn.Module) else param_names.get(target)
            if name is None:
                continue  # a functional op (add, reshape ...), not a parameter holder
            members.append(name)
            if item.root_idxs is None or None in list(item.root_idxs):  # torch-pruning lost track of which root channel this one is
                unmapped.append(name)
                continue
            chan, units = list(map(int, idxs)), list(map(int, item.root_idxs))
            is_out = dg.is_out_channel_pruning_fn(dep.handler)
            for pname, d in _param_dims(target, name, is_out):
                full = int(pshape[pname][d]) if pname in pshape else 0
                if full and max(chan, default=-1) >= full:  # indices into a concatenation, not this tensor
                    unmapped.append(name)
                if full and all((pname, d) != (x.param, x.dim) for x in dims):
                    dims.append(ParamDim(pname, d, full, chan, units))
            if dg.is_in_channel_pruning_fn(dep.handler) and isinstance(target, (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d, nn.Linear)):
                consumers.append(Consumer(module=name, chan=chan, unit=units))
        root = names[group[0].dep.target.module]
        size = len(group[0].idxs)
        comp_set = sorted({component_of(n, comps) for n in members})
        reason = _dense_reason(modules, members, consumers, comp_set)
        if unmapped and not reason:
            reason = f"torch-pruning gives inconsistent channel indices for {unmapped[0]}"
        if size < 2 and not reason:
            reason = "fewer than 2 units"
        groups.append(StructGroup(index=k, root=root, size=size, unit_width=1, members=sorted(set(members)),
                                  components=comp_set, prunable=not reason, reason=reason, kind="channels",
                                  consumers=consumers, dims=dims))
    for site in sites:
        groups.append(_head_group(len(groups), site, comps, pshape))
    if dg is None:
        for site in find_mlps(model):
            if site.down not in ignored and site.up not in ignored:
                groups.append(_mlp_group(len(groups), site, comps, pshape))
    return GroupPlan(groups=groups, graph=dg, components=comps, ignored=ignored,
                     example_shape=tuple(example.shape),
                     param_sizes={n: p.numel() for n, p in model.named_parameters()}, param_macs=macs,
                     fallback=fallback)


def _dense_reason(modules: dict[str, nn.Module], members: list[str], consumers: list, comp_set: list[str]) -> str:
    """Why a channel group must stay dense ("" when it can be pruned)."""
    if len(comp_set) > 1:
        return f"spans components {comp_set}"
    for n in members:
        cls = type(modules[n]).__name__ if n in modules else ""  # members may be bare parameters
        if any(part in cls for part in _CROSS_CHANNEL_NORMS):
            return f"{n} ({cls}) normalises across the channels: removing some changes the others"
    for c in consumers:
        mod = modules[c.module]
        cls = type(mod).__name__
        if any(part in cls for part in _WEIGHT_STANDARDIZED):
            return f"{c.module} ({cls}) standardises its weights over the input channels"
        groups = getattr(mod, "groups", 1)
        if 1 < groups < getattr(mod, "in_channels", 0):  # a grouped (not depthwise) conv: cuts re-split its groups
            return f"{c.module} is a grouped convolution ({groups} groups): its input channels cannot be cut alone"
    return ""


def _head_group(index: int, site: AttnSite, comps: dict[str, list[str]], pshape: dict) -> StructGroup:
    """The heads of ``site`` as one group of ``num_heads`` units, each ``head_dim`` wide."""
    w, hd = site.width, site.head_dim
    dims = []
    for name, chunks in site.projections:
        chan = list(range(w * chunks))
        dims.append(ParamDim(f"{name}.weight", 0, w * chunks, chan, [(c % w) // hd for c in chan]))
        if f"{name}.bias" in pshape:
            dims.append(ParamDim(f"{name}.bias", 0, w * chunks, chan, [(c % w) // hd for c in chan]))
    dims.append(ParamDim(f"{site.proj}.weight", 1, w, list(range(w)), [c // hd for c in range(w)]))
    for full, d in site.per_channel:
        if full in pshape:
            dims.append(ParamDim(full, d, w, list(range(w)), [c // hd for c in range(w)]))
    for full, d in site.per_head:
        if full in pshape:
            dims.append(ParamDim(full, d, site.num_heads, list(range(site.num_heads)), list(range(site.num_heads))))
    members = [*site.modules, site.proj]
    comp_set = sorted({component_of(n, comps) for n in members})
    reason = site.reason or (f"spans components {comp_set}" if len(comp_set) > 1 else "")
    consumer = Consumer(module=site.proj, chan=list(range(w)), unit=[c // hd for c in range(w)])
    return StructGroup(index=index, root=site.name, size=site.num_heads, unit_width=hd, members=sorted(members),
                       components=comp_set, prunable=not reason, reason=reason, kind="heads",
                       consumers=[consumer], dims=dims, site=site)


def _mlp_group(index: int, site: MlpSite, comps: dict[str, list[str]], pshape: dict) -> StructGroup:
    """The hidden units of ``site`` as one group of ``hidden`` units."""
    h = site.hidden
    every = list(range(h))
    names = [(f"{site.up}.weight", 0), (f"{site.up}.bias", 0), (f"{site.down}.weight", 1)]
    names += [(f"{n}.{p}", 0) for n in site.per_unit for p in ("weight", "bias")]
    dims = [ParamDim(p, d, h, every, every) for p, d in names if p in pshape]
    members = [site.up, site.down, *site.per_unit]
    comp_set = sorted({component_of(n, comps) for n in members})
    reason = site.reason or (f"spans components {comp_set}" if len(comp_set) > 1 else "")
    return StructGroup(index=index, root=site.name, size=h, unit_width=1, members=sorted(members),
                       components=comp_set, prunable=not reason, reason=reason, kind="units",
                       consumers=[Consumer(module=site.down, chan=every, unit=every)], dims=dims, site=site)


def _param_dims(module, name: str, is_out: bool):
    """(parameter name, dimension) pairs that shrink when ``module`` loses out (``is_out``) or in channels."""
    if isinstance(module, nn.Parameter):
        return [(name, module.dim() - 1)]
    own = {n for n, _ in module.named_parameters(recurse=False)}
    out = []
    if isinstance(module, nn.modules.conv._ConvNd):
        transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        if is_out or depthwise:
            out.append((f"{name}.weight", 1 if transposed and not depthwise else 0))
            if "bias" in own and module.bias is not None:
                out.append((f"{name}.bias", 0))
        elif module.groups == 1:
            out.append((f"{name}.weight", 0 if transposed else 1))
        return out
    if isinstance(module, nn.Linear):
        if is_out:
            out.append((f"{name}.weight", 0))
            if module.bias is not None:
                out.append((f"{name}.bias", 0))
        else:
            out.append((f"{name}.weight", 1))
        return out
    # norms and other per-channel modules: every own parameter along dim 0
    return [(f"{name}.{n}", 0) for n in own]


def unit_channels(group: StructGroup, units) -> list[int]:
    """Root-layer channel indices of the given units."""
    w = group.unit_width
    return [int(u) * w + j for u in units for j in range(w)]
