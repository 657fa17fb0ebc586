"""The adapter interface, the registry of adapters by name, and what every library shares.

An adapter knows one library (transformers, timm, plain torch): how to recognise its folders and modules,
build a model from a folder (safetensors only), the model's own preprocessing, its label names, how to save
it and how to rebuild its dense architecture from a config. Everything downstream goes through
:class:`LoadedModel` and :func:`logits`; a new library is one new module that calls :func:`register`.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import ModelLoadError, UnsafeWeightsError

PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")


@runtime_checkable
class Transform(Protocol):
    """PIL images -> the model's input batch, exactly as the model's own preprocessing does it."""

    key: str  # stable fingerprint of the processing (a cache key)
    channels: int

    @property
    def input_size(self) -> tuple[int, int, int]: ...

    def __call__(self, images: list) -> torch.Tensor: ...

    def to_dict(self) -> dict: ...


def fingerprint(kind: str, payload: dict) -> str:
    """``kind:<sha256 prefix>`` of a JSON-able description: equal processing, equal key."""
    text = json.dumps(payload, sort_keys=True, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o))
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def as_pil(image, mode: str):
    """A PIL image in ``mode`` (``RGB`` or ``L``) from a PIL image or an array."""
    import numpy as np
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    return image if image.mode == mode else image.convert(mode)


@dataclass
class LoadedModel:
    """A classifier plus what is needed to feed, describe and save it."""

    model: nn.Module
    library: str  # the adapter's registered name
    source: str
    preprocess: Transform
    num_labels: int
    revision: str | None = None
    id2label: dict[int, str] = field(default_factory=dict)
    license: str | None = None
    source_dir: str | None = None  # local folder holding the original files, when known

    @property
    def adapter(self) -> "Adapter":
        return get_adapter(self.library)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the model (weights as safetensors), its config and its preprocessing in Hub layout."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.adapter.save(self, out)

    def save_preprocessing(self, save_directory: str | os.PathLike) -> None:
        """Write only the preprocessing files the library keeps next to its config (if any)."""
        self.adapter.save_preprocessing(self, Path(save_directory))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward pass returning the logits tensor, whatever the model returns (ModelOutput, dict, tuple, tensor)."""
    return extract_logits(model(x))


def extract_logits(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):  # ModelOutput is an OrderedDict too
        if out.get("logits") is not None:
            return out["logits"]
        first = next((v for v in out.values() if isinstance(v, torch.Tensor)), None)
        if first is not None:
            return first
    elif getattr(out, "logits", None) is not None:
        return out.logits
    elif isinstance(out, (tuple, list)) and out:
        return extract_logits(out[0])
    raise ModelLoadError(f"the model's forward returned {type(out).__name__} with no logits tensor: "
                         "wrap it in an nn.Module that returns the logits")


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``. ``copy.deepcopy`` refuses tensors computed with gradients that a module keeps
    between calls (LeViT's attention-bias cache, filled by any forward with gradients in eval mode); those
    are copied detached."""
    memo: dict[int, object] = {}

    def visit(value) -> None:
        if isinstance(value, torch.Tensor):
            if value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    for module in model.modules():
        for key, value in vars(module).items():
            if key not in ("_parameters", "_modules", "_forward_hooks", "_forward_pre_hooks"):
                visit(value)
    return copy.deepcopy(model, memo)


def contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict ready for safetensors (contiguous, no shared storage: safetensors refuses aliases)."""
    seen: dict[int, str] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        state[name] = (tensor.detach().clone() if key in seen and tensor.numel() > 0 else tensor.detach()).contiguous()
        seen.setdefault(key, name)
    return state


def read_config(folder: Path) -> dict:
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"{folder} has no config.json: pass a folder written by save_pretrained / timm save_for_hf")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{cfg_file} is not valid JSON ({exc}): re-download or re-save the model") from exc
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{cfg_file} holds no JSON object: re-download or re-save the model")
    return cfg


def require_safetensors(folder: Path, where: str, extra_names: list[str] = ()) -> None:
    """Refuse a folder whose weights are pickles only (loading a pickle can run code)."""
    names = [p.name for p in folder.iterdir() if p.is_file()] + list(extra_names)
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = sorted(n for n in names if any(fnmatch.fnmatch(n.lower(), pat) for pat in PICKLE_PATTERNS))
    if pickles:
        raise UnsafeWeightsError(f"{where} only has pickle weights ({', '.join(pickles[:3])}), which can run code when "
                                 "loaded: convert to safetensors (e.g. save_pretrained(..., safe_serialization=True))")
    raise ModelLoadError(f"{where} has no model.safetensors: pass a folder written by save_pretrained / timm save_for_hf")


