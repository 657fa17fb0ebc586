"""Tiny evaluation data for the zoo: crops of real photos of several sizes and aspects, random labels."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

# (left, top, right, bottom) boxes in the 640x427 sample photos: landscape, portrait, square, small, thin
CROPS = ((0, 0, 640, 427), (200, 0, 360, 427), (100, 50, 400, 350), (300, 200, 360, 240), (0, 180, 640, 260),
         (500, 0, 640, 427), (50, 300, 130, 420), (320, 100, 620, 400))


def photos() -> list:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(img) for img in load_sample_images().images]


def photo_batch(size: int, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` crops of the two sample photos resized to ``size`` x ``size``, normalized to mean 0.5 / std 0.5."""
    from PIL import Image

    imgs = photos()
    out = []
    for i in range(n):
        crop = imgs[(i + seed) % len(imgs)].crop(CROPS[(i + seed) % len(CROPS)])
        arr = np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    return (torch.stack(out) - 0.5) / 0.5


def prepared(size: int, num_labels: int, *, n_calib: int = 8, n_eval: int = 8):
    """A ``PreparedData`` over photo crops; labels drawn at random in the model's index space."""
    from hf_mixmatch.data import PreparedData

    g = torch.Generator().manual_seed(0)
    calib = TensorDataset(photo_batch(size, n_calib), torch.randint(num_labels, (n_calib,), generator=g))
    evald = TensorDataset(photo_batch(size, n_eval, seed=3), torch.randint(num_labels, (n_eval,), generator=g))
    return PreparedData(calib=calib, eval=evald, dataset="sklearn-sample-photos", calib_split="calib",
                        eval_split="eval", image_column="image", label_column="label", num_classes=num_labels, seed=0)
