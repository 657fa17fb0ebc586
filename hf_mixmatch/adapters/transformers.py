"""transformers image classifiers: ``AutoModelForImageClassification`` from safetensors, never remote code,
preprocessed by the checkpoint's own ``AutoImageProcessor`` (the fast torchvision backend where it exists,
as ``pipeline("image-classification")`` does)."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from ..storage import COMPACT_FILE, DENSE_FILE, is_compact, load_compact
from .base import Adapter, LoadedModel, as_pil, fingerprint, register
from .torch import Preprocess

PROCESSOR_FILE = "preprocessor_config.json"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ProcessorTransform:
    """A transformers image processor applied to a batch of PIL images."""

    def __init__(self, processor, channels: int = 3):
        self.processor = processor
        self.channels = int(channels)
        self.key = fingerprint(type(processor).__name__, {"channels": self.channels, **processor.to_dict()})

    def __call__(self, images) -> torch.Tensor:
        mode = "RGB" if self.channels == 3 else "L"
        images = [as_pil(im, mode) for im in images]
        try:
            batch = self.processor(images=images, return_tensors="pt")
        except (ValueError, RuntimeError) as exc:
            if len({tuple(self.processor(images=im, return_tensors="pt")["pixel_values"].shape) for im in images}) > 1:
                raise ModelLoadError(f"{type(self.processor).__name__}'s output size depends on each image's size, so "
                                     "images cannot be batched: set a crop_size / fixed size in preprocessor_config.json "
                                     "or pass preprocess=Preprocess(...)") from exc
            raise
        pixels = batch.get("pixel_values")
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
            what = "no pixel_values" if pixels is None else f"pixel_values of shape {tuple(getattr(pixels, 'shape', ()))}"
            raise ModelLoadError(f"{type(self.processor).__name__} returns {what}, not an image batch (N, C, H, W): "
                                 "models fed anything but one image tensor are not supported")
        return pixels.float()

    @cached_property
    def input_size(self) -> tuple[int, int, int]:
        from PIL import Image

        return tuple(self([Image.new("RGB", (320, 240))]).shape[1:])

    def to_dict(self) -> dict:
        cfg = json.loads(json.dumps(self.processor.to_dict(), default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
        return {"image_processor_type": type(self.processor).__name__, **cfg}

    def __repr__(self) -> str:
        return f"ProcessorTransform({type(self.processor).__name__}, key={self.key})"


def processor_transform(folder: Path, channels: int = 3) -> ProcessorTransform | None:
    """The folder's own image processor, as ``AutoImageProcessor`` (and so ``pipeline``) builds it: the fast
    torchvision backend where it exists; never remote code. None when the folder describes no processor."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        if not (folder / PROCESSOR_FILE).is_file():
            return None
        raise ModelLoadError(f"cannot build the image processor of {folder} ({_first_line(exc)}): fix "
                             f"{PROCESSOR_FILE} or pass preprocess=Preprocess(...)") from exc
    return ProcessorTransform(processor, channels)


def _fallback_transform(model: nn.Module, folder: Path | None):
    inner = getattr(model, "timm_model", None)  # a timm_wrapper model: timm's own eval transform of the inner model
    if inner is not None and getattr(inner, "pretrained_cfg", None):
        from timm.data import resolve_data_config

        from .timm import TimmTransform

        return TimmTransform(resolve_data_config({}, model=inner))
    config = model.config
    channels = int(getattr(config, "num_channels", 3) or 3)
    size = getattr(config, "image_size", None) or 224
    size = (size, size) if isinstance(size, int) else tuple(size)
    warnings.warn(f"{folder or type(model).__name__} has no {PROCESSOR_FILE}: resizing to {size[0]}x{size[1]} and "
                  "normalising with mean = std = 0.5 (transformers' ViT defaults); pass preprocess=Preprocess(...) "
                  "if the model was trained otherwise", stacklevel=3)
    return Preprocess(size=size, mean=(0.5,) * channels, std=(0.5,) * channels, channels=channels)


