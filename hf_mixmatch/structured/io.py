"""Save a pruned model in Hub layout (safetensors + config.json + structured.json) and load it back.

Loading rebuilds the *dense* base architecture from ``config.json`` (transformers ``from_config``, timm
``create_model(..., pretrained=False)``, or a registered torch architecture), replays the recorded
Torch-Pruning history so every shape matches, then loads the weights. Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelLoadError, OutputDirError
from .prune import replay
from .reference import build_architecture

RECIPE = "structured.json"


def describe_base(model: nn.Module, *, timm_kwargs: dict | None = None) -> dict:
    """``config.json`` content that rebuilds the dense architecture of ``model``."""
    if hasattr(model, "config") and hasattr(model, "save_pretrained"):
        cfg = model.config.to_dict()
        cfg["_hfmm_library"] = "transformers"
        return cfg
    arch = getattr(model, "_hfmm_arch", None)
    if arch is not None:
        return {"_hfmm_library": "torch", "architecture": arch[0], "kwargs": arch[1]}
    pcfg = getattr(model, "pretrained_cfg", None)
    if pcfg and pcfg.get("architecture"):
        first_conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        kwargs = {"num_classes": getattr(model, "num_classes", None)}
        if first_conv is not None:
            kwargs["in_chans"] = first_conv.in_channels
        kwargs.update(timm_kwargs or getattr(model, "_hfmm_timm_kwargs", {}) or {})
        return {"_hfmm_library": "timm", "architecture": pcfg["architecture"], "model_kwargs": kwargs}
    raise ModelLoadError(f"cannot describe {type(model).__name__} for rebuilding: use a transformers or timm model, "
                         "or hf_mixmatch.structured.build_architecture for a registered torch one")


def _rebuild(cfg: dict) -> nn.Module:
    lib = cfg.get("_hfmm_library")
    if lib == "transformers":
        from transformers import AutoConfig, AutoModelForImageClassification

        c = dict(cfg)
        c.pop("_hfmm_library")
        model_type = c.pop("model_type")
        config = AutoConfig.for_model(model_type, **c)
        return AutoModelForImageClassification.from_config(config)
    if lib == "timm":
        import timm

        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.get("model_kwargs", {}).items()}
        if cfg.get("pretrained_cfg"):  # preprocessing (mean/std/input size) travels with the model
            kwargs["pretrained_cfg"] = dict(cfg["pretrained_cfg"])
        return timm.create_model(cfg["architecture"], pretrained=False, **kwargs)
    if lib == "torch":
        return build_architecture(cfg["architecture"], cfg.get("kwargs", {}))
    raise ModelLoadError(f"config.json names no known library ('{lib}'): was this folder written by save_structured?")


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
