"""Data: open a Hugging Face dataset, find its image and label columns, and decode + preprocess the
calibration and evaluation samples once into tensors that every later stage reuses."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .errors import DatasetError
from .models import DEFAULT_DATASET_DIR, DEFAULT_NAME, Preprocess

logger = logging.getLogger(__name__)

IMAGE_COLUMN_NAMES = ("image", "img", "images", "pixel_values", "picture", "photo")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target", "class", "category")
EVAL_SPLIT_NAMES = ("test", "validation", "valid", "val", "eval")
CALIB_SPLIT_NAMES = ("train", "training")


@dataclass
class PreparedData:
    """Decoded, preprocessed tensors for calibration and evaluation."""

    calib: TensorDataset
    eval: TensorDataset
    dataset: str
    calib_split: str
    eval_split: str
    image_column: str
    label_column: str
    num_classes: int
    seed: int
    train: TensorDataset | None = None  # fine-tuning samples from the calibration (training) split

    @property
    def calib_samples(self) -> int:
        return len(self.calib)

    @property
    def eval_samples(self) -> int:
        return len(self.eval)


def load_image_dataset(spec: str | os.PathLike, *, image_column: str | None = None, label_column: str | None = None):
    """Open ``spec`` (Hub id, local folder of parquet/arrow/images, or a ``save_to_disk`` folder) and
    return ``(DatasetDict, image_column, label_column)``."""
    import datasets

    spec = str(spec)
    if spec == DEFAULT_NAME:
        spec = str(DEFAULT_DATASET_DIR)
    path = Path(spec).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
        elif path.exists():
            ds = datasets.load_dataset(str(path))
        else:
            ds = datasets.load_dataset(spec)
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset '{spec}' not found: pass a Hub id or a local folder of parquet/arrow/image files") from exc
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds (offline, bad files)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"cannot open dataset '{spec}': {msg}") from exc
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    if not isinstance(ds, datasets.DatasetDict) or not ds:
        raise DatasetError(f"dataset '{spec}' has no splits")
    first = next(iter(ds.values()))
    img = image_column or _detect_column(first.features, datasets.Image, IMAGE_COLUMN_NAMES)
    lab = label_column or _detect_column(first.features, datasets.ClassLabel, LABEL_COLUMN_NAMES)
    if img is None or img not in first.column_names:
        raise DatasetError(
            f"dataset '{spec}' has no image column (columns: {first.column_names}): pass --image-column NAME"
        )
    if lab is None or lab not in first.column_names:
        raise DatasetError(
            f"dataset '{spec}' has no label column (columns: {first.column_names}): pass --label-column NAME"
        )
    return ds, img, lab


def _detect_column(features, feature_type, names) -> str | None:
    for name, feat in features.items():
        if isinstance(feat, feature_type):
            return name
    for name in names:
        if name in features:
            return name
    return None


def resolve_splits(ds, calib_split: str | None, eval_split: str | None) -> tuple[str, str]:
    """Pick the calibration (training) and evaluation splits; warn on test leakage."""
    names = list(ds.keys())
    for requested in (calib_split, eval_split):
        if requested is not None and requested not in names:
            raise DatasetError(f"split '{requested}' not in the dataset (splits: {names}): pass one of them")
    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLIT_NAMES if s in names), None)
        if eval_split is None:
            raise DatasetError(f"no evaluation split found (splits: {names}): pass --eval-split NAME")
    if calib_split is None:
        calib_split = next((s for s in CALIB_SPLIT_NAMES if s in names and s != eval_split), None)
        if calib_split is None:
            calib_split = next((s for s in names if s != eval_split), None)
        if calib_split is None:
            raise DatasetError(
                f"no training split to calibrate on (splits: {names}): pass --calib-split NAME"
                " (calibrating on the evaluation split leaks test data)"
            )
    if calib_split == eval_split:
        warnings.warn(
            f"calibrating on the evaluation split '{eval_split}': accuracies are optimistic (test leakage)",
            stacklevel=2,
        )
    return calib_split, eval_split


def num_classes_of(ds, label_column: str) -> int:
    import datasets

    feat = next(iter(ds.values())).features[label_column]
    if isinstance(feat, datasets.ClassLabel):
        return int(feat.num_classes)
    top = max(int(max(split[label_column])) for split in ds.values() if len(split))
    return top + 1


def _subsample(n_total: int, n: int | None, seed: int, what: str) -> np.ndarray:
    if n is not None and n <= 0:
        raise DatasetError(f"{what} must be > 0, got {n}: pass a positive number")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n_total)
    return np.sort(idx[: n if n is not None else n_total])


def preprocess_images(images, preprocess: Preprocess) -> torch.Tensor:
    """PIL images -> the model's input batch (N, C, H, W): the model's own preprocessing (``LoadedModel.preprocess``)."""
    return preprocess(images)


def _decode(split, indices: np.ndarray, image_column: str, label_column: str, preprocess: Preprocess,
            desc: str, chunk: int = 256) -> TensorDataset:
    xs, ys = [], []
    sub = split.select(indices.tolist())
    for start in tqdm(range(0, len(sub), chunk), desc=desc, unit="batch", leave=False,
                      disable=os.environ.get("HF_MIXMATCH_NO_PROGRESS") == "1"):
        batch = sub[start : start + chunk]
        xs.append(preprocess_images(batch[image_column], preprocess))
        ys.append(torch.as_tensor(np.asarray(batch[label_column], dtype=np.int64)))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def prepare_splits(
    ds,
    preprocess: Preprocess,
    *,
    calib_split: str | None = None,
    eval_split: str | None = None,
    calib_samples: int | None = 256,
    eval_samples: int | None = None,
    seed: int = 0,
    image_column: str,
    label_column: str,
    num_labels: int | None = None,
    dataset_name: str = "",
    train_samples: int | None = None,
) -> PreparedData:
    """Subsample (seeded) and decode the calibration and evaluation splits once."""
    calib_split, eval_split = resolve_splits(ds, calib_split, eval_split)
    n_classes = num_classes_of(ds, label_column)
    if num_labels is not None and n_classes != num_labels:
        raise DatasetError(
            f"the dataset has {n_classes} classes but the model predicts {num_labels}: use a dataset with the"
            " model's label set (or a model fine-tuned on this dataset)"
        )
    for name in (calib_split, eval_split):
        if len(ds[name]) == 0:
            raise DatasetError(f"split '{name}' is empty: pass a split with samples")
    calib_idx = _subsample(len(ds[calib_split]), calib_samples, seed, "calibration samples")
    eval_idx = _subsample(len(ds[eval_split]), eval_samples, seed + 1, "evaluation samples")
    calib = _decode(ds[calib_split], calib_idx, image_column, label_column, preprocess, "decode calibration")
    evald = _decode(ds[eval_split], eval_idx, image_column, label_column, preprocess, "decode evaluation")
    train = None
    if train_samples is not None:
        train_idx = _subsample(len(ds[calib_split]), train_samples, seed + 2, "fine-tuning samples")
        train = _decode(ds[calib_split], train_idx, image_column, label_column, preprocess, "decode fine-tuning")
    return PreparedData(calib=calib, eval=evald, dataset=dataset_name, calib_split=calib_split, eval_split=eval_split,
                        image_column=image_column, label_column=label_column, num_classes=n_classes, seed=seed,
                        train=train)


def load_data(
    spec: str | os.PathLike,
    preprocess: Preprocess,
    *,
    calib_split: str | None = None,
    eval_split: str | None = None,
    calib_samples: int | None = 256,
    eval_samples: int | None = None,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    num_labels: int | None = None,
    train_samples: int | None = None,
) -> PreparedData:
    """One call: open ``spec``, detect columns, decode calibration and evaluation tensors."""
    for what, n in (("calibration samples", calib_samples), ("evaluation samples", eval_samples)):
        if n is not None and n <= 0:
            raise DatasetError(f"{what} must be > 0, got {n}: pass a positive number")
    ds, img, lab = load_image_dataset(spec, image_column=image_column, label_column=label_column)
    name = "hf-mixmatch/digits" if str(spec) == DEFAULT_NAME else str(spec)
    return prepare_splits(ds, preprocess, calib_split=calib_split, eval_split=eval_split, calib_samples=calib_samples,
                          eval_samples=eval_samples, seed=seed, image_column=img, label_column=lab,
                          num_labels=num_labels, dataset_name=name, train_samples=train_samples)