class TransformersAdapter(Adapter):
    name = "transformers"

    def detect_config(self, cfg: dict) -> bool:
        # timm_wrapper folders have "architecture" too: model_type decides (they are transformers models)
        return "model_type" in cfg

    def detect_module(self, module: nn.Module) -> bool:
        return hasattr(module, "config") and hasattr(module, "save_pretrained")

    def _check_code(self, folder: Path, cfg: dict) -> None:
        from transformers import CONFIG_MAPPING

        if cfg.get("auto_map") and cfg.get("model_type") not in CONFIG_MAPPING:
            raise ModelLoadError(f"{folder}/config.json needs custom code (auto_map, model_type "
                                 f"'{cfg.get('model_type')}'), which hf_mixmatch never runs: use a model whose "
                                 "architecture ships with transformers")

    def build(self, folder: Path, cfg: dict) -> nn.Module:
        self._check_code(folder, cfg)
        if is_compact(folder):
            # transformers renames checkpoint keys while loading (e.g. legacy ViT names): let it, by restoring the
            # dense file next to a copy of the config in a temporary folder
            from safetensors.torch import save_file

            with tempfile.TemporaryDirectory(prefix="hf_mixmatch_compact_") as tmp:
                for item in folder.glob("*.json"):
                    if item.name != "mixmatch.json":
                        shutil.copyfile(item, Path(tmp) / item.name)
                save_file(load_compact(folder / COMPACT_FILE), str(Path(tmp) / DENSE_FILE), metadata={"format": "pt"})
                return self._from_pretrained(Path(tmp), folder, cfg)
        return self._from_pretrained(folder, folder, cfg)

    def _from_pretrained(self, path: Path, folder: Path, cfg: dict) -> nn.Module:
        from transformers import AutoModelForImageClassification

        try:
            model, info = AutoModelForImageClassification.from_pretrained(
                str(path), use_safetensors=True, trust_remote_code=False, output_loading_info=True)
        except ValueError as exc:
            if "Unrecognized configuration class" in str(exc) or "image classification" in str(exc).lower():
                raise ModelLoadError(f"'{folder}' ({cfg.get('model_type')}) is not an image classifier: pass a model "
                                     "with an image-classification head") from exc
            raise ModelLoadError(f"transformers cannot load {folder}: {_first_line(exc)}") from exc
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
            raise ModelLoadError(f"transformers cannot load {folder}: {_first_line(exc)}") from exc
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise ModelLoadError(f"{folder} lacks {len(missing)} weight(s) the model needs (e.g. {sorted(missing)[0]}), "
                                 "which would be randomly initialised: use a checkpoint saved with its classification "
                                 "head (fine-tune and save the whole model first)")
        return model.eval()

    def folder_transform(self, folder: Path, cfg: dict) -> ProcessorTransform | None:
        self._check_code(folder, cfg)
        return processor_transform(folder, int(cfg.get("num_channels", 3) or 3))

    def transform(self, model: nn.Module, folder: Path | None):
        if folder is None:  # an in-memory model: its processor is not known
            return None
        # the processor config is preprocessor_config.json, or config.json itself (timm_wrapper models)
        own = processor_transform(folder, int(getattr(model.config, "num_channels", 3) or 3))
        return own if own is not None else _fallback_transform(model, folder)

    def label_names(self, model: nn.Module) -> dict[int, str]:
        return {int(k): str(v) for k, v in (model.config.id2label or {}).items()}

    def num_labels(self, model: nn.Module) -> int | None:
        return int(model.config.num_labels)

    def save(self, loaded: LoadedModel, out: Path) -> None:
        loaded.model.save_pretrained(out, safe_serialization=True)
        self.save_preprocessing(loaded, out)

    def save_preprocessing(self, loaded: LoadedModel, out: Path) -> None:
        src = Path(loaded.source_dir) / PROCESSOR_FILE if loaded.source_dir else None
        if src is not None and src.is_file() and isinstance(loaded.preprocess, ProcessorTransform):
            shutil.copyfile(src, out / PROCESSOR_FILE)  # the base's file, byte for byte
        elif isinstance(loaded.preprocess, ProcessorTransform):
            loaded.preprocess.processor.save_pretrained(str(out))
        else:
            (out / PROCESSOR_FILE).write_text(json.dumps(loaded.preprocess.to_processor_config(), indent=2))

    def describe(self, model: nn.Module) -> dict:
        return {**model.config.to_dict(), "_hfmm_library": self.name}

    def rebuild(self, cfg: dict) -> nn.Module:
        from transformers import AutoConfig, AutoModelForImageClassification

        c = {k: v for k, v in cfg.items() if k != "_hfmm_library"}
        model_type = c.pop("model_type")
        return AutoModelForImageClassification.from_config(AutoConfig.for_model(model_type, **c))


register(TransformersAdapter())
