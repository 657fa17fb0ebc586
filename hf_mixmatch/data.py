"""Data: open a Hugging Face dataset, find its image and label columns, line its labels up with the
model's, draw seeded samples, and decode + preprocess them once into a memory-mapped cache
(:mod:`hf_mixmatch.datacache`) that every later stage reads."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .datacache import decode_to_cache, tensors_of
from .errors import DatasetError
from .labels import LabelAlignment, align_labels, check_labels, load_label_map
from .models import DEFAULT_DATASET_DIR, DEFAULT_NAME, Preprocess

logger = logging.getLogger(__name__)

IMAGE_COLUMN_NAMES = ("image", "img", "images", "pixel_values", "picture", "photo")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target", "class", "category")
EVAL_SPLIT_NAMES = ("test", "validation", "valid", "val", "eval")
CALIB_SPLIT_NAMES = ("train", "training")
SELECT_SAMPLES = 2000  # default size of the selection data (at most a fifth of the training split when held out)


@dataclass
class PreparedData:
    """Calibration tensors in RAM; evaluation (and selection) data memory-mapped from the decoded cache.

    ``eval`` / ``select`` yield ``(x, y)`` and offer ``get_batch(indices)``; labels are model indices.
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
    train: TensorDataset | None = None  # fine-tuning samples from the calibration (training) split
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




def resolve_select_split(names, select_split: str | None, calib_split: str, eval_split: str) -> tuple[str | None, bool]:
    """``(split the front is chosen on or None, held out of the calibration split?)``.

    Default: ``validation`` when the dataset also has ``test`` (and evaluates on it), else a held-out
    slice of the calibration split; ``"none"`` chooses on the evaluation split (selection bias)."""
    if select_split == "none":
        return None, False
    if select_split is not None:
        if select_split not in names:
            raise DatasetError(f"--select-split '{select_split}' not in the dataset (splits: {list(names)}): pass one "
                               "of them, or 'none'")
        if select_split == eval_split:
            warnings.warn(f"choosing the front on the evaluation split '{eval_split}': its accuracies are optimistic "
                          "(selection bias)", stacklevel=3)
            return None, False
        return select_split, select_split == calib_split
    if "validation" in names and "test" in names and eval_split == "test" and calib_split != "validation":
        return "validation", False
    if calib_split == eval_split:
        return None, False
    return calib_split, True


def num_classes_of(ds, label_column: str) -> int:
    """Classes of the label column: ClassLabel's count, distinct strings, or max integer + 1."""
    import datasets

    feat = next(iter(ds.values())).features[label_column]
    if isinstance(feat, datasets.ClassLabel):
        return int(feat.num_classes)
    values = [_label_values(split, label_column) for split in ds.values() if len(split)]
    if any(v.dtype.kind in "OUS" for v in values):
        return len({str(x) for v in values for x in v if x is not None})
    return int(max(int(v.max()) for v in values if len(v))) + 1


def _label_values(split_ds, label_column: str) -> np.ndarray:
    """The whole label column as numpy (ints; strings as objects; missing ints as -1)."""
    import pyarrow as pa

    col = split_ds.with_format("arrow", columns=[label_column])[:][label_column]
    if pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
        return col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_floating(col.type):
        arr = col.fill_null(-1).to_numpy(zero_copy_only=False)
        if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise DatasetError(f"label column '{label_column}' holds non-integer numbers: pass --label-column with "
                               "class labels")
        return arr.astype(np.int64)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    raise DatasetError(f"label column '{label_column}' has type {col.type}, not class labels: pass --label-column NAME")


