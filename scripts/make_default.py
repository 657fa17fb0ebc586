"""Build the embedded default: scikit-learn's digits as a Hugging Face parquet dataset, and a small
transformers ResNet trained on it. Both are committed under hf_mixmatch/_default/ so the README's
main command runs offline on a fresh machine.

    python scripts/make_default.py            # rewrites hf_mixmatch/_default/{digits,model}

Deterministic on one machine (seeded data split, seeded init and shuffling, single-threaded
deterministic kernels); float summation may differ across CPU types, so weights can differ in the
last bits between machines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1] / "hf_mixmatch" / "_default"
SIZE = 32
MEAN, STD = 0.2, 0.3  # of the upscaled digits in [0, 1]


def build_dataset(out: Path, seed: int = 0):
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).round().astype(np.uint8)  # 8x8, 0..16 -> 0..255
    labels = digits.target.astype(int)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):  # stratified 20% test split
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: round(0.2 * len(idx))])
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_idx] = True
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, mask in (("train", ~test_mask), ("test", test_mask)):
        pil = [Image.fromarray(a, mode="L").resize((SIZE, SIZE), Image.BILINEAR) for a in images[mask]]
        ds = datasets.Dataset.from_dict({"image": pil, "label": labels[mask].tolist()}, features=feats)
        ds.to_parquet(str(out / f"{split}.parquet"))
        splits[split] = ds
    return splits


def to_tensor(ds) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in ds["image"]])
    x = (torch.from_numpy(x).permute(0, 3, 1, 2) - MEAN) / STD
    return x, torch.tensor(ds["label"])


def train(splits, out: Path, *, epochs: int, seed: int) -> float:
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    cfg = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 96, 128], depths=[1, 1, 1, 1],
                       layer_type="basic", num_labels=10, id2label={i: str(i) for i in range(10)},
                       label2id={str(i): i for i in range(10)})
    model = ResNetForImageClassification(cfg)
    xtr, ytr = to_tensor(splits["train"])
    xte, yte = to_tensor(splits["test"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(xtr) + 63) // 64))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for s in range(0, len(xtr), 64):
            idx = perm[s : s + 64]
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]).logits, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).logits.argmax(-1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}/{epochs}: test accuracy {acc:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    ViTImageProcessor(do_resize=True, size={"height": SIZE, "width": SIZE}, resample=2, do_rescale=True,
                      rescale_factor=1 / 255, do_normalize=True, image_mean=[MEAN] * 3,
                      image_std=[STD] * 3).save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps({"test_accuracy": acc, "epochs": epochs, "seed": seed}, indent=1))
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    splits = build_dataset(args.out / "digits", seed=args.seed)
    acc = train(splits, args.out / "model", epochs=args.epochs, seed=args.seed)
    print(f"dense test accuracy: {acc:.4f}  ->  {args.out}")


if __name__ == "__main__":
    main()
