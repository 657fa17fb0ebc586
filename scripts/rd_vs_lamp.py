#!/usr/bin/env python
"""RD/DP vs LAMP (and global magnitude) one-shot at fixed global targets, with a chosen RD curve setting.

A focused companion of ``scripts/benchmark_quality.py`` (which runs RD at one cheap setting): measure how
the RD/DP allocator's accuracy depends on its curve grid, calibration images and reduction, against the
data-free LAMP on the same fixed evaluation subset (the first 1000 test images chosen with seed 0, as in the
quality benchmark). Seeds change the RD calibration images.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python scripts/rd_vs_lamp.py --model reference_models/swin_full \\
        --targets 0.9 --grid-step 0.05 --calib 64 --reduction mean
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="reference model folder (scripts/train_reference.py)")
    ap.add_argument("--dataset", default=str(ROOT / "data" / "fashion_mnist"))
    ap.add_argument("--targets", default="0.5,0.7,0.9")
    ap.add_argument("--grid-step", type=float, default=0.05)
    ap.add_argument("--calib", type=int, default=64, help="calibration images for the RD curves")
    ap.add_argument("--reduction", choices=("mean", "worst"), default="mean")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from quality_bench import Bench

    from hf_mixmatch.allocators import ALLOCATORS
    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model
    from hf_mixmatch.rd import default_grid

    torch.set_num_threads(args.threads)
    targets = [float(t) for t in args.targets.split(",")]
    loaded = load_model(args.model)
    ev = load_data(args.dataset, loaded.preprocess, calib_samples=8, eval_samples=args.eval_samples, seed=0,
                   num_labels=loaded.num_labels).eval
    opts = types.SimpleNamespace(batch_size=128, rd_calib=args.calib, rd_grid_step=args.grid_step)
    print(f"model {args.model}  RD grid {args.grid_step} on {args.calib} images, {args.reduction} MSE of the logits; "
          f"top-1 on {args.eval_samples} test images")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            data = load_data(args.dataset, loaded.preprocess, calib_samples=max(args.calib, 8), eval_samples=8,
                             seed=seed, num_labels=loaded.num_labels)
            data.eval = ev
            bench = Bench(opts, Path(args.model), data, seed, Path(tmp))
            bench.scores = {"magnitude": {la.name: bench.weights[la.name].abs() for la in bench.layers}}
            bench.rd = ALLOCATORS["rd"].prepare(bench.model, data.calib.tensors[0][: args.calib],
                                                grid=default_grid(args.grid_step), reduction=args.reduction,
                                                batch_size=128, layers=bench.layers)
            row = [f"seed {seed}"]
            for t in targets:
                for method in ("rd", "lamp", "global_magnitude"):
                    alloc = bench.allocate(method, t)
                    acc = bench.measure(alloc.sparsities, alloc.rank_by)["accuracy"]
                    row.append(f"{method}@{t:g}={acc:.3f}")
            print("  ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
