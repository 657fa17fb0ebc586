"""Input statistics of prunable layers from calibration forwards, through hooks, never storing activations.

A layer's *input features* are the columns its weight multiplies: for ``Linear`` / transformers ``Conv1D`` the
last input dimension; for a convolution the unfolded input patch (input channel x kernel position, the order of
``weight.view(out, -1)``), per group for grouped / depthwise convolutions. Each layer is seen as ``G`` groups of
rows ``W[g]`` of shape ``(rows_per_group, d)`` acting on features ``X[g]`` of shape ``(tokens, d)``:

- :func:`feature_sq_norms` -> ``||X_j||^2`` per group and feature (Wanda's statistic), shape ``(G, d)``;
- :func:`accumulate_hessians` -> ``X^T X`` per group, shape ``(G, d, d)`` (SparseGPT's statistic);
- :func:`accumulate_cross` -> also ``X_dense^T X``, the same layer's dense-model features against the pruned
  model's (SparseGPT with the dense model's outputs as its target).

Both are sums over calibration tokens/pixels (float64), accumulated in chunks of at most :data:`CHUNK_ELEMENTS`
unfolded values, and summed across processes with ``accelerator.reduce`` — equal to one process's result up to
float summation order. Each process takes its share ``batches[rank::world]`` of the fixed calibration batches.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ConfigError
from .layers import LayerInfo
from .models import logits as default_forward
from .signals import _batches, _reduce_sum

CHUNK_ELEMENTS = 1 << 22  # unfolded values materialized at once (16 MiB in float32)


# ------------------------------------------------------------------------------------------ layer geometry


def groups_of(module: nn.Module, layer: LayerInfo) -> int:
    return int(getattr(module, "groups", 1)) if layer.kind == "conv" else 1


def weight_matrix(weight: torch.Tensor, layer: LayerInfo, groups: int) -> torch.Tensor:
    """The weight as ``(G, rows_per_group, d)`` (a view for Linear / Conv; Conv1D's ``(in, out)`` transposed)."""
    if layer.kind == "conv1d_t":
        return weight.t().unsqueeze(0)
    out = weight.shape[0]
    return weight.reshape(groups, out // groups, -1)


def weight_from_matrix(mat: torch.Tensor, layer: LayerInfo, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`weight_matrix`: back to the parameter's own shape."""
    if layer.kind == "conv1d_t":
        return mat[0].t().contiguous()
    return mat.reshape(shape)


def _conv_padding(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The input padded as the conv pads it ('same' / 'valid' / ints, any padding mode); returns (x, padding
    still to apply as zeros)."""
    nd = x.dim() - 2
    k, dil, pad = module.kernel_size, module.dilation, module.padding
    mode = getattr(module, "padding_mode", "zeros")
    if pad == "valid":
        return x, (0,) * nd
    if pad == "same":  # total dilation*(k-1) per dim, the extra one on the right (as torch does)
        total = [dil[i] * (k[i] - 1) for i in range(nd)]
        pads = [p for i in reversed(range(nd)) for p in (total[i] // 2, total[i] - total[i] // 2)]
    elif mode != "zeros":
        pads = [p for i in reversed(range(nd)) for p in (pad[i], pad[i])]
    else:
        return x, tuple(pad)
    return F.pad(x, pads, mode="constant" if mode == "zeros" else mode), (0,) * nd


def features(module: nn.Module, layer: LayerInfo, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield chunks of input features, each ``(G, tokens, d)`` float32, for one forward input ``x``."""
    if layer.kind in ("linear", "conv1d_t"):
        flat = x.reshape(-1, x.shape[-1])
        step = max(1, CHUNK_ELEMENTS // max(flat.shape[1], 1))
        for s in range(0, flat.shape[0], step):
            yield flat[s : s + step].float().unsqueeze(0)
        return
    nd = x.dim() - 2
    if nd not in (1, 2):
        raise ConfigError(f"layer {layer.name!r}: {nd}-D convolutions have no activation statistics here; "
                          "leave that layer out or use a weight-only signal")
    x, pad = _conv_padding(module, x)
    kernel, dil, stride = tuple(module.kernel_size), tuple(module.dilation), tuple(module.stride)
    if nd == 1:  # Conv1d: as a 2-D conv of height 1
        x = x.unsqueeze(2)
        kernel, dil, stride, pad = (1, *kernel), (1, *dil), (1, *stride), (0, *pad)
    groups = groups_of(module, layer)
    n, c = x.shape[:2]
    per_sample = (c * math.prod(kernel)) * _out_positions(x.shape[2:], kernel, dil, pad, stride)
    step = max(1, CHUNK_ELEMENTS // max(per_sample, 1))
    for s in range(0, n, step):
        cols = F.unfold(x[s : s + step].float(), kernel, dilation=dil, padding=pad, stride=stride)  # (b, C*k, L)
        b, ck, length = cols.shape
        cols = cols.view(b, groups, ck // groups, length).permute(1, 0, 3, 2)  # (G, b, L, d)
        yield cols.reshape(groups, b * length, ck // groups)


def _out_positions(size, kernel, dil, pad, stride) -> int:
    out = 1
    for i, s in enumerate(size):
        out *= max(1, (s + 2 * pad[i] - dil[i] * (kernel[i] - 1) - 1) // stride[i] + 1)
    return out


# ------------------------------------------------------------------------------------------- forwards


def calibration_batches(n: int, batch_size: int, accelerator=None) -> list[tuple[int, int]]:
    """This process's share of the fixed calibration batches (the split :mod:`hf_mixmatch.signals` uses)."""
    batches = _batches(n, batch_size)
    if accelerator is not None and accelerator.num_processes > 1:
        return batches[accelerator.process_index :: accelerator.num_processes]
    return batches


def _summed(tensors: list[torch.Tensor], accelerator) -> list[torch.Tensor]:
    """Sums over processes (accumulated on the model's device), returned on CPU."""
    return [t.cpu() for t in _reduce_sum(tensors, accelerator)]


class _Stop(Exception):
    """Raised by a hook once every layer it waits for has seen its input: the rest of the forward is skipped."""


_CONV_OPS = (F.conv1d, F.conv2d, F.conv3d)
_CONV_ARGS = ("stride", "padding", "dilation", "groups")  # after (input, weight, bias), as F.conv*d takes them


def _op_geometry(weight: torch.Tensor, args: tuple, kwargs: dict) -> SimpleNamespace:
    """The geometry a ``F.conv*d`` call really uses, with the attributes :func:`features` reads from a module."""
    nd = weight.dim() - 2
    given = dict(zip(_CONV_ARGS, args[3:]), **{k: v for k, v in kwargs.items() if k in _CONV_ARGS})

    def tup(v, default):
        v = default if v is None else v
        return v if isinstance(v, str) else tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * nd

    return SimpleNamespace(kernel_size=tuple(weight.shape[2:]), stride=tup(given.get("stride"), 1),
                           padding=tup(given.get("padding"), 0), dilation=tup(given.get("dilation"), 1),
                           groups=int(given.get("groups") or 1), padding_mode="zeros")


class _OpInputs(TorchFunctionMode):
    """Takes each hooked layer's input where its weight is really applied.

    - ``F.linear(x, layer.weight, ...)`` outside the layer's own forward reaches its hook as if the module had been
      called (timm's SwinV2 and EVA attention call ``F.linear(x, self.qkv.weight, qkv_bias)``: no module hook sees
      that input);
    - a convolution's input is the one its ``F.conv*d`` call receives with the stored weight, with that call's
      geometry: a module that pads in forward (timm's ``Conv2dSame``, Perceiver's) passes the padded input there.
      A convolution that never passes its stored weight (weight standardization) keeps its module input."""

    def __init__(self, by_weight: dict[int, str], fire: Callable, inside: set[str], convs: set[str], op_fired: set[str]):
        super().__init__()
        self.by_weight, self.fire, self.inside, self.convs, self.op_fired = by_weight, fire, inside, convs, op_fired

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear or func in _CONV_OPS:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self.by_weight.get(id(weight))
            x = args[0] if args else kwargs.get("input")
            if name is None:
                pass
            elif func is F.linear and name not in self.inside and name not in self.convs:
                self.fire(name, x)
            elif func in _CONV_OPS and name in self.convs and name in self.inside and name not in self.op_fired:
                self.op_fired.add(name)
                self.fire(name, x, _op_geometry(weight, args, kwargs))
        return func(*args, **kwargs)


def _run_hooked(model, inputs: torch.Tensor, batches, forward, hooks: dict[str, Callable], stop_after: set[str] | None):
    """Forward every batch with ``hooks[name](module, x)`` on each named layer's input, taken where its weight is
    applied (:class:`_OpInputs`; for a convolution ``module`` is then the call's geometry); optionally stop early."""
    device = next(model.parameters()).device
    seen: set[str] = set()
    inside: set[str] = set()  # layers whose own forward is running
    op_fired: set[str] = set()  # convolutions whose input came from their F.conv*d call in this forward
    pending: dict[str, torch.Tensor] = {}  # a convolution's module input, used if no such call comes
    modules = {name: model.get_submodule(name) for name in hooks}
    convs = {name for name, m in modules.items() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))}

    def fire(name, x, geometry=None):
        hooks[name](modules[name] if geometry is None else geometry, x)
        seen.add(name)
        if stop_after is not None and stop_after <= seen:
            raise _Stop

    def pre(name):
        def hook(module, args):
            inside.add(name)
            if name in convs:
                pending[name] = args[0]
            else:
                fire(name, args[0])

        return hook

    def post(name):
        def hook(module, args, out):
            inside.discard(name)
            x = pending.pop(name, None)
            if name in convs and name not in op_fired and x is not None:
                fire(name, x)
            op_fired.discard(name)

        return hook

    handles = [h for name, m in modules.items()
               for h in (m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name)))]
    by_weight = {id(m.weight): name for name, m in modules.items() if isinstance(getattr(m, "weight", None), torch.Tensor)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _OpInputs(by_weight, fire, inside, convs, op_fired):
            for s, e in batches:
                seen.clear()
                inside.clear()
                op_fired.clear()
                pending.clear()
                try:
                    forward(model, inputs[s:e].to(device))
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def feature_sq_norms(model: nn.Module, layers: list[LayerInfo], inputs: torch.Tensor, *, batch_size: int = 64,
                     accelerator=None, forward: Callable = default_forward) -> dict[str, torch.Tensor]:
    """``{layer: (G, d) float64}``: sum over calibration tokens/pixels of each input feature squared."""
    sums: dict[str, torch.Tensor] = {}
    for layer in layers:
        module = model.get_submodule(layer.name)
        g = groups_of(module, layer)
        d = weight_matrix(module.weight, layer, g).shape[-1]
        sums[layer.name] = torch.zeros(g, d, dtype=torch.float64, device=module.weight.device)

    def hook_for(layer):
        def fn(module, x):
            acc = sums[layer.name]
            for chunk in features(module, layer, x):
                acc += chunk.double().pow(2).sum(1)

        return fn

    batches = calibration_batches(len(inputs), batch_size, accelerator)
    _run_hooked(model, inputs, batches, forward, {layer.name: hook_for(layer) for layer in layers}, None)
    names = [layer.name for layer in layers]
    return dict(zip(names, _summed([sums[n] for n in names], accelerator)))


def forward_groups(model: nn.Module, layers: list[LayerInfo], sample: torch.Tensor,
                   forward: Callable = default_forward) -> tuple[list[list[LayerInfo]], list[LayerInfo]]:
    """Layers in the order the forward calls them, grouped when consecutive layers read the same input tensor
    (q/k/v: pruning one cannot change the others' input). Also returns the layers the forward never calls."""
    fired: list[tuple[str, torch.Tensor]] = []
    by_name = {layer.name: layer for layer in layers}

    def hook_for(name):
        def fn(module, x):
            if name not in {n for n, _ in fired}:
                fired.append((name, x))

        return fn

    _run_hooked(model, sample, [(0, len(sample))], forward, {n: hook_for(n) for n in by_name}, None)
    groups: list[list[LayerInfo]] = []
    last = None
    for name, x in fired:
        if last is not None and x is last:
            groups[-1].append(by_name[name])
        else:
            groups.append([by_name[name]])
        last = x
    called = {n for n, _ in fired}
    return groups, [layer for layer in layers if layer.name not in called]


def _geometry(module: nn.Module, layer: LayerInfo) -> tuple:
    """Layers reading the same input with the same geometry see the same features (q/k/v): one Hessian."""
    if layer.kind == "conv":
        return ("conv", module.kernel_size, module.stride, module.padding, module.dilation, module.groups,
                getattr(module, "padding_mode", "zeros"))
    return ("linear",)


def accumulate_hessians(model: nn.Module, group: list[LayerInfo], inputs: torch.Tensor, *, batch_size: int = 64,
                        accelerator=None, forward: Callable = default_forward) -> dict[str, torch.Tensor]:
    """``{layer: (G, d, d) float64}``: ``X^T X`` over this process's calibration batches, summed over processes.

    ``group``: layers that read one input tensor (:func:`forward_groups`); those with the same geometry share one
    Hessian (the same tensor object). The forward stops as soon as every layer it needs has seen its input."""
    return _accumulate(model, group, inputs, batch_size, accelerator, forward, None)[0]


def accumulate_cross(model: nn.Module, dense: nn.Module, group: list[LayerInfo], inputs: torch.Tensor, *,
                     batch_size: int = 64, accelerator=None,
                     forward: Callable = default_forward) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """:func:`accumulate_hessians`' ``X^T X`` of ``model`` and the cross term ``X_dense^T X`` (both ``(G, d, d)``),
    ``X_dense`` being the same layer's features in ``dense`` (a copy of the model before pruning, same module
    names) on the same calibration images. Per batch, ``dense`` runs first (up to the group's layers) and its
    inputs are paired chunk by chunk with ``model``'s."""
    return _accumulate(model, group, inputs, batch_size, accelerator, forward, dense)


def _accumulate(model, group, inputs, batch_size, accelerator, forward, dense):
    owner: dict[tuple, LayerInfo] = {}
    for layer in group:
        owner.setdefault(_geometry(model.get_submodule(layer.name), layer), layer)
    hs: dict[str, torch.Tensor] = {}
    cross: dict[str, torch.Tensor] = {}
    for layer in owner.values():
        module = model.get_submodule(layer.name)
        g = groups_of(module, layer)
        d = weight_matrix(module.weight, layer, g).shape[-1]
        hs[layer.name] = torch.zeros(g, d, d, dtype=torch.float64, device=module.weight.device)
        if dense is not None:
            cross[layer.name] = torch.zeros_like(hs[layer.name])
    names = list(hs)
    stored: dict[str, torch.Tensor] = {}

    def keep_input(name):
        def fn(module, x):
            stored[name] = x

        return fn

    def hook_for(layer):
        def fn(module, x):
            acc = hs[layer.name]
            if dense is None:
                for chunk in features(module, layer, x):
                    c = chunk.double()
                    acc += c.transpose(1, 2) @ c
                return
            for chunk, ref in zip(features(module, layer, x), features(module, layer, stored[layer.name])):
                c = chunk.double()
                acc += c.transpose(1, 2) @ c
                cross[layer.name] += ref.double().transpose(1, 2) @ c

        return fn

    hooks = {n: hook_for(layer) for n, layer in zip(names, owner.values())}
    batches = calibration_batches(len(inputs), batch_size, accelerator)
    if dense is None:
        _run_hooked(model, inputs, batches, forward, hooks, set(names))
    else:
        for batch in batches:  # the dense inputs of one batch at a time, paired with the pruned model's
            _run_hooked(dense, inputs, [batch], forward, {n: keep_input(n) for n in names}, set(names))
            _run_hooked(model, inputs, [batch], forward, hooks, set(names))
            stored.clear()
    reduced = dict(zip(names, _summed([hs[n] for n in names], accelerator)))
    shared = {layer.name: owner[_geometry(model.get_submodule(layer.name), layer)].name for layer in group}
    if dense is None:
        return {name: reduced[o] for name, o in shared.items()}, None
    crossed = dict(zip(names, _summed([cross[n] for n in names], accelerator)))
    return {name: reduced[o] for name, o in shared.items()}, {name: crossed[o] for name, o in shared.items()}


# ------------------------------------------------------------------------------------ Wanda's score


def row_ranks(score: torch.Tensor) -> torch.Tensor:
    """Rank of every entry inside its row (last dim), as float: the lowest ``floor(rho * n)`` ranks of a layer
    are its lowest ``rho`` of every row (rows differ by at most one weight when ``rho * d`` is not whole)."""
    order = score.argsort(dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(score.shape[-1]).expand_as(order).contiguous())
    return ranks.float()


def activation_scores(model: nn.Module, layers: list[LayerInfo], inputs: torch.Tensor, *,
                      signals: tuple[str, ...] = ("activation",), batch_size: int = 64, accelerator=None,
                      forward: Callable = default_forward) -> dict[str, dict[str, torch.Tensor]]:
    """Wanda's ``|w_ij| * ||x_j||_2`` per weight (``"activation"``) and its rank inside the weight's output row
    (``"activation_row"``: Wanda's per-row comparison through the ordinary lowest-score masking)."""
    norms = feature_sq_norms(model, layers, inputs, batch_size=batch_size, accelerator=accelerator, forward=forward)
    act, rows = {}, {}
    for layer in layers:
        module = model.get_submodule(layer.name)
        weight = module.weight.detach().double().cpu()
        mat = weight_matrix(weight, layer, groups_of(module, layer))
        score = mat.abs() * norms[layer.name].sqrt()[:, None, :]
        act[layer.name] = weight_from_matrix(score, layer, tuple(weight.shape)).float()
        rows[layer.name] = weight_from_matrix(row_ranks(score), layer, tuple(weight.shape))
    return {name: table for name, table in (("activation", act), ("activation_row", rows)) if name in signals}
