"""timm classifiers: folders written by ``timm.models.save_for_hf`` (``config.json`` with ``architecture``,
``pretrained_cfg`` and ``model_args``), built with ``create_model(pretrained=False)`` and loaded from
safetensors, preprocessed by timm's eval transform (``create_transform(**resolve_data_config(model=...))``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from ..storage import COMPACT_FILE, DENSE_FILE, is_compact, load_compact
from .base import Adapter, LoadedModel, as_pil, contiguous_state, fingerprint, register

# pretrained_cfg entries that say where weights came from: never written into a saved config
_SOURCE_KEYS = ("hf_hub_id", "url", "file", "source", "hf_hub_filename", "tag", "state_dict")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def clean_pretrained_cfg(model: nn.Module) -> dict:
    """The model's ``pretrained_cfg`` (preprocessing, labels, license) without where its weights came from."""
    pcfg = {k: v for k, v in dict(getattr(model, "pretrained_cfg", None) or {}).items() if k not in _SOURCE_KEYS}
    return _jsonable(pcfg)


def _is_plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (str, int, float, bool))


def constructor_args(model: nn.Module) -> dict:
    """Every constructor argument the model was built with (timm records them), JSON-able ones only."""
    from timm.models import get_model_args

    try:
        args = dict(get_model_args(model))
    except (TypeError, ValueError, AttributeError):  # a module timm did not build
        args = {}
    args.update(getattr(model, "_hfmm_timm_kwargs", None) or {})
    return _jsonable({k: v for k, v in args.items() if _is_plain(v)})


def _model_args(cfg: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(cfg.get("model_args") or {}).items()}


class TimmTransform:
    """timm's eval transform for a model, applied image by image and stacked into a batch."""

    def __init__(self, data_config: dict):
        from timm.data import create_transform

        self.data_config = _jsonable(data_config)
        self.channels = int(self.data_config["input_size"][0])
        self.transform = create_transform(**data_config, is_training=False)
        self.key = fingerprint("timm", self.data_config)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data_config["input_size"])

    def __call__(self, images) -> torch.Tensor:
        mode = "RGB" if self.channels == 3 else "L"
        return torch.stack([self.transform(as_pil(im, mode)) for im in images]).float()

    def to_dict(self) -> dict:
        return {"timm_data_config": self.data_config}

    def __repr__(self) -> str:
        return f"TimmTransform({self.data_config})"