class Adapter(ABC):
    """One library. Subclasses implement the abstract methods and call :func:`register` once."""

    name: str
    fallback: bool = False  # asked only after every other adapter (it accepts anything)

    @abstractmethod
    def detect_config(self, cfg: dict) -> bool:
        """Whether a folder's ``config.json`` content belongs to this library."""

    @abstractmethod
    def detect_module(self, module: nn.Module) -> bool:
        """Whether an in-memory model belongs to this library."""

    @abstractmethod
    def build(self, folder: Path, cfg: dict) -> nn.Module:
        """The model of a folder, weights from safetensors (dense or compact), every weight present."""

    @abstractmethod
    def transform(self, model: nn.Module, folder: Path | None) -> Transform | None:
        """The model's own preprocessing (None when the library cannot tell)."""

    @abstractmethod
    def label_names(self, model: nn.Module) -> dict[int, str]:
        """Class index -> name, as the checkpoint states them (empty when it does not)."""

    @abstractmethod
    def num_labels(self, model: nn.Module) -> int | None:
        """Number of classes the head predicts (None when unknown)."""

    @abstractmethod
    def save(self, loaded: LoadedModel, out: Path) -> None:
        """Weights (safetensors) + config + preprocessing, loadable by the library's own loader."""

    @abstractmethod
    def describe(self, model: nn.Module) -> dict:
        """``config.json`` content from which :meth:`rebuild` builds the dense architecture (random weights)."""

    @abstractmethod
    def rebuild(self, cfg: dict) -> nn.Module:
        """The dense architecture described by :meth:`describe`'s output."""

    def folder_transform(self, folder: Path, cfg: dict) -> Transform | None:
        """The preprocessing a folder describes without building the model (checked before the weights load);
        None: ask :meth:`transform` with the built model."""
        return None

    def save_preprocessing(self, loaded: LoadedModel, out: Path) -> None:
        """Preprocessing files kept beside the config; nothing for libraries that store it in config.json."""

    def license(self, model: nn.Module, cfg: dict) -> str | None:
        return None

    def load(self, folder: Path, cfg: dict, *, source: str, revision: str | None = None) -> LoadedModel:
        pre = self.folder_transform(folder, cfg)  # a broken preprocessing config fails before any weight loads
        model = self.build(folder, cfg).eval()
        n = self.num_labels(model)
        if not n or n <= 0:
            raise ModelLoadError(f"'{source}' has no classifier head (0 classes): use an image-classification model")
        pre = pre if pre is not None else self.transform(model, folder)
        if pre is None:
            raise ModelLoadError(f"cannot tell the preprocessing of '{source}': pass preprocess=Preprocess(...)")
        return LoadedModel(model=model, library=self.name, source=source, preprocess=pre, num_labels=int(n),
                           revision=revision, id2label=self.label_names(model), license=self.license(model, cfg),
                           source_dir=str(folder))


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    """Add an adapter; detection asks adapters in registration order, fallback adapters last."""
    _REGISTRY[adapter.name] = adapter
    return adapter


def _in_detection_order() -> list[Adapter]:
    return sorted(_REGISTRY.values(), key=lambda a: a.fallback)


def get_adapter(name: str) -> Adapter:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelLoadError(f"no adapter named '{name}' (known: {', '.join(_REGISTRY)})") from None


def adapter_for_config(cfg: dict, where: str = "config.json") -> Adapter:
    """The adapter of a folder's config: the one it names (``_hfmm_library``), else the first that detects it."""
    named = cfg.get("_hfmm_library")
    if named:
        return get_adapter(named)
    for adapter in _in_detection_order():
        if adapter.detect_config(cfg):
            return adapter
    raise ModelLoadError(f"no adapter ({', '.join(_REGISTRY)}) recognises {where}: pass a folder written by "
                         "save_pretrained / timm save_for_hf")


def adapter_for_module(module: nn.Module) -> Adapter:
    for adapter in _in_detection_order():
        if adapter.detect_module(module):
            return adapter
    raise ModelLoadError(f"no adapter accepts {type(module).__name__}")
