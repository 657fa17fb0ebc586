"""Inventory of prunable weights, with a role and a stage per layer.

Prunable: the >=2-D weights of Conv and Linear layers (and transformers' ``Conv1D``, whose weight is
stored transposed), including patch embeddings and the classifier. Never norms, biases, position
tables, class tokens or relative-position tables — those are not Conv/Linear weights, so they are
never listed.

Roles come from ordered name rules (data, in :mod:`hf_mixmatch.roles`), refined by module structure
(depthwise convs, classifier heads found by their output size). Layers the rules mark as position/bias
tables (Swin-v2's position-bias MLP...) are left out, and so are layers the forward pass never uses
(:func:`used_by_forward`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .roles import CLASSIFIER_NAME, EXCLUDED, RULES

ROLES = (
    "stem",
    "patch_embed",
    "conv",
    "depthwise",
    "downsample",
    "attn_qkv",
    "attn_proj",
    "mlp_up",
    "mlp_down",
    "patch_merging",
    "classifier",
    "linear",
)

# Where the stage index is read from the module name (first match wins).
STAGE_PATTERNS: tuple[str, ...] = (
    r"(?:^|\.)stages\.(\d+)\.",
    r"(?:^|\.)layers\.(\d+)\.(?:blocks|downsample)\.",  # transformers and timm Swin
    r"(?:^|\.)layer(\d+)\.",  # timm ResNet layer1..layer4 (1-based)
)
BLOCK_PATTERNS: tuple[str, ...] = (
    r"(?:^|\.)encoder\.layer\.(\d+)\.",  # transformers ViT
    r"(?:^|\.)blocks\.(\d+)\.",  # timm ViT
    r"(?:^|\.)layers\.(\d+)\.",  # transformers >= 5 ViT
)
_ONE_BASED = r"(?:^|\.)layer(\d+)\."


@dataclass
class LayerInfo:
    """One prunable weight tensor."""

    name: str  # module name; the weight is f"{name}.weight"
    role: str  # one of ROLES
    stage: int  # 0-based stage; ViTs: depth quartile; stem/patch embed: 0; classifier: last stage
    numel: int
    shape: tuple[int, ...]
    kind: str = "linear"  # "conv" | "linear" | "conv1d_t" (transformers Conv1D: weight is (in, out))

    @property
    def param_name(self) -> str:
        return f"{self.name}.weight"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerInfo":
        return cls(**{**d, "shape": tuple(d["shape"])})


def _is_conv1d_t(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D without importing transformers here
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if _is_conv1d_t(module):
        return "conv1d_t"
    return None


def _role_from_name(name: str) -> str | None:
    for rule in RULES:
        if re.search(rule.pattern, name):
            return rule.role
    return None


def _stage_from_name(name: str) -> int | None:
    for pattern in STAGE_PATTERNS:
        m = re.search(pattern, name)
        if m:
            idx = int(m.group(1))
            return idx - 1 if pattern == _ONE_BASED else idx
    return None


def _block_from_name(name: str) -> int | None:
    for pattern in BLOCK_PATTERNS:
        m = re.search(pattern, name)
        if m:
            return int(m.group(1))
    return None


def _out_features(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.nf


def _find_classifiers(model: nn.Module, candidates: list[tuple[str, nn.Module]], num_labels: int | None) -> set[str]:
    """Every classifier head: timm's ``get_classifier()`` or the last Linear whose output size is the label
    count (or the last Linear), plus any other head-named Linear with that output size (distilled models)."""
    main = _find_classifier(model, candidates, num_labels)
    heads = {main} if main else set()
    if num_labels is not None:
        heads |= {n for n, m in candidates if _kind(m) in ("linear", "conv1d_t") and _out_features(m) == num_labels
                  and re.search(CLASSIFIER_NAME, n)}
    return heads


def _find_classifier(model: nn.Module, candidates: list[tuple[str, nn.Module]], num_labels: int | None) -> str | None:
    """The classifier: the last Linear whose output size is the label count (or the last Linear)."""
    getter = getattr(model, "get_classifier", None)  # timm
    if callable(getter):
        try:
            head = getter()
        except Exception:  # noqa: BLE001 - some timm heads raise for odd configs
            head = None
        for name, module in candidates:
            if module is head:
                return name
    linears = [(n, m) for n, m in candidates if _kind(m) in ("linear", "conv1d_t")]
    if num_labels is not None:
        for name, module in reversed(linears):
            if _out_features(module) == num_labels:
                return name
    return linears[-1][0] if linears else None


def list_prunable(model: nn.Module, *, num_labels: int | None = None) -> list[LayerInfo]:
    """All prunable layers of ``model`` in module order, each with a role and a stage."""
    if num_labels is None:
        config = getattr(model, "config", None)
        num_labels = getattr(config, "num_labels", None) or getattr(model, "num_classes", None)
    candidates = [(n, m) for n, m in model.named_modules() if _kind(m) is not None]
    candidates = [(n, m) for n, m in candidates if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]
    classifiers = _find_classifiers(model, candidates, num_labels)

    layers: list[LayerInfo] = []
    for idx, (name, module) in enumerate(candidates):
        kind = _kind(module)
        role = _role_from_name(name)
        if role == EXCLUDED:
            continue
        if name in classifiers:
            role = "classifier"
        elif role is None:
            if kind == "conv" and module.groups > 1 and module.groups == module.in_channels:
                role = "depthwise"
            elif kind == "conv":
                role = "stem" if idx == 0 else "conv"
            else:
                role = "linear"
        elif role == "downsample" and kind != "conv":
            role = "patch_merging"
        elif role == "mlp_up" and kind == "conv" and module.groups == module.in_channels and module.groups > 1:
            role = "depthwise"
        weight = module.weight
        layers.append(
            LayerInfo(
                name=name,
                role=role,
                stage=-1,  # filled below
                numel=weight.numel(),
                shape=tuple(weight.shape),
                kind=kind,
            )
        )
    _assign_stages(layers)
    return layers


def _assign_stages(layers: list[LayerInfo]) -> None:
    stages = [_stage_from_name(layer.name) for layer in layers]
    blocks = [_block_from_name(layer.name) for layer in layers]
    if any(s is not None for s in stages):
        last = max(s for s in stages if s is not None)
        for layer, stage in zip(layers, stages):
            if stage is not None:
                layer.stage = stage
            elif layer.role == "classifier":
                layer.stage = last
            else:
                layer.stage = 0
        return
    if any(b is not None for b in blocks):
        n_blocks = max(b for b in blocks if b is not None) + 1
        for layer, block in zip(layers, blocks):
            if block is not None:
                layer.stage = min(3, block * 4 // n_blocks)
            elif layer.role == "classifier":
                layer.stage = 3
            else:
                layer.stage = 0
        return
    # no structure in names: quartiles of the execution order
    n = len(layers)
    for i, layer in enumerate(layers):
        layer.stage = min(3, i * 4 // max(n, 1))


def get_weight(model: nn.Module, layer: LayerInfo) -> torch.Tensor:
    """The live weight parameter of ``layer`` in ``model``."""
    return model.get_submodule(layer.name).weight


def weights_of(model: nn.Module, layers: list[LayerInfo]) -> dict[str, torch.Tensor]:
    """``{layer name: weight tensor}`` (live parameters, not copies)."""
    return {layer.name: get_weight(model, layer) for layer in layers}


def is_transformer_like(layers: list[LayerInfo]) -> bool:
    """True when the model has attention layers (used to pick strategy 10's variant)."""
    return any(layer.role in ("attn_qkv", "attn_proj") for layer in layers)


def used_by_forward(model: nn.Module, layers: list[LayerInfo], x: torch.Tensor, forward=None) -> list[LayerInfo]:
    """``layers`` less those the forward pass never uses: their weight gets no gradient from the logits of
    ``x`` (e.g. SigLIP's attention-pooling head, which the image classifier skips). Pruning them would only
    inflate the reported sparsity."""
    if forward is None:
        from .models import logits as forward
    params = [get_weight(model, layer) for layer in layers]
    requires = [p.requires_grad for p in params]
    was_training = model.training
    model.eval()
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            out = forward(model, x)
            grads = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
    finally:
        for p, r in zip(params, requires):
            p.requires_grad_(r)
        model.train(was_training)
    return [layer for layer, g in zip(layers, grads) if g is not None]


def _plain(module: nn.Module, layer: LayerInfo, x: torch.Tensor) -> torch.Tensor | None:
    """What the layer would output if it applied its stored weight as it is (None: no plain form known)."""
    w, b = module.weight, getattr(module, "bias", None)
    if layer.kind == "linear":
        return nn.functional.linear(x, w, b)
    if layer.kind == "conv1d_t":
        out = x @ w
        return out if b is None else out + b
    for base in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        if isinstance(module, base):
            return base._conv_forward(module, x, w, b)
    return None


_COMPUTE_OPS = (nn.functional.linear, nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d, torch.addmm,
                torch.matmul)


class _RawWeights(torch.overrides.TorchFunctionMode):
    """Records which tensors reach a conv / linear / matmul as an operand (by identity)."""

    def __init__(self):
        super().__init__()
        self.ids: set[int] = set()
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _COMPUTE_OPS and not self.paused:
            self.ids.update(id(a) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        return func(*args, **kwargs)


def not_applied_as_stored(model: nn.Module, layers: list[LayerInfo], x: torch.Tensor, forward=None) -> list[str]:
    """Layers that compute with a transform of their stored weight (weight standardization: BiT's and NFNet's
    convolutions; a parametrization), so that zeros of the stored weight are not zeros of the weight applied.

    Found on ``x``: the layer's output differs from its stored weight applied plainly to its input, and the stored
    weight itself never reaches a conv / linear op (a convolution that pads its input in forward, timm's
    ``Conv2dSame``, differs from the plain op too, but computes with its stored weight: not listed)."""
    if forward is None:
        from .models import logits as forward
    differs: set[str] = set()
    seen: set[str] = set()
    raw = _RawWeights()

    def hook_for(layer):
        def fn(module, args, out):
            if layer.name in seen or not args or not isinstance(args[0], torch.Tensor):
                return
            seen.add(layer.name)
            raw.paused = True  # the plain recomputation is not the model's own use of the weight
            try:
                plain = _plain(module, layer, args[0])
            except Exception:  # noqa: BLE001 - weights not materialized here (offloaded, quantized): no evidence
                return
            finally:
                raw.paused = False
            if plain is None or not isinstance(out, torch.Tensor) or plain.shape != out.shape:
                differs.add(layer.name)
                return
            tol = max(1e-4, 8 * torch.finfo(out.dtype).eps) * float(plain.abs().max()) + 1e-6
            if float((out - plain).abs().max()) > tol:
                differs.add(layer.name)

        return fn

    handles = [model.get_submodule(layer.name).register_forward_hook(hook_for(layer)) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), raw:
            forward(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [layer.name for layer in layers
            if layer.name in differs and id(get_weight(model, layer)) not in raw.ids]
