#!/usr/bin/env python
"""Where a layer's calibration input is taken (``hf_mixmatch.activations._OpInputs``): what it fixes, what it costs.

1. A convolution that pads its input in forward (timm's ``Conv2dSame``, used by every ``tf_*`` model) and then
   convolves with padding 0: the Hessian ``X^T X`` built from the module's input and attributes (unpadded patches,
   what a module hook alone sees) against the one of the patches the convolution really multiplies, per feature-map
   size and stride: relative Frobenius error, and the Hessian the library now accumulates (should be 0).
2. The cost of taking inputs at the op (a ``TorchFunctionMode`` over every op of the forward): Wanda's feature norms
   on timm models at 224 px with the mode and with plain module hooks, best of ``--repeats``, in one process.

    OMP_NUM_THREADS=1 python scripts/benchmark_capture.py
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def padding_errors(cases) -> list[dict]:
    import torch
    import torch.nn.functional as F
    from timm.layers import Conv2dSame
    from timm.layers.padding import pad_same

    from hf_mixmatch.activations import accumulate_hessians
    from hf_mixmatch.layers import list_prunable

    rows = []
    for size, stride in cases:
        torch.manual_seed(0)
        model = torch.nn.Sequential(Conv2dSame(8, 8, 3, stride=stride)).eval()
        x = torch.randn(4, 8, size, size) + 1.0
        d = 8 * 9
        true = F.unfold(pad_same(x, (3, 3), (stride, stride), (1, 1)), 3, stride=stride)
        true = true.transpose(1, 2).reshape(-1, d).double()
        attrs = F.unfold(x, 3, stride=stride, padding=model[0].padding).transpose(1, 2).reshape(-1, d).double()
        ref = true.T @ true
        got = accumulate_hessians(model, list_prunable(model), x, batch_size=4)["0"][0]
        rows.append({"size": size, "stride": stride, "positions": true.shape[0] // 4,
                     "attribute_positions": attrs.shape[0] // 4,
                     "attribute_error": float((attrs.T @ attrs - ref).norm() / ref.norm()),
                     "library_error": float((got - ref).norm() / ref.norm())})
    return rows


def capture_cost(names, images: int, repeats: int) -> list[dict]:
    import timm
    import torch

    from hf_mixmatch import activations
    from hf_mixmatch.layers import list_prunable

    rows = []
    for name in names:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=10).eval()
        layers = list_prunable(model, num_labels=10)
        x = torch.randn(images, 3, 224, 224)
        times = {"op": [], "hooks": []}
        original = activations._OpInputs
        for _ in range(repeats):
            for mode in ("op", "hooks"):
                if mode == "hooks":
                    activations._OpInputs = lambda *a, **k: contextlib.nullcontext()
                try:
                    t0 = time.perf_counter()
                    activations.feature_sq_norms(model, layers, x, batch_size=images)
                    times[mode].append(time.perf_counter() - t0)
                finally:
                    activations._OpInputs = original
        rows.append({"model": name, "op_s": min(times["op"]), "hooks_s": min(times["hooks"])})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="7:2,14:1,28:2,56:2", help="feature-map size:stride pairs")
    p.add_argument("--models", default="vit_small_patch16_224,resnet50")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    cases = [tuple(int(v) for v in c.split(":")) for c in args.sizes.split(",")]
    print("Conv2dSame 3x3, 8 -> 8 channels, 4 random images: Hessian of the module's input and attributes vs of "
          "the padded patches it multiplies\n")
    print("| map | stride | positions (real) | positions (attributes) | error from attributes | error, library |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in padding_errors(cases):
        print(f"| {r['size']}×{r['size']} | {r['stride']} | {r['positions']} | {r['attribute_positions']} | "
              f"{r['attribute_error']:.1%} | {r['library_error']:.1e} |")
    if args.models:
        print(f"\nWanda's feature norms, {args.images} random 224 px images, best of {args.repeats}\n")
        print("| model | inputs at the op (s) | module hooks only (s) | ratio |")
        print("|---|---:|---:|---:|")
        for r in capture_cost(args.models.split(","), args.images, args.repeats):
            print(f"| {r['model']} | {r['op_s']:.2f} | {r['hooks_s']:.2f} | {r['op_s'] / r['hooks_s']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
