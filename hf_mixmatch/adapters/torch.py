"""Plain torch modules: the manual :class:`Preprocess` (the caller states size, mean and std) and the
adapter for ``nn.Module`` objects that belong to no library (rebuildable only when registered with
``hf_mixmatch.structured.register_architecture``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelLoadError
from .base import Adapter, LoadedModel, as_pil, contiguous_state, fingerprint, register

PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass
class Preprocess:
    """Manual preprocessing: resize (or resize + center crop), rescale, normalise. For plain torch models,
    or to override a model's own preprocessing."""

    size: tuple[int, int]  # (height, width) fed to the model
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    resize: tuple[int, int] | None = None  # resize to this before a center crop to `size` (None: resize to size)
    interpolation: str = "bilinear"
    rescale: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        self.size = tuple(int(s) for s in self.size)
        if self.resize is not None:
            self.resize = tuple(int(s) for s in self.resize)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ConfigError(f"preprocess size must be (height, width) > 0, got {self.size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"only 1- or 3-channel models are supported, got {self.channels} channels")
        if len(self.mean) == 1 and self.channels == 3:
            self.mean, self.std = self.mean * 3, self.std * 3
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"mean/std need {self.channels} values, got {self.mean} / {self.std}")
        if self.interpolation not in PIL_RESAMPLE.values():
            raise ConfigError(f"interpolation must be one of {sorted(PIL_RESAMPLE.values())}, got '{self.interpolation}'")

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    @property
    def key(self) -> str:
        return fingerprint("Preprocess", self.to_dict())

    def __call__(self, images) -> torch.Tensor:
        from PIL import Image

        method = Image.Resampling[self.interpolation.upper()]
        h, w = self.size
        out = np.empty((len(images), self.channels, h, w), dtype=np.float32)
        for i, img in enumerate(images):
            img = as_pil(img, "RGB" if self.channels == 3 else "L")
            if self.resize is not None:
                rh, rw = self.resize
                img = img.resize((rw, rh), method)
                top, left = (rh - h) // 2, (rw - w) // 2
                img = img.crop((left, top, left + w, top + h))
            elif img.size != (w, h):
                img = img.resize((w, h), method)
            arr = np.asarray(img, dtype=np.float32)
            out[i] = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
        t = torch.from_numpy(out) * self.rescale
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (t - mean) / std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(**d)

    def to_processor_config(self) -> dict:
        """The same processing as a transformers ``preprocessor_config.json`` (exact when there is no crop)."""
        cfg = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
               "size": {"height": self.size[0], "width": self.size[1]},
               "resample": {v: k for k, v in PIL_RESAMPLE.items()}[self.interpolation], "do_rescale": True,
               "rescale_factor": self.rescale, "do_normalize": True, "image_mean": list(self.mean),
               "image_std": list(self.std)}
        if self.resize is not None:
            cfg.update(size={"height": self.resize[0], "width": self.resize[1]}, do_center_crop=True,
                       crop_size={"height": self.size[0], "width": self.size[1]})
        return cfg


class TorchAdapter(Adapter):
    """Any other ``nn.Module``: the caller gives the preprocessing; saved as safetensors + a small config."""

    name = "torch"
    fallback = True

    def detect_config(self, cfg: dict) -> bool:
        return cfg.get("library") == "torch"

    def detect_module(self, module: nn.Module) -> bool:
        return True

    def build(self, folder: Path, cfg: dict) -> nn.Module:
        if "architecture" not in cfg:
            raise ModelLoadError(f"{folder} holds a plain torch model ({cfg.get('class', '?')}) that cannot be rebuilt "
                                 "from its folder: build the nn.Module yourself and load its model.safetensors")
        from safetensors.torch import load_file

        model = self.rebuild(cfg)
        missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
        if missing or unexpected:
            raise ModelLoadError(f"the weights in {folder} do not fit {cfg['architecture']} (missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}): re-save the model")
        return model

    def transform(self, model: nn.Module, folder: Path | None) -> Preprocess | None:
        if folder is not None and (folder / "config.json").is_file():
            pre = json.loads((folder / "config.json").read_text()).get("preprocess")
            return Preprocess.from_dict(pre) if pre else None
        return None

    def label_names(self, model: nn.Module) -> dict[int, str]:
        return {}

    def num_labels(self, model: nn.Module) -> int | None:
        n = getattr(model, "num_classes", None) or getattr(model, "num_labels", None)
        return int(n) if n else None

    def save(self, loaded: LoadedModel, out: Path) -> None:
        from safetensors.torch import save_file

        save_file(contiguous_state(loaded.model), str(out / "model.safetensors"))
        cfg = {"library": "torch", "class": type(loaded.model).__name__, "num_labels": loaded.num_labels,
               "preprocess": loaded.preprocess.to_dict()}
        arch = getattr(loaded.model, "_hfmm_arch", None)
        if arch is not None:
            cfg.update(architecture=arch[0], kwargs=arch[1])
        (out / "config.json").write_text(json.dumps(cfg, indent=2))

    def describe(self, model: nn.Module) -> dict:
        arch = getattr(model, "_hfmm_arch", None)
        if arch is None:
            raise ModelLoadError(f"cannot describe {type(model).__name__} for rebuilding: use a transformers or timm "
                                 "model, or hf_mixmatch.structured.build_architecture for a registered torch one")
        return {"_hfmm_library": self.name, "architecture": arch[0], "kwargs": arch[1]}

    def rebuild(self, cfg: dict) -> nn.Module:
        from ..structured.reference import build_architecture

        return build_architecture(cfg["architecture"], cfg.get("kwargs", {}))


register(TorchAdapter())
