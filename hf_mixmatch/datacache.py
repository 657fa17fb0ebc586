"""Decode + preprocess once into a memory-mapped Arrow cache, then serve ``(x, y)`` items and batches from it.

``datasets.Dataset.map`` writes the model-ready float32 tensors (``Array3D``) of the selected rows to one
Arrow file under the cache dir, named by a key over the split's fingerprint, the selected rows, the image
column, the labels and the transform's fingerprint. A second run with the same key opens the file instead
of decoding again. The file is memory-mapped: its pages are file-backed and shared, so anonymous memory
does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .errors import DatasetError

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


class BadImageError(DatasetError):
    """An image that cannot be decoded (corrupt, truncated, not an image) or a decompression bomb."""


def default_cache_dir() -> Path:
    """``$HF_DATASETS_CACHE/hf_mixmatch/decoded`` (datasets' own cache dir), never the run's output dir."""
    root = os.environ.get("HF_DATASETS_CACHE")
    if not root:
        import datasets

        root = datasets.config.HF_DATASETS_CACHE
    return Path(root).expanduser() / "hf_mixmatch" / "decoded"


# --------------------------------------------------------------------------------------------- transform


def transform_key(preprocess) -> str:
    """A stable fingerprint of the preprocessing (interface: ``preprocess.key``; else its config)."""
    key = getattr(preprocess, "key", None)
    if key:
        return str(key)
    cfg = preprocess.to_dict() if hasattr(preprocess, "to_dict") else repr(preprocess)
    return f"{type(preprocess).__name__}:" + json.dumps(cfg, sort_keys=True, default=str)


def input_shape(preprocess) -> tuple[int, int, int]:
    """(C, H, W) of the tensors the transform produces."""
    size = getattr(preprocess, "input_size", None)
    if size is not None:
        return tuple(int(s) for s in size)
    return (int(preprocess.channels), *(int(s) for s in preprocess.size))


def apply_transform(preprocess, images: list) -> torch.Tensor:
    """PIL images -> (N, C, H, W) float32: the transform's own ``__call__`` when it has one, else
    the manual :class:`~hf_mixmatch.models.Preprocess` path."""
    if callable(preprocess):
        out = preprocess(images)
    else:
        from .data import preprocess_images

        out = preprocess_images(images, preprocess)
    return torch.as_tensor(out, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ images


def open_image(value, *, split: str, row: int, channels: int = 3):
    """Decode one image cell (``{"bytes", "path"}``, bytes, a path, an array or a PIL image) fully, as
    RGB (or L for 1-channel models). Raises :class:`BadImageError` naming the split and row."""
    from PIL import Image

    where = f"split '{split}' row {row}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(value, Image.Image):
                img = value
            elif isinstance(value, dict) and (value.get("bytes") is not None or value.get("path")):
                src = value.get("bytes")
                img = Image.open(io.BytesIO(src) if src is not None else value["path"])
            elif isinstance(value, (bytes, bytearray)):
                img = Image.open(io.BytesIO(value))
            elif isinstance(value, (str, os.PathLike)):
                img = Image.open(value)
            elif value is None:
                raise ValueError("the image is missing (None)")
            else:
                arr = np.asarray(value)
                img = Image.fromarray(arr.astype(np.uint8) if arr.dtype != np.uint8 else arr)
            img.load()
            return img.convert("RGB" if channels == 3 else "L")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"image at {where} is refused as a decompression bomb ({exc}): remove it or pass "
                            "--skip-bad-images") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for broken files
        msg = (str(exc).splitlines() or [""])[0][:200]
        raise BadImageError(f"image at {where} cannot be decoded ({type(exc).__name__}: {msg}): fix or remove it, "
                            "or pass --skip-bad-images") from None


# ------------------------------------------------------------------------------------------------- cache


class CachedSplit(Dataset):
    """``(x: FloatTensor[C,H,W], y: int64 scalar)`` items served from a memory-mapped Arrow file.

    ``get_batch(indices)`` reads many rows at once; ``rows`` are the rows of the source split that were
    kept; ``skipped`` counts the requested rows dropped as bad images.
    """

    def __init__(self, table, *, split: str, requested: int, path: Path | None = None):
        self._table = table.with_format("numpy", columns=["x", "y"])
        self.split = split
        self.requested = int(requested)
        self.path = path
        self._views: tuple[list[np.ndarray], np.ndarray, np.ndarray] | None = None  # built lazily, per process

    def __getstate__(self):  # the views point into this process's memory map: rebuilt after unpickling
        return {**self.__dict__, "_views": None}

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, i: int):
        x, y = self.get_batch([int(i)])
        return x[0], y[0]

    def _chunk_views(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Zero-copy numpy views ``[rows, C, H, W]`` of every Arrow chunk of ``x`` (pages stay file-backed),
        the first row of each chunk, and the labels. Going through ``datasets``' formatter instead converts
        the nested lists row by row: ~50x slower, and paid again by every variant on every batch."""
        if self._views is None:
            import pyarrow as pa

            shape = tuple(self._table.features["x"].shape)
            views, starts, n = [], [], 0
            for chunk in self._table.data.column("x").chunks:
                values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
                while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) \
                        or pa.types.is_fixed_size_list(values.type):
                    values = values.flatten()
                views.append(values.to_numpy(zero_copy_only=False).reshape(len(chunk), *shape))
                starts.append(n)
                n += len(chunk)
            labels = np.asarray(self._table.data.column("y").to_numpy(), dtype=np.int64)
            self._views = (views, np.asarray(starts, dtype=np.int64), labels)
        return self._views

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.fromiter((int(i) for i in indices), dtype=np.int64)
        if self._table._indices is not None:  # a datasets-level selection on top of the file: its own path
            batch = self._table[idx.tolist()]
            return torch.from_numpy(np.asarray(batch["x"])), torch.from_numpy(np.asarray(batch["y"], dtype=np.int64))
        views, starts, labels = self._chunk_views()
        shape = tuple(self._table.features["x"].shape)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(labels)):
            raise IndexError(f"row index out of range for {len(labels)} rows")
        out = np.empty((len(idx), *shape), dtype=np.float32)
        chunk_of = np.searchsorted(starts, idx, side="right") - 1
        for c in np.unique(chunk_of):
            sel = chunk_of == c
            out[sel] = views[c][idx[sel] - starts[c]]
        return torch.from_numpy(out), torch.from_numpy(labels[idx])

    def __getitems__(self, indices):  # batched fetch used by torch's DataLoader
        x, y = self.get_batch(indices)
        return list(zip(x, y))

    @property
    def rows(self) -> np.ndarray:
        return np.asarray(self._table.with_format("numpy", columns=["row"])["row"], dtype=np.int64)

    @property
    def skipped(self) -> int:
        return self.requested - len(self)


