"""Shared fixtures: isolated caches, tiny models built from configs, tiny image datasets on disk."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    """Every test gets its own HF cache and no token, so nothing leaks between tests or from the machine."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield


def make_image_dataset(path, *, n_train=64, n_test=32, num_classes=4, size=16, mode="RGB", seed=0,
                       image_column="image", label_column="label"):
    """A small parquet dataset (train/test) whose class is readable from the image (brightness band)."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(num_classes)]
    feats = datasets.Features({image_column: datasets.Image(), label_column: datasets.ClassLabel(names=names)})
    path.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % num_classes
        images = []
        for y in labels:
            base = (y + 0.5) / num_classes * 255
            arr = np.clip(base + rng.normal(0, 20, size=(size, size, 3 if mode == "RGB" else 1)), 0, 255).astype(np.uint8)
            images.append(Image.fromarray(arr.squeeze(-1) if mode == "L" else arr, mode=mode))
        ds = datasets.Dataset.from_dict({image_column: images, label_column: labels.tolist()}, features=feats)
        ds.to_parquet(str(path / f"{split}.parquet"))
    return path


@pytest.fixture
def image_dataset(tmp_path):
    return make_image_dataset(tmp_path / "data")


def tiny_transformers(kind: str, num_labels: int = 4, image_size: int = 16):
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ResNetConfig,
                              ResNetForImageClassification, SwinConfig, SwinForImageClassification, ViTConfig,
                              ViTForImageClassification)

    torch.manual_seed(0)
    if kind == "vit":
        cfg = ViTConfig(image_size=image_size, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=num_labels)
        return ViTForImageClassification(cfg).eval()
    if kind == "swin":
        cfg = SwinConfig(image_size=image_size, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                         window_size=4, num_labels=num_labels)
        return SwinForImageClassification(cfg).eval()
    if kind == "resnet":
        cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=num_labels)
        return ResNetForImageClassification(cfg).eval()
    if kind == "convnext":
        cfg = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=num_labels)
        return ConvNextForImageClassification(cfg).eval()
    raise ValueError(kind)


def save_tiny_transformers(path, kind: str, num_labels: int = 4, image_size: int = 16):
    from transformers import ViTImageProcessor

    model = tiny_transformers(kind, num_labels, image_size)
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(path)
    return path


def tiny_timm(arch: str = "resnet18", num_classes: int = 4):
    import timm

    torch.manual_seed(0)
    kwargs = {}
    if arch.startswith("vit"):
        kwargs = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    elif arch.startswith("resnet"):
        kwargs = dict(layers=(1, 1, 1, 1))
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs).eval()


def save_tiny_timm(path, arch: str = "resnet18", num_classes: int = 4):
    from timm.models import save_for_hf

    model = tiny_timm(arch, num_classes)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 16, 16), "mean": (0.5, 0.5, 0.5),
                            "std": (0.5, 0.5, 0.5), "crop_pct": 1.0, "num_classes": num_classes}
    save_for_hf(model, str(path), model_config={"num_classes": num_classes}, safe_serialization=True)
    return path


@pytest.fixture
def tiny_vit_dir(tmp_path):
    return save_tiny_transformers(tmp_path / "vit", "vit")


@pytest.fixture
def tiny_resnet_dir(tmp_path):
    return save_tiny_transformers(tmp_path / "resnet", "resnet")


@pytest.fixture
def tiny_timm_dir(tmp_path):
    return save_tiny_timm(tmp_path / "timm_resnet")
from hub_server import hub_server  # noqa: F401
