"""Loading models: transformers and timm image classifiers, by Hub id, local directory or nn.Module.

An adapter per library hides the differences (how to load, where the preprocessing config lives, how
to save); nothing downstream asks which library a model came from.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, ModelLoadError

DEFAULT_MODEL_DIR = Path(__file__).parent / "_default" / "model"
DEFAULT_DATASET_DIR = Path(__file__).parent / "_default" / "digits"
DEFAULT_NAME = "default"

_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass
class Preprocess:
    """Everything needed to turn a PIL image into the model's input tensor."""

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(**d)


@dataclass
class LoadedModel:
    """A classifier plus what is needed to feed, describe and save it."""

    model: nn.Module
    library: str  # "transformers" | "timm" | "torch"
    source: str
    preprocess: Preprocess
    num_labels: int
    revision: str | None = None
    id2label: dict[int, str] = field(default_factory=dict)
    license: str | None = None
    source_dir: str | None = None  # local folder holding the original files, when known

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the model (weights as safetensors) and its config/preprocessing in Hub layout."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.library == "transformers":
            self.model.save_pretrained(out, safe_serialization=True)
            self._copy_or_write_processor(out)
        elif self.library == "timm":
            _save_timm(self, out)
        else:
            from safetensors.torch import save_file

            save_file(_contiguous_state(self.model), str(out / "model.safetensors"))
            (out / "config.json").write_text(
                json.dumps({"library": "torch", "class": type(self.model).__name__, "num_labels": self.num_labels,
                            "preprocess": self.preprocess.to_dict()}, indent=2)
            )

    def _copy_or_write_processor(self, out: Path) -> None:
        src = Path(self.source_dir) / "preprocessor_config.json" if self.source_dir else None
        if src is not None and src.is_file():
            shutil.copyfile(src, out / "preprocessor_config.json")
            return
        p = self.preprocess
        cfg = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": p.size[0], "width": p.size[1]},
            "resample": {v: k for k, v in _PIL_RESAMPLE.items()}.get(p.interpolation, 2),
            "do_rescale": True,
            "rescale_factor": p.rescale,
            "do_normalize": True,
            "image_mean": list(p.mean),
            "image_std": list(p.std),
        }
        (out / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    seen: dict[int, str] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen and tensor.numel() > 0:  # shared storage: safetensors refuses aliases
            state[name] = tensor.detach().clone().contiguous()
        else:
            state[name] = tensor.detach().contiguous()
        seen.setdefault(key, name)
    return state


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward pass returning the logits tensor for transformers and timm models alike."""
    out = model(x)
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, dict):  # a ModelOutput without `logits` (PP-LCNet): its first tensor
        return next(v for v in out.values() if isinstance(v, torch.Tensor))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


# --------------------------------------------------------------------------------------------- loading


def load_model(
    source: str | os.PathLike | nn.Module,
    *,
    preprocess: Preprocess | dict | None = None,
    revision: str | None = None,
    num_labels: int | None = None,
) -> LoadedModel:
    """Load an image classifier.

    ``source`` is a Hub id (``org/name``, ``timm/name``, ``hf-hub:org/name``), a local directory written
    by transformers' ``save_pretrained`` or timm's ``save_for_hf`` (detected from ``config.json``),
    ``"default"`` for the embedded digits model, or an ``nn.Module`` (then ``preprocess`` is required).
    """
    if isinstance(preprocess, dict):
        preprocess = Preprocess.from_dict(preprocess)
    if isinstance(source, nn.Module):
        if preprocess is None:
            raise ConfigError("an nn.Module needs preprocess=Preprocess(size=..., mean=..., std=..., channels=...)")
        n = num_labels or getattr(getattr(source, "config", None), "num_labels", None) or getattr(source, "num_classes", None)
        if n is None:
            raise ConfigError("cannot tell the number of classes of this nn.Module: pass num_labels=")
        library = "transformers" if hasattr(source, "config") and hasattr(source, "save_pretrained") else (
            "timm" if hasattr(source, "pretrained_cfg") else "torch")
        return LoadedModel(model=source.eval(), library=library, source=type(source).__name__,
                           preprocess=preprocess, num_labels=int(n))
    src = str(source)
    if src == DEFAULT_NAME:
        loaded = _load_transformers(str(DEFAULT_MODEL_DIR), revision=None, local_dir=DEFAULT_MODEL_DIR)
        loaded.source = DEFAULT_NAME
        return loaded
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{src} is a file; pass the model's folder (with config.json) instead")
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ModelLoadError(f"{src} has no config.json: pass a folder written by save_pretrained / timm save_for_hf")
        cfg = json.loads(cfg_file.read_text())
        if "architecture" in cfg:
            loaded = _load_timm(f"local-dir:{path}", preprocess_override=preprocess)
            loaded.source_dir = str(path)
        else:
            loaded = _load_transformers(str(path), revision=None, local_dir=path)
    elif src.startswith(("/", "./", "../", "~", ".\\")) or src.count("/") > 1 or os.sep in src and os.sep != "/":
        raise ModelLoadError(f"model folder '{src}' does not exist: check the path (or pass a Hub id org/name)")
    elif src.startswith(("timm/", "hf-hub:")):
        loaded = _load_timm(src if src.startswith("hf-hub:") else f"hf-hub:{src}", preprocess_override=preprocess)
    elif "/" in src or _looks_like_hub_id(src):
        loaded = _load_from_hub(src, revision=revision, preprocess=preprocess)
    else:
        raise ModelLoadError(
            f"model '{src}' is neither a local folder nor a Hub id (org/name): check the spelling or the path"
        )
    if preprocess is not None:
        loaded.preprocess = preprocess
    return loaded


def _looks_like_hub_id(src: str) -> bool:
    return bool(src) and all(c.isalnum() or c in "-_." for c in src) and not src.startswith(".")


def _load_from_hub(repo_id: str, *, revision: str | None, preprocess: Preprocess | None) -> LoadedModel:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        cfg_path = hf_hub_download(repo_id, "config.json", revision=revision)
    except LocalEntryNotFoundError as exc:  # offline / unreachable and not cached (subclass of EntryNotFound)
        raise ModelLoadError(
            f"model '{repo_id}' is not a local folder and could not be fetched from the Hub"
            " (offline or not cached): check the id/path, or download it first with network access"
        ) from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise ModelLoadError(f"model '{repo_id}' not found on the Hub (or has no config.json): check the id") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(
            f"model '{repo_id}' is not a local folder and could not be fetched from the Hub"
            " (offline or not cached): check the id/path, or download it first with network access"
        ) from exc
    cfg = json.loads(Path(cfg_path).read_text())
    if "architecture" in cfg:
        return _load_timm(f"hf-hub:{repo_id}", preprocess_override=preprocess)
    loaded = _load_transformers(repo_id, revision=revision, local_dir=Path(cfg_path).parent)
    return loaded


def _load_transformers(name: str, *, revision: str | None, local_dir: Path | None) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise ModelLoadError(f"cannot read the config of '{name}': {str(exc).splitlines()[0]}") from exc
    try:
        model = AutoModelForImageClassification.from_pretrained(name, revision=revision, use_safetensors=None)
    except ValueError as exc:
        raise ModelLoadError(
            f"'{name}' ({config.model_type}) is not an image classifier: pass a model with an image-classification head"
        ) from exc
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load '{name}': {str(exc).splitlines()[0]}") from exc
    model.eval()
    pre = _transformers_preprocess(name, revision, config)
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return LoadedModel(
        model=model,
        library="transformers",
        source=name,
        preprocess=pre,
        num_labels=int(config.num_labels),
        revision=getattr(config, "_commit_hash", None) or revision,
        id2label=id2label,
        source_dir=str(local_dir) if local_dir else None,
    )


def _transformers_preprocess(name: str, revision: str | None, config) -> Preprocess:
    channels = int(getattr(config, "num_channels", 3) or 3)
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(name, revision=revision)
    except Exception:  # noqa: BLE001 - no processor: fall back to the config's image size
        size = getattr(config, "image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        return Preprocess(size=size, mean=(0.5,) * channels, std=(0.5,) * channels, channels=channels)
    mean = tuple(getattr(proc, "image_mean", None) or (0.5,) * channels)
    std = tuple(getattr(proc, "image_std", None) or (0.5,) * channels)
    if not getattr(proc, "do_normalize", True):
        mean, std = (0.0,) * channels, (1.0,) * channels
    rescale = float(getattr(proc, "rescale_factor", 1 / 255)) if getattr(proc, "do_rescale", True) else 1.0
    size = _size_tuple(getattr(proc, "size", None), config)
    resize = None
    crop = getattr(proc, "crop_size", None)
    if getattr(proc, "do_center_crop", False) and crop:
        resize = size
        size = _size_tuple(crop, config)
    elif "shortest_edge" in (_as_size_dict(getattr(proc, "size", None)) or {}):
        # ConvNeXt-style: resize the short side to shortest_edge / crop_pct, then crop
        edge = int(_as_size_dict(proc.size)["shortest_edge"])
        pct = getattr(proc, "crop_pct", None)
        if pct and edge < 384:
            resize = (int(edge / pct), int(edge / pct))
        size = (edge, edge)
    resample = getattr(proc, "resample", 2)
    interp = _PIL_RESAMPLE.get(int(resample) if not hasattr(resample, "value") else resample.value, "bilinear")
    return Preprocess(size=size, mean=mean, std=std, channels=channels, resize=resize, interpolation=interp, rescale=rescale)


def _as_size_dict(size) -> dict | None:
    """transformers >= 5 uses a SizeDict dataclass; older versions a plain dict."""
    if size is None or isinstance(size, (int, dict)):
        return size
    keys = ("height", "width", "shortest_edge", "longest_edge")
    return {k: getattr(size, k) for k in keys if getattr(size, k, None) is not None}


def _size_tuple(size, config) -> tuple[int, int]:
    size = _as_size_dict(size)
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return (int(size["height"]), int(size["width"]))
        if "shortest_edge" in size:
            e = int(size["shortest_edge"])
            return (e, e)
    if isinstance(size, int):
        return (size, size)
    s = getattr(config, "image_size", 224)
    return (s, s) if isinstance(s, int) else tuple(s)


def _load_timm(name: str, *, preprocess_override: Preprocess | None) -> LoadedModel:
    import timm

    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - timm raises RuntimeError/OSError/KeyError
        raise ModelLoadError(f"cannot load timm model '{name}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    model.eval()
    pre = preprocess_override or _timm_preprocess(model)
    num = int(getattr(model, "num_classes", 0) or 0)
    if num <= 0:
        raise ModelLoadError(f"timm model '{name}' has no classifier head (num_classes=0): use a classification model")
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return LoadedModel(model=model, library="timm", source=name.removeprefix("hf-hub:"), preprocess=pre,
                       num_labels=num, license=cfg.get("license"),
                       id2label={i: str(n) for i, n in enumerate(cfg.get("label_names") or [])})


def _timm_preprocess(model: nn.Module) -> Preprocess:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    c, h, w = cfg["input_size"]
    pct = float(cfg.get("crop_pct", 1.0) or 1.0)
    resize = None if pct >= 1.0 else (int(h / pct), int(w / pct))
    return Preprocess(size=(h, w), mean=cfg["mean"], std=cfg["std"], channels=c, resize=resize,
                      interpolation=cfg.get("interpolation", "bilinear"))


def _save_timm(loaded: LoadedModel, out: Path) -> None:
    from safetensors.torch import save_file

    src_cfg = Path(loaded.source_dir) / "config.json" if loaded.source_dir else None
    if src_cfg is not None and src_cfg.is_file():
        cfg = json.loads(src_cfg.read_text())
    else:
        pcfg = dict(getattr(loaded.model, "pretrained_cfg", {}) or {})
        arch = pcfg.get("architecture") or getattr(loaded.model, "default_cfg", {}).get("architecture")
        if not arch:
            raise ModelLoadError("cannot save this timm model: its pretrained_cfg names no architecture")
        pcfg.pop("hf_hub_id", None)
        pcfg.pop("url", None)
        pcfg.pop("file", None)
        pcfg.pop("source", None)
        pcfg.pop("hf_hub_filename", None)
        pcfg.pop("tag", None)
        cfg = {"architecture": arch, "num_classes": loaded.num_labels,
               "num_features": getattr(loaded.model, "num_features", None), "pretrained_cfg": pcfg}
        cfg["pretrained_cfg"]["num_classes"] = loaded.num_labels
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    save_file(_contiguous_state(loaded.model), str(out / "model.safetensors"))