class TimmAdapter(Adapter):
    name = "timm"

    def detect_config(self, cfg: dict) -> bool:
        return "architecture" in cfg and "model_type" not in cfg

    def detect_module(self, module: nn.Module) -> bool:
        # a registered torch architecture (``_hfmm_arch``) may wrap a timm model: it is rebuilt by its own name
        return bool((getattr(module, "pretrained_cfg", None) or {}).get("architecture")) and not hasattr(module, "_hfmm_arch")

    def _parse(self, cfg: dict) -> tuple[str, dict, dict]:
        """(architecture, create_model kwargs, pretrained_cfg) as timm reads a save_for_hf config.json."""
        if "pretrained_cfg" not in cfg:  # legacy single-dict form: everything but the architecture is pretrained_cfg
            pcfg = {k: v for k, v in cfg.items() if k not in ("architecture", "num_features")}
            if "labels" in pcfg:
                pcfg["label_names"] = pcfg.pop("labels")
        else:
            pcfg = dict(cfg["pretrained_cfg"] or {})
        for key in ("num_classes", "label_names", "label_descriptions"):
            if key in cfg:
                pcfg[key] = cfg[key]
        kwargs = _model_args(cfg)
        if pcfg.get("num_classes") is not None:
            kwargs.setdefault("num_classes", int(pcfg["num_classes"]))
        return cfg["architecture"], kwargs, pcfg

    def _create(self, arch: str, kwargs: dict, pcfg: dict | None, where: str) -> nn.Module:
        import timm

        try:
            model = timm.create_model(arch, pretrained=False, pretrained_cfg=pcfg or None, **kwargs)
        except Exception as exc:  # noqa: BLE001 - timm raises RuntimeError/KeyError/TypeError for bad configs
            raise ModelLoadError(f"timm cannot build '{arch}' from {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        return model

    def build(self, folder: Path, cfg: dict) -> nn.Module:
        from safetensors.torch import load_file

        arch, kwargs, pcfg = self._parse(cfg)
        model = self._create(arch, kwargs, pcfg, f"{folder}/config.json")
        state = load_compact(folder / COMPACT_FILE) if is_compact(folder) else load_file(str(folder / DENSE_FILE))
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatch
            raise ModelLoadError(f"the weights in {folder} do not fit the model its config.json describes: "
                                 f"{str(exc).splitlines()[0]}") from exc
        if missing:
            raise ModelLoadError(f"{folder} lacks {len(missing)} weight(s) the model needs (e.g. {missing[0]}), which "
                                 "would be randomly initialised: use a checkpoint saved with its classification head")
        if unexpected:
            raise ModelLoadError(f"the weights in {folder} do not match the model from config.json (unexpected: "
                                 f"{unexpected[:3]}): check model_args in config.json or re-save the model")
        return model.eval()

    def transform(self, model: nn.Module, folder: Path | None) -> TimmTransform:
        from timm.data import resolve_data_config

        return TimmTransform(resolve_data_config({}, model=model))

    def label_names(self, model: nn.Module) -> dict[int, str]:
        names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names") or []
        return {i: str(n) for i, n in enumerate(names)}

    def num_labels(self, model: nn.Module) -> int | None:
        return int(getattr(model, "num_classes", 0) or 0)

    def license(self, model: nn.Module, cfg: dict) -> str | None:
        return (getattr(model, "pretrained_cfg", None) or {}).get("license")

    def save(self, loaded: LoadedModel, out: Path) -> None:
        """``save_for_hf`` layout: ``architecture``, ``num_classes``, ``pretrained_cfg`` and ``model_args``."""
        from safetensors.torch import save_file

        model = loaded.model
        if not isinstance(loaded.preprocess, TimmTransform):
            warnings.warn("this timm model was fed a manual Preprocess, which timm's pretrained_cfg cannot describe: "
                          "the saved config keeps the model's own preprocessing; load it with the same "
                          "preprocess=... to reproduce the numbers", stacklevel=3)
        pcfg = clean_pretrained_cfg(model)
        arch = pcfg.get("architecture")
        if not arch:
            raise ModelLoadError("cannot save this timm model: its pretrained_cfg names no architecture")
        pcfg["num_classes"] = loaded.num_labels
        cfg = {"architecture": arch, "num_classes": loaded.num_labels,
               "num_features": getattr(model, "num_features", None), "pretrained_cfg": pcfg,
               "model_args": constructor_args(model)}  # so e.g. global_pool or custom widths come back
        if loaded.id2label:
            cfg["label_names"] = [loaded.id2label[i] for i in sorted(loaded.id2label)]
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
        save_file(contiguous_state(model), str(out / DENSE_FILE))

    def describe(self, model: nn.Module) -> dict:
        pcfg = clean_pretrained_cfg(model)
        if not pcfg.get("architecture"):
            raise ModelLoadError(f"cannot describe {type(model).__name__} for rebuilding: its pretrained_cfg names "
                                 "no architecture")
        first_conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        kwargs = {"num_classes": getattr(model, "num_classes", None)}
        if first_conv is not None:
            kwargs["in_chans"] = first_conv.in_channels
        kwargs.update(constructor_args(model))
        return {"_hfmm_library": self.name, "architecture": pcfg["architecture"], "model_kwargs": kwargs,
                "pretrained_cfg": pcfg}

    def rebuild(self, cfg: dict) -> nn.Module:
        kwargs = _model_args({"model_args": cfg.get("model_kwargs", {})})
        return self._create(cfg["architecture"], kwargs, dict(cfg.get("pretrained_cfg") or {}) or None,
                            "config.json")


register(TimmAdapter())
