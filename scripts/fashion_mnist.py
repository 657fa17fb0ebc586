"""Fashion-MNIST from the Debian package's idx files as a Hugging Face dataset.

    apt-get install dataset-fashion-mnist      # files land in /usr/share/datasets/fashion-mnist
    python scripts/fashion_mnist.py --out data/fashion_mnist [--train-samples N --test-samples M]

writes ``train.parquet`` and ``test.parquet`` into ``--out``; ``datasets.load_dataset("data/fashion_mnist")``
(or the ``parquet`` builder with ``data_files``) opens them, and so does ``hf-mixmatch prune --dataset``.
From Python: ``load_fashion_mnist()`` returns the ``DatasetDict`` directly, and ``read_split()`` the raw
uint8 arrays (what ``train_reference.py`` trains on, without a PNG round trip).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class FashionMnistNotFound(FileNotFoundError):
    """The idx files are not where we look; the message says how to install them."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read one (optionally gzipped) idx file: magic ``00 00 <dtype> <ndim>``, big-endian uint32 dims, data."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)) * dtype.itemsize:
        raise ValueError(f"{path}: header says {dims} but the file holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)


def read_split(split: str, root: str | Path = DEFAULT_ROOT, *, samples: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of ``split`` ("train" or "test"); the first
    ``samples`` items if given (the files are already in random order, so a prefix is an unbiased sample)."""
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_FILES)}")
    root = Path(root)
    paths = [root / name for name in SPLIT_FILES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FashionMnistNotFound(
            f"Fashion-MNIST file(s) not found: {', '.join(missing)}. Install them with `{INSTALL_HINT}` "
            f"or pass the folder that holds the idx .gz files.")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
    if samples is not None:
        if samples <= 0:
            raise ValueError(f"samples must be > 0, got {samples}")
        images, labels = images[:samples], labels[:samples]
    return np.array(images), labels.astype(np.int64)  # a writable copy (frombuffer is read-only)


def load_fashion_mnist(root: str | Path = DEFAULT_ROOT, *, train_samples: int | None = None,
                       test_samples: int | None = None):
    """Fashion-MNIST as a ``datasets.DatasetDict`` with splits ``train``/``test``, columns ``image``
    (28x28 grayscale PIL) and ``label`` (ClassLabel with the ten class names)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASS_NAMES)})
    out = {}
    for split, samples in (("train", train_samples), ("test", test_samples)):
        images, labels = read_split(split, root, samples=samples)
        # PNG-encoded bytes directly: the same thing the Image feature stores, without a PIL object per row.
        rows = [{"bytes": _png(a), "path": None} for a in images]
        out[split] = datasets.Dataset.from_dict({"image": rows, "label": labels.tolist()}, features=features)
    return datasets.DatasetDict(out)


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=DEFAULT_ROOT, help="folder with the idx .gz files (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="folder for train.parquet / test.parquet")
    ap.add_argument("--train-samples", type=int, default=None, help="first N training images (default: all 60000)")
    ap.add_argument("--test-samples", type=int, default=None, help="first M test images (default: all 10000)")
    args = ap.parse_args(argv)
    try:
        dd = load_fashion_mnist(args.root, train_samples=args.train_samples, test_samples=args.test_samples)
    except (FashionMnistNotFound, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    for split, ds in dd.items():
        ds.to_parquet(str(args.out / f"{split}.parquet"))
        print(f"{split}: {len(ds)} images -> {args.out / f'{split}.parquet'}")


if __name__ == "__main__":
    main()