def _draw(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """A seeded random draw of ``n`` of ``range(n_total)`` (all when None), in random order."""
    return rng.permutation(n_total)[: n if n is not None else n_total]


@dataclass
class _Rows:
    calib: np.ndarray
    eval: np.ndarray
    train: np.ndarray | None
    select: np.ndarray | None


def _draw_rows(ds, calib_split: str, eval_split: str, select_split: str | None, heldout: bool, *, seed: int,
               calib_samples: int | None, eval_samples: int | None, train_samples: int | None,
               select_samples: int | None) -> _Rows:
    """Seeded draws. Calibration and fine-tuning rows stay in random order, so every batch mixes classes
    (whatever the split's order); evaluation / selection rows are sorted (sequential reads)."""
    n_calib_split = len(ds[calib_split])
    perm = np.random.default_rng(seed).permutation(n_calib_split)
    n_cal = n_calib_split if calib_samples is None else min(calib_samples, n_calib_split)
    select = None
    if select_split is not None and heldout:  # the tail of the permutation: calibration rows do not move
        n_sel = min(SELECT_SAMPLES, n_calib_split // 5) if select_samples is None else select_samples
        n_sel = min(n_sel, n_calib_split - n_cal)
        if n_sel > 0:
            select, perm = np.sort(perm[n_calib_split - n_sel:]), perm[: n_calib_split - n_sel]
    elif select_split is not None:
        n = len(ds[select_split])
        select = np.sort(_draw(n, min(SELECT_SAMPLES, n) if select_samples is None else select_samples,
                               np.random.default_rng(seed + 3)))
    calib = perm[:n_cal]
    evals = np.sort(_draw(len(ds[eval_split]), eval_samples, np.random.default_rng(seed + 1)))
    train = None
    if train_samples is not None:
        train = np.random.default_rng(seed + 2).permutation(perm)[:train_samples]
    return _Rows(calib=calib, eval=evals, train=train, select=select)


def _alignment(ds, label_column: str, num_labels: int | None, id2label, label_map) -> tuple[LabelAlignment, int]:
    import datasets

    feat = next(iter(ds.values())).features[label_column]
    names = list(feat.names) if isinstance(feat, datasets.ClassLabel) else None
    string_labels = isinstance(feat, datasets.Value) and feat.dtype in ("string", "large_string")
    n_classes = num_classes_of(ds, label_column)
    if num_labels is None:
        return LabelAlignment("identity", None, names), n_classes
    alignment = align_labels(names, id2label, num_labels, string_labels=string_labels, label_map=label_map)
    if alignment.how == "by_index" and n_classes != num_labels:
        raise DatasetError(
            f"the dataset has {n_classes} classes but the model predicts {num_labels}: use a dataset with the"
            " model's label set (or a model fine-tuned on this dataset), or pass --label-map FILE"
        )
    return alignment, n_classes


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
    alignment, n_classes = _alignment(ds, label_column, num_labels, id2label, label_map)
    bound = num_labels if num_labels is not None else n_classes
    rows = _draw_rows(ds, calib_split, eval_split, sel_split, heldout, seed=seed, calib_samples=calib_samples,
                      eval_samples=eval_samples, train_samples=train_samples, select_samples=select_samples)
    values: dict[str, np.ndarray] = {}

    def decode(split: str, idx: np.ndarray, what: str):
        if split not in values:
            values[split] = _label_values(ds[split], label_column)
        raw = values[split][idx]
        mapped = alignment.map_values(raw)
        check_labels(mapped, raw, bound, split)
        return decode_to_cache(ds[split], idx, mapped, split=split, image_column=image_column, preprocess=preprocess,
                               cache_dir=cache_dir, skip_bad_images=skip_bad_images, desc=f"decode {what}")

    skipped: dict[str, int] = {}
    parts = {}
    for what, split, idx in (("calibration", calib_split, rows.calib), ("evaluation", eval_split, rows.eval),
                             ("selection", sel_split, rows.select), ("fine-tuning", calib_split, rows.train)):
        if idx is None or split is None:
            continue
        parts[what] = decode(split, idx, what)
        if parts[what].skipped:
            skipped[split] = skipped.get(split, 0) + parts[what].skipped
    for what in ("calibration", "evaluation", "selection", "fine-tuning"):
        if what in parts and len(parts[what]) == 0:
            raise DatasetError(f"no decodable {what} images left after skipping bad ones: fix the dataset")
    calib = TensorDataset(*tensors_of(parts["calibration"]))
    train = TensorDataset(*tensors_of(parts["fine-tuning"])) if "fine-tuning" in parts else None
    if alignment.note:
        logger.info("labels: %s", alignment.note)
    return PreparedData(calib=calib, eval=parts["evaluation"], dataset=dataset_name, calib_split=calib_split,
                        eval_split=eval_split, image_column=image_column, label_column=label_column,
                        num_classes=n_classes, seed=seed, train=train, select=parts.get("selection"),
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
                          skip_bad_images=skip_bad_images, cache_dir=cache_dir)


def preprocess_images(images, preprocess: Preprocess) -> torch.Tensor:
    """PIL images -> normalized float tensor (N, C, H, W) following the manual ``preprocess``."""
    from PIL import Image

    resample = getattr(Image, "Resampling", Image)
    method = {
        "nearest": resample.NEAREST, "bilinear": resample.BILINEAR, "bicubic": resample.BICUBIC,
        "lanczos": resample.LANCZOS, "box": resample.BOX, "hamming": resample.HAMMING,
    }.get(preprocess.interpolation, resample.BILINEAR)
    mode = "RGB" if preprocess.channels == 3 else "L"
    h, w = preprocess.size
    out = np.empty((len(images), preprocess.channels, h, w), dtype=np.float32)
    for i, img in enumerate(images):
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        img = img.convert(mode)
        if preprocess.resize is not None:
            rh, rw = preprocess.resize
            img = img.resize((rw, rh), method)
            top, left = (rh - h) // 2, (rw - w) // 2
            img = img.crop((left, top, left + w, top + h))
        elif img.size != (w, h):
            img = img.resize((w, h), method)
        arr = np.asarray(img, dtype=np.float32)
        out[i] = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
    t = torch.from_numpy(out) * preprocess.rescale
    mean = torch.tensor(preprocess.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std).view(1, -1, 1, 1)
    return (t - mean) / std
