"""Data: open a Hugging Face dataset, find its image and label columns, line its labels up with the
model's, draw seeded samples, and decode + preprocess them once into a memory-mapped cache
(:mod:`hf_mixmatch.datacache`) that every later stage reads."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .datacache import decode_to_cache, tensors_of
from .datasplits import draw_rows, resolve_select_split, resolve_splits
from .errors import DatasetError
from .labels import check_labels, dataset_alignment, label_values, load_label_map
from .models import DEFAULT_DATASET_DIR, DEFAULT_NAME, Preprocess

logger = logging.getLogger(__name__)

IMAGE_COLUMN_NAMES = ("image", "img", "images", "pixel_values", "picture", "photo")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target", "class", "category")


@dataclass
class PreparedData:
    """Calibration tensors in RAM; evaluation, selection and fine-tuning data memory-mapped from the decoded
    cache (one :class:`~hf_mixmatch.datacache.CachedSplit` each, so their size never sits in RAM).

    ``eval`` / ``select`` / ``train`` yield ``(x, y)`` and offer ``get_batch(indices)``; labels are model indices.
    ``select`` is None when the front is chosen on ``eval``; ``select_heldout``: it is a seeded slice of
    the calibration split, disjoint from the calibration and fine-tuning samples.
    """

    calib: TensorDataset
    eval: Dataset
    dataset: str
    calib_split: str
    eval_split: str
    image_column: str
    label_column: str
    num_classes: int
    seed: int
    train: Dataset | None = None  # fine-tuning samples from the calibration (training) split, memory-mapped
    select: Dataset | None = None
    select_split: str | None = None
    select_heldout: bool = False
    labels: dict = field(default_factory=dict)  # LabelAlignment.to_dict(): how, mapping, note
    skipped_images: dict[str, int] = field(default_factory=dict)  # split -> bad images skipped

    @property
    def calib_samples(self) -> int:
        return len(self.calib)

    @property
    def eval_samples(self) -> int:
        return len(self.eval)

    @property
    def select_samples(self) -> int:
        return len(self.select) if self.select is not None else 0


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


def preprocess_images(images, preprocess: Preprocess) -> torch.Tensor:
    """PIL images -> the model's input batch (N, C, H, W): the model's own preprocessing (``LoadedModel.preprocess``)."""
    return preprocess(images)


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
    id2label: dict[int, str] | None = None,
    label_map: dict | None = None,
    select_split: str | None = None,
    select_samples: int | None = 0,
    skip_bad_images: bool = False,
    cache_dir: str | os.PathLike | None = None,
    decode_workers: int | None = None,
) -> PreparedData:
    """Line labels up, draw seeded samples and decode them once into the memory-mapped cache.

    ``select_samples``: 0 = no selection data (the default here), None = the default size, n = n rows."""
    calib_split, eval_split = resolve_splits(ds, calib_split, eval_split)
    for name in (calib_split, eval_split):
        if len(ds[name]) == 0:
            raise DatasetError(f"split '{name}' is empty: pass a split with samples")
    if select_samples is not None and select_samples < 0:
        raise DatasetError(f"selection samples must be >= 0, got {select_samples}: pass a positive number")
    sel_split, heldout = (None, False) if select_samples == 0 else resolve_select_split(
        list(ds.keys()), select_split, calib_split, eval_split)
    if sel_split is not None and len(ds[sel_split]) == 0:
        raise DatasetError(f"split '{sel_split}' is empty: pass --select-split with samples")
    alignment, n_classes = dataset_alignment(ds, label_column, num_labels, id2label, label_map)
    bound = num_labels if num_labels is not None else n_classes
    rows = draw_rows(ds, calib_split, eval_split, sel_split, heldout, seed=seed, calib_samples=calib_samples,
                      eval_samples=eval_samples, train_samples=train_samples, select_samples=select_samples)
    values: dict[str, np.ndarray] = {}
    plan = [(what, split, idx) for what, split, idx in (
        ("calibration", calib_split, rows.calib), ("evaluation", eval_split, rows.eval),
        ("selection", sel_split, rows.select), ("fine-tuning", calib_split, rows.train)) if idx is not None and split]
    labels = {}
    for what, split, idx in plan:  # every split's labels are checked before anything is decoded
        if split not in values:
            values[split] = label_values(ds[split], label_column)
        raw = values[split][idx]
        labels[what] = alignment.map_values(raw)
        check_labels(labels[what], raw, bound, split)
    parts, dropped = {}, {}
    for what, split, idx in plan:
        parts[what] = decode_to_cache(ds[split], idx, labels[what], split=split, image_column=image_column,
                                      preprocess=preprocess, cache_dir=cache_dir, skip_bad_images=skip_bad_images,
                                      desc=f"decode {what}", num_proc=decode_workers)
        if len(parts[what]) == 0:
            raise DatasetError(f"no decodable {what} images left after skipping bad ones: fix the dataset")
        if parts[what].skipped:
            dropped.setdefault(split, set()).update(set(idx.tolist()) - set(parts[what].rows.tolist()))
    skipped = {split: len(r) for split, r in dropped.items()}
    calib = TensorDataset(*tensors_of(parts["calibration"]))
    if alignment.note:
        logger.info("labels: %s", alignment.note)
    return PreparedData(calib=calib, eval=parts["evaluation"], dataset=dataset_name, calib_split=calib_split,
                        eval_split=eval_split, image_column=image_column, label_column=label_column,
                        num_classes=n_classes, seed=seed, train=parts.get("fine-tuning"), select=parts.get("selection"),
                        select_split=sel_split if "selection" in parts else None, select_heldout=heldout and
                        "selection" in parts, labels=alignment.to_dict(), skipped_images=skipped)


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
    id2label: dict[int, str] | None = None,
    label_map: dict | str | os.PathLike | None = None,
    select_split: str | None = None,
    select_samples: int | None = 0,
    skip_bad_images: bool = False,
    cache_dir: str | os.PathLike | None = None,
    decode_workers: int | None = None,
) -> PreparedData:
    """One call: open ``spec``, detect columns, line labels up, decode the samples into the cache."""
    for what, n in (("calibration samples", calib_samples), ("evaluation samples", eval_samples)):
        if n is not None and n <= 0:
            raise DatasetError(f"{what} must be > 0, got {n}: pass a positive number")
    if isinstance(label_map, (str, os.PathLike)):
        label_map = load_label_map(label_map)
    ds, img, lab = load_image_dataset(spec, image_column=image_column, label_column=label_column)
    name = "hf-mixmatch/digits" if str(spec) == DEFAULT_NAME else str(spec)
    return prepare_splits(ds, preprocess, calib_split=calib_split, eval_split=eval_split, calib_samples=calib_samples,
                          eval_samples=eval_samples, seed=seed, image_column=img, label_column=lab,
                          num_labels=num_labels, dataset_name=name, train_samples=train_samples, id2label=id2label,
                          label_map=label_map, select_split=select_split, select_samples=select_samples,
                          skip_bad_images=skip_bad_images, cache_dir=cache_dir, decode_workers=decode_workers)
