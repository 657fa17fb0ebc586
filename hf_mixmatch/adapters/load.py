"""``load_model``: where a model comes from (an ``nn.Module``, the embedded default, a local folder or a Hub
repo, downloaded as safe files only) and which adapter reads it."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..errors import ConfigError, ModelLoadError
from .base import LoadedModel, Transform, adapter_for_config, adapter_for_module, read_config, require_safetensors
from .torch import Preprocess

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "_default" / "model"
DEFAULT_DATASET_DIR = Path(__file__).resolve().parent.parent / "_default" / "digits"
DEFAULT_NAME = "default"
SAFE_PATTERNS = ("*.json", "*.safetensors", "*.md", "*.txt")


def load_model(
    source: str | os.PathLike | nn.Module,
    *,
    preprocess: Transform | Preprocess | dict | None = None,
    revision: str | None = None,
    num_labels: int | None = None,
) -> LoadedModel:
    """Load an image classifier.

    ``source`` is a Hub id (``org/name``, ``timm/name``, ``hf-hub:org/name``), a local folder written by
    transformers' ``save_pretrained`` or timm's ``save_for_hf``, ``"default"`` for the embedded digits model, or
    an ``nn.Module``. Weights are read from safetensors only; no remote code runs. ``preprocess`` overrides the
    model's own preprocessing (required for an ``nn.Module`` whose preprocessing its library cannot tell: plain
    torch, or a transformers model without its processor folder; a timm module uses its ``pretrained_cfg``).
    """
    if isinstance(preprocess, dict):
        preprocess = Preprocess.from_dict(preprocess)
    if isinstance(source, nn.Module):
        return _from_module(source, preprocess, num_labels)
    src = str(source)
    if src == DEFAULT_NAME:
        folder, name, rev = DEFAULT_MODEL_DIR, DEFAULT_NAME, None
    else:
        folder, name, rev = _resolve(src, revision)
    cfg = read_config(folder)
    require_safetensors(folder, name)
    loaded = adapter_for_config(cfg, f"{name}/config.json").load(folder, cfg, source=name, revision=rev)
    if preprocess is not None:
        loaded.preprocess = preprocess
    return loaded


def _from_module(module: nn.Module, preprocess, num_labels: int | None) -> LoadedModel:
    adapter = adapter_for_module(module)
    n = num_labels or adapter.num_labels(module)
    if not n:
        raise ConfigError("cannot tell the number of classes of this nn.Module: pass num_labels=")
    preprocess = preprocess if preprocess is not None else adapter.transform(module, None)  # e.g. timm's own
    if preprocess is None:
        raise ConfigError("this nn.Module needs preprocess=Preprocess(size=..., mean=..., std=..., channels=...)")
    return LoadedModel(model=module.eval(), library=adapter.name, source=type(module).__name__, preprocess=preprocess,
                       num_labels=int(n), id2label=adapter.label_names(module))


def _resolve(src: str, revision: str | None) -> tuple[Path, str, str | None]:
    """(local folder, display name, revision) of a folder path or a Hub id."""
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{src} is a file; pass the model's folder (with config.json) instead")
        return path, src, revision
    if src.startswith(("/", "./", "../", "~", ".\\")) or src.count("/") > 1 or (os.sep != "/" and os.sep in src):
        raise ModelLoadError(f"model folder '{src}' does not exist: check the path (or pass a Hub id org/name)")
    repo_id = src.removeprefix("hf-hub:")
    if not ("/" in repo_id or _looks_like_hub_id(repo_id)):
        raise ModelLoadError(f"model '{src}' is neither a local folder nor a Hub id (org/name): check the spelling or the path")
    folder = _download(repo_id, revision)
    return folder, repo_id, folder.name


def _looks_like_hub_id(src: str) -> bool:
    return bool(src) and all(c.isalnum() or c in "-_." for c in src) and not src.startswith(".")


def _download(repo_id: str, revision: str | None) -> Path:
    """A snapshot of the repo's safe files (configs, safetensors); pickles are never downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(SAFE_PATTERNS)))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelLoadError(f"model '{repo_id}' (revision {revision or 'main'}) not found on the Hub: check the id") from exc
    except HFValidationError as exc:
        raise ModelLoadError(f"'{repo_id}' is not a valid Hub id: pass org/name or a local folder") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(
            f"model '{repo_id}' is not a local folder and could not be fetched from the Hub"
            " (offline or not cached): check the id/path, or download it first with network access") from exc
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"model '{repo_id}' has no config.json on the Hub: pass a transformers or timm model repo")
    if not any(p.suffix == ".safetensors" for p in folder.iterdir()):
        try:  # tell pickle-only repos apart (their pickles are listed, never downloaded)
            from huggingface_hub import HfApi

            require_safetensors(folder, repo_id, HfApi().list_repo_files(repo_id, revision=revision))
        except (HfHubHTTPError, OSError):
            require_safetensors(folder, repo_id)
    return folder