def tensors_of(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All of ``ds`` as ``(X, Y)`` tensors in RAM (a TensorDataset's own, or a batched read)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[0], ds.tensors[1]
    return ds.get_batch(range(len(ds)))


def cache_key(split_ds, *, rows: np.ndarray, labels: np.ndarray, image_column: str, preprocess,
              skip_bad_images: bool) -> str:
    h = hashlib.sha256()
    meta = {"v": CACHE_VERSION, "fingerprint": getattr(split_ds, "_fingerprint", None), "image": image_column,
            "transform": transform_key(preprocess), "skip": bool(skip_bad_images), "n": len(split_ds)}
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


def decode_to_cache(split_ds, rows: np.ndarray, labels: np.ndarray, *, split: str, image_column: str, preprocess,
                    cache_dir: str | os.PathLike | None = None, skip_bad_images: bool = False,
                    desc: str = "decode", batch_size: int = 32, num_proc: int | None = None) -> CachedSplit:
    """Decode + preprocess ``split_ds[rows]`` once (``labels`` already in model index space, one per row)
    into ``<cache_dir>/<key>.arrow`` and return the memory-mapped :class:`CachedSplit` (order kept).

    ``num_proc`` > 1 decodes in that many processes (``datasets.map``; shards ``<key>_<i>_of_<n>.arrow``,
    reused whatever ``num_proc`` a later run asks for); the tensors are the same."""
    import datasets
    from filelock import FileLock

    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the decoded-data cache {cache} ({exc.strerror}): pass --data-cache-dir "
                           "DIR (a writable folder)") from None
    key = cache_key(split_ds, rows=rows, labels=labels, image_column=image_column, preprocess=preprocess,
                    skip_bad_images=skip_bad_images)
    path = cache / f"{key}.arrow"
    shape = input_shape(preprocess)
    sub = split_ds.select(rows.tolist())
    if isinstance(sub.features.get(image_column), datasets.Image):
        sub = sub.cast_column(image_column, datasets.Image(decode=False))
    features = datasets.Features({"x": datasets.Array3D(shape=shape, dtype="float32"), "y": datasets.Value("int64"),
                                  "row": datasets.Value("int64")})

    def decode(batch, positions):
        images, keep = [], []
        for pos, value in zip(positions, batch[image_column]):
            try:
                images.append(open_image(value, split=split, row=int(rows[pos]), channels=shape[0]))
                keep.append(pos)
            except BadImageError as exc:
                if not skip_bad_images:
                    raise
                logger.warning("skipped: %s", exc)
        x = apply_transform(preprocess, images).numpy() if images else np.empty((0, *shape), np.float32)
        if tuple(x.shape[1:]) != shape:
            raise DatasetError(f"the preprocessing produced tensors of shape {tuple(x.shape[1:])}, expected {shape}: "
                               "the model's preprocessing config is inconsistent")
        return {"x": x, "y": labels[keep], "row": rows[keep]}

    try:
        with FileLock(str(path) + ".lock"):
            reused = any(cache.glob(f"{key}*.arrow"))
            procs = num_proc if num_proc and 1 < num_proc <= len(rows) else None
            out = sub.map(decode, batched=True, batch_size=batch_size, with_indices=True,
                          remove_columns=sub.column_names, features=features, cache_file_name=str(path),
                          load_from_cache_file=True, writer_batch_size=batch_size, new_fingerprint=key, desc=desc,
                          num_proc=procs)
    except OSError as exc:  # read-only or full cache folder
        raise DatasetError(f"cannot write the decoded-data cache in {cache} ({exc.strerror or exc}): pass "
                           "--data-cache-dir DIR (a writable folder with room for C*H*W*4 bytes per image)") from None
    if reused:
        logger.info("%s: reusing the decoded cache %s", desc, path)
    files = [Path(f["filename"]) for f in out.cache_files]
    result = CachedSplit(out, split=split, requested=len(rows), path=files[0] if len(files) == 1 else path)
    if result.skipped:
        logger.warning("%s: skipped %d bad image(s) in split '%s'", desc, result.skipped, split)
    return result
