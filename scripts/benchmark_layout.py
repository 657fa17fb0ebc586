"""Input layout on the CPU: how much faster is a plain evaluation loop fed NHWC (channels-last) batches than
NCHW ones, per architecture? This is why the run *probes* the layout instead of assuming one.

For each model: the same decoded batches, a ``torch.inference_mode`` loop, timed in CPU seconds of this process
(``time.process_time``) after one warm-up batch, alternating the layouts ``--repeats`` times and keeping each
layout's best. "inputs" converts only the batches (what the run does); ``--weights`` also times the model's own
weights converted to channels-last (``model.to(memory_format=torch.channels_last)``), which the run does not do.

    OMP_NUM_THREADS=1 python scripts/benchmark_layout.py                 # timm models at 224 px, random weights
    OMP_NUM_THREADS=1 python scripts/benchmark_layout.py --models default,reference_models/resnet --size 0
    OMP_NUM_THREADS=1 python scripts/benchmark_layout.py --models resnet18,vgg11 --images 64 --weights --json

``--models``: timm architecture names (built from their configs, random weights, 10 classes) or model folders /
``default`` (loaded as the run loads them; their own input size). ``--size``: input side for timm names
(0: each model's own default).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

TIMM_DEFAULT = "resnet18,resnet50,densenet121,efficientnet_b0,mobilenetv3_small_100,vgg11"


def _model_and_input(name: str, size: int) -> tuple[torch.nn.Module, tuple[int, int, int], str]:
    """(model in eval mode, input shape C x H x W, how it was built)."""
    if name == "default" or Path(name).is_dir():
        from hf_mixmatch.models import load_model

        loaded = load_model(name)
        return loaded.model.eval(), _input_shape(loaded), "model folder, its own preprocessing"
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    c, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return model, (c, size or h, size or w), "timm, random weights"


def _input_shape(loaded) -> tuple[int, int, int]:
    """Shape of one preprocessed image, from the model's own preprocessing on a blank photo."""
    from PIL import Image

    x = loaded.preprocess([Image.new("RGB", (320, 240))])
    return tuple(x.shape[1:])


def time_loop(model, batches, *, nhwc: bool) -> float:
    """CPU seconds for one inference pass over ``batches`` (converted to NHWC inside the timing, as the run does)."""
    from hf_mixmatch.models import logits  # the run's own forward (transformers outputs, timm tensors)

    t0 = time.process_time()
    with torch.inference_mode():
        for x in batches:
            logits(model, x.contiguous(memory_format=torch.channels_last) if nhwc else x)
    return time.process_time() - t0


def measure(name: str, *, size: int, images: int, batch: int, repeats: int, weights: bool) -> dict:
    model, shape, how = _model_and_input(name, size)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(min(batch, images - i), *shape, generator=g) for i in range(0, images, batch)]
    layouts = {"nchw": (model, False), "nhwc_inputs": (model, True)}
    if weights:
        import copy

        layouts["nhwc_weights"] = (copy.deepcopy(model).to(memory_format=torch.channels_last), True)
    best = {k: float("inf") for k in layouts}
    for m, nhwc in layouts.values():
        time_loop(m, batches[:1], nhwc=nhwc)  # warm-up: oneDNN primitive creation
    for _ in range(repeats):
        for k, (m, nhwc) in layouts.items():
            best[k] = min(best[k], time_loop(m, batches, nhwc=nhwc))
    out = {"model": name, "built": how, "input": list(shape), "images": images, "batch": batch,
           "threads": torch.get_num_threads(),
           "convs": sum(isinstance(mod, torch.nn.Conv2d) for mod in model.modules()),
           **{f"{k}_img_per_s": images / v for k, v in best.items()},
           "speedup_nhwc_inputs": best["nchw"] / best["nhwc_inputs"]}
    if weights:
        out["speedup_nhwc_weights"] = best["nchw"] / best["nhwc_weights"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=TIMM_DEFAULT, help="comma-separated timm names, model folders or 'default'")
    ap.add_argument("--size", type=int, default=224, help="input side for timm models (0: the model's default)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", action="store_true", help="also time channels-last weights")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")
    rows = [measure(m, size=args.size, images=args.images, batch=args.batch, repeats=args.repeats,
                    weights=args.weights) for m in args.models.split(",") if m]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        extra = f", NHWC weights {r['speedup_nhwc_weights']:.2f}x" if "speedup_nhwc_weights" in r else ""
        print(f"{r['model']} ({r['built']}, input {'x'.join(map(str, r['input']))}, {r['convs']} Conv2d, "
              f"{r['images']} images at batch {r['batch']}, {r['threads']} thread(s)): NCHW "
              f"{r['nchw_img_per_s']:.1f} img/s, NHWC inputs {r['nhwc_inputs_img_per_s']:.1f} img/s = "
              f"{r['speedup_nhwc_inputs']:.2f}x{extra}")


if __name__ == "__main__":
    main()
