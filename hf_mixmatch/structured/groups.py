"""Coupled-parameter groups from Torch-Pruning's DepGraph, split at component boundaries.

A *component* is a set of modules named by patterns (``fnmatch`` globs, or regexes prefixed ``re:``).
A DepGraph group couples every tensor dimension that must shrink together when one channel is removed
(a conv's output channels, its BatchNorm, the next conv's input channels, a residual stream ...).
DepGraph cannot split a coupled group (the shapes would no longer match), so a group whose members fall
in two or more components is **kept dense**; it is listed with ``prunable=False`` and the reason.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..errors import ConfigError

_REST = "_rest"


# ------------------------------------------------------------------------------------------- components


def parse_components(specs) -> dict[str, list[str]]:
    """``["encoder=encoder.*", "decoder=decoder.*,head*"]`` or a dict → ``{name: [pattern, ...]}``.

    A bare pattern without ``name=`` is its own component, named by the pattern.
    """
    if specs is None:
        return {}
    if isinstance(specs, dict):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in specs.items()}
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, pats = str(spec).partition("=")
        if not sep:
            name, pats = spec, spec
        patterns = [p.strip() for p in pats.split(",") if p.strip()]
        if not name.strip() or not patterns:
            raise ConfigError(f"component '{spec}' is empty: write NAME=PATTERN[,PATTERN...] e.g. encoder=encoder.*")
        out.setdefault(name.strip(), []).extend(patterns)
    return out


def _match(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


_STEM = ("*embedder*", "*embeddings*", "*patch_embed*", "stem*", "conv1", "bn1", "*.stem*")
_HEAD = ("classifier*", "head*", "fc", "fc_norm", "norm", "*.pooler*", "pooler*", "*.layernorm", "global_pool*")


LAYOUTS = ("stem-stages-head", "body-head")


def derive_components(model: nn.Module, layout: str = "stem-stages-head") -> dict[str, list[str]]:
    """Components of a known layout: ``encoder``/``decoder`` for autoencoders, else ``stem``/``stages``/``head``.

    ``layout="body-head"``: the stem joins the stages in one ``body`` component, so the stream the stem writes
    (in a ResNet, the first stage's residual stream) becomes prunable too; only the head stays apart.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown component layout '{layout}': use one of {', '.join(LAYOUTS)}")
    top = dict(model.named_children())
    if "encoder" in top and "decoder" in top and len(top) <= 3:
        return {"encoder": ["encoder"], "decoder": ["decoder"]}
    if layout == "body-head":
        return {"head": list(_HEAD), "body": ["*"]}
    return {"stem": list(_STEM), "head": list(_HEAD), "stages": ["*"]}


def component_of(name: str, components: dict[str, list[str]]) -> str:
    """First component (in order) with a matching pattern, else ``_rest``."""
    for comp, patterns in components.items():
        if any(_match(name, p) for p in patterns):
            return comp
    return _REST


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

    @property
    def component(self) -> str | None:
        return self.components[0] if len(self.components) == 1 else None


@dataclass
class GroupPlan:
    """All groups of a model plus the DepGraph they came from."""

    groups: list[StructGroup]
    graph: tp.DependencyGraph
    components: dict[str, list[str]]
    ignored: list[str]
    example_shape: tuple[int, ...]
    param_sizes: dict[str, int] = field(default_factory=dict)
    param_macs: dict[str, int] = field(default_factory=dict)  # weight of a conv/linear → its MACs per example

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


def _head_width(module: nn.Module | None) -> int | None:
    if module is None:
        return None
    for attr in ("head_dim", "attention_head_size"):
        v = getattr(module, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def find_groups(
    model: nn.Module,
    example: torch.Tensor,
    *,
    components: dict[str, list[str]] | None = None,
    ignore: list[str] | None = None,
    layout: str | None = None,
) -> GroupPlan:
    """Groups of ``model`` (traced on ``example``), each tagged with the components it touches.

    The last conv/linear run in the forward pass (the classifier, or an autoencoder's output layer) is
    never pruned, nor are modules matching ``ignore``; the model's input channels have no producer and
    are never part of a group. Without ``components``, they are derived (``layout``: see
    :func:`derive_components`).
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
    ignored_mods = [m for m, n in names.items() if n in ignored]
    dg = build_graph(model, example)
    param_names = {p: n for n, p in model.named_parameters()}
    pshape = {n: p.shape for n, p in model.named_parameters()}
    groups: list[StructGroup] = []
    for k, group in enumerate(dg.get_all_groups(ignored_layers=ignored_mods)):
        members, consumers, dims = [], [], []
        for item in group:
            dep, idxs = item.dep, item.idxs
            target = dep.target.module
            name = names.get(target) if isinstance(target, nn.Module) else param_names.get(target)
            if name is None:
                continue  # a functional op (add, reshape ...), not a parameter holder
            members.append(name)
            is_out = dg.is_out_channel_pruning_fn(dep.handler)
            for pname, d in _param_dims(target, name, is_out):
                full = int(pshape[pname][d]) if pname in pshape else 0
                if full and (pname, d) not in {(x[0], x[1]) for x in dims}:
                    dims.append((pname, d, full, list(map(int, idxs)), list(map(int, item.root_idxs))))
            if dg.is_in_channel_pruning_fn(dep.handler) and isinstance(target, (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d, nn.Linear)):
                consumers.append((name, list(map(int, idxs)), list(map(int, item.root_idxs))))
        root_mod = group[0].dep.target.module
        root = names[root_mod]
        size = len(group[0].idxs)
        comp_set = sorted({component_of(n, comps) for n in members})
        reason = ""
        if len(comp_set) > 1:
            reason = f"spans components {comp_set}"
        width, kind = 1, "channels"
        parent = model.get_submodule(root.rsplit(".", 1)[0]) if "." in root else None
        hw = _head_width(parent)
        if hw and size % hw == 0 and size // hw > 1 and any(n.endswith(("q_proj", "query")) for n in members):
            width, kind = hw, "heads"
            per_head = [n for n, _ in parent.named_parameters() if "relative_position" in n]
            if per_head and not reason:  # e.g. Swin's bias table: one column per head, outside the DepGraph group
                reason = f"per-head parameters outside the group ({per_head[0]}): heads not pruned"
        units = size // width
        if units < 2 and not reason:
            reason = "fewer than 2 units"
        cons = [Consumer(module=n, chan=ch, unit=[r // width for r in ri]) for n, ch, ri in consumers]
        groups.append(StructGroup(index=k, root=root, size=units, unit_width=width, members=sorted(set(members)),
                                  components=comp_set, prunable=not reason, reason=reason, kind=kind,
                                  consumers=cons,
                                  dims=[ParamDim(p, d, f, ch, [r // width for r in ri]) for p, d, f, ch, ri in dims]))
    return GroupPlan(groups=groups, graph=dg, components=comps, ignored=ignored,
                     example_shape=tuple(example.shape),
                     param_sizes={n: p.numel() for n, p in model.named_parameters()}, param_macs=macs)


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


def _expected(plan: "GroupPlan", keeps: dict[int, torch.Tensor], cost: dict[str, int], total: float) -> torch.Tensor:
    """``total`` minus what the kept shares save: each parameter's ``cost`` scales with the kept share of every
    dimension a prunable group governs (a product where two groups meet in one weight: its in- and out-side)."""
    per_param: dict[str, list[tuple[ParamDim, int]]] = {}
    for g in plan.prunable:
        if g.index in keeps:
            for pd in g.dims:
                if pd.param in cost:
                    per_param.setdefault(pd.param, []).append((pd, g.index))
    count = torch.tensor(float(total - sum(cost[p] for p in per_param)))
    for pname, dims in per_param.items():
        term = torch.tensor(float(cost[pname]))
        for pd, gi in dims:
            kept = keeps[gi][torch.tensor(pd.unit)].sum() + (pd.full - len(pd.chan))
            term = term * kept / pd.full
        count = count + term
    return count


def expected_params(plan: "GroupPlan", keeps: dict[int, torch.Tensor], total: int) -> torch.Tensor:
    """Parameter count when group ``g`` keeps ``keeps[g][u]`` (in [0, 1]) of unit ``u``; differentiable.

    Parameters whose dimensions no prunable group governs count in full. ``total`` is the dense count.
    """
    return _expected(plan, keeps, plan.param_sizes, total)


def expected_macs(plan: "GroupPlan", keeps: dict[int, torch.Tensor]) -> torch.Tensor:
    """Multiply-accumulates per example (conv / linear, as ``count_flops``) when group ``g`` keeps ``keeps[g][u]``
    of unit ``u``; differentiable. With 0/1 keeps it is the MAC count of the physically pruned model: a layer
    whose input channels belong to one group and output channels to another costs the product of both kept
    shares. Layers no prunable group touches count in full."""
    return _expected(plan, keeps, plan.param_macs, plan.dense_macs)


def unit_channels(group: StructGroup, units) -> list[int]:
    """Root-layer channel indices of the given units."""
    w = group.unit_width
    return [int(u) * w + j for u in units for j in range(w)]
