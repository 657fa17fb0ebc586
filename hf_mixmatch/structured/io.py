"""Save a pruned model in Hub layout (safetensors + config.json + structured.json) and load it back.

Loading rebuilds the *dense* base architecture from ``config.json`` (transformers ``from_config``, timm
``create_model(..., pretrained=False)``, or a registered torch architecture), replays the recorded
Torch-Pruning history so every shape matches, then loads the weights. Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelLoadError, OutputDirError
from .prune import replay

RECIPE = "structured.json"


def describe_base(model: nn.Module, *, timm_kwargs: dict | None = None) -> dict:
    """``config.json`` content that rebuilds the dense architecture of ``model`` (its library's adapter decides;
    a timm model keeps every constructor argument it was built with, ``timm_kwargs`` added)."""
    from ..adapters import adapter_for_module

    cfg = adapter_for_module(model).describe(model)
    if timm_kwargs and "model_kwargs" in cfg:
        cfg["model_kwargs"].update(timm_kwargs)
    return cfg


def _rebuild(cfg: dict) -> nn.Module:
    from ..adapters import adapter_for_config

    if not cfg.get("_hfmm_library"):
        raise ModelLoadError("config.json names no library (_hfmm_library): was this folder written by save_structured?")
    return adapter_for_config(cfg).rebuild(cfg)


def save_structured(model: nn.Module, recipe: dict, base_config: dict, path, *, overwrite: bool = False) -> Path:
    """Write ``model.safetensors``, ``config.json`` (the dense base) and ``structured.json`` into ``path``."""
    out = Path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputDirError(f"{out} exists and is not empty: pass overwrite=True (--overwrite) or another folder")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(base_config, indent=2, default=str))
    (out / RECIPE).write_text(json.dumps(recipe, indent=2, default=float))
    return out


def load_structured(path) -> nn.Module:
    """The pruned model saved by :func:`save_structured`, in eval mode, with the recorded shapes."""
    folder = Path(path)
    for name in ("config.json", RECIPE, "model.safetensors"):
        if not (folder / name).is_file():
            raise ModelLoadError(f"{folder} has no {name}: pass a folder written by save_structured")
    cfg = json.loads((folder / "config.json").read_text())
    recipe = json.loads((folder / RECIPE).read_text())
    model = _rebuild(cfg).eval()
    replay(model, recipe)
    state = load_file(str(folder / "model.safetensors"))
    own = model.state_dict()
    bad = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise ModelLoadError(f"{len(bad)} tensors do not match the replayed shapes (first: {bad[0]}): "
                             "the base architecture differs from the one the recipe was made on")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"weights do not fit the rebuilt model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
