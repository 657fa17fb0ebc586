#!/usr/bin/env python
"""Memory of the reconstruction stage on real-size models: is it bounded by one layer group's Hessians, and what
does the dense target (``--reconstruct-target dense``) add?

For each timm model (random weights, 224 px) and each target, a fresh process builds the model and the calibration
batch, then runs :func:`hf_mixmatch.reconstruct.reconstruct` on every prunable layer at ``--sparsity``. A thread
samples the process's RssAnon every 10 ms; the table gives its peak growth over the figure before reconstruction,
next to the sizes it should be made of: the model's parameters (the dense target keeps a copy of the model), the
largest layer group's ``X^T X`` (float64; the dense target also accumulates ``X_dense^T X`` of the same size) and
the sum of every layer's Hessian (what the stage would hold if it kept them all).

    OMP_NUM_THREADS=2 python scripts/benchmark_recon_memory.py --models resnet50,vit_small_patch16_224 --calib 32

``--refits 0,20`` adds the kept-weight refit (``--reconstruct-refit``): its memory and its time.

``linear:D`` as a model is one ``Linear(D, 64)`` layer (and a 64 -> 3 head) on random D-dimensional inputs: its
Hessians are nearly all the memory, so the peak shows how many ``D x D`` float64 matrices are alive at once, the
figure the run's memory pre-flight (``reconstruct_stage.check_memory``) multiplies the largest layer's by:

    OMP_NUM_THREADS=1 python scripts/benchmark_recon_memory.py --models linear:6144 --targets pruned,dense --calib 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
from benchmark_memory import PeakSampler, rss_anon_kb  # noqa: E402

MB = 2 ** 20


def child(name: str, target: str, calib: int, sparsity: float, batch_size: int, refit: int) -> dict:
    import timm
    import torch

    from hf_mixmatch.activations import _geometry, forward_groups, groups_of, weight_matrix
    from hf_mixmatch.layers import list_prunable
    from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct

    torch.manual_seed(0)
    if name.startswith("linear:"):
        d = int(name.split(":")[1])
        model = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).eval()
        layers, inputs = list_prunable(model), torch.randn(calib, d)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=10).eval()
        layers, inputs = list_prunable(model, num_labels=10), torch.randn(calib, 3, 224, 224)
    groups, _ = forward_groups(model, layers, inputs[:1])

    def hessian_bytes(layer) -> int:
        module = model.get_submodule(layer.name)
        g = groups_of(module, layer)
        d = weight_matrix(module.weight, layer, g).shape[-1]
        return g * d * d * 8

    # layers of a group with the same geometry share one Hessian (as accumulate_hessians does)
    per_group = [sum({_geometry(model.get_submodule(layer.name), layer): hessian_bytes(layer) for layer in group}.values())
                 for group in groups]
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = {"dense": 4, "pruned": 3}.get(target, 0)  # reconstruct_stage.hessian_buffers
    estimate = buffers * max(hessian_bytes(layer) for layer in layers)
    before = rss_anon_kb(os.getpid())
    t0 = time.perf_counter()
    with PeakSampler(interval=0.01) as sampler, torch.no_grad():
        if target == "forward":  # the reference: one plain forward of one calibration batch
            model(inputs[:batch_size])
        else:
            reconstruct(model, layers, {layer.name: sparsity for layer in layers}, inputs,
                        settings=ReconstructSettings(target=target, batch_size=batch_size, refit=refit))
    return {"model": name, "target": target, "refit": refit, "params_mb": params / MB, "layers": len(layers),
            "max_group_hessian_mb": max(per_group) / MB, "all_hessians_mb": sum(per_group) / MB,
            "largest_hessian_mb": max(hessian_bytes(layer) for layer in layers) / MB, "preflight_mb": estimate / MB,
            "peak_growth_mb": (sampler.peak - before) / 1024, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50,vit_small_patch16_224")
    p.add_argument("--targets", default="forward,pruned,dense",
                   help="forward: one plain forward of one batch (the activations' share of the peak)")
    p.add_argument("--calib", default="32", help="calibration images (random, 224 px); a comma list compares sizes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--refits", default="0", help="conjugate-gradient steps of the kept-weight refit "
                   "(--reconstruct-refit); a comma list compares them")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "TARGET"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, int(args.calib), args.sparsity, args.batch_size, int(args.refits))))
        return 0
    rows = []
    for name in args.models.split(","):
        for calib in args.calib.split(","):
            for target, refit in ((t, r) for t in args.targets.split(",") for r in args.refits.split(",")):
                first = calib == args.calib.split(",")[0] and refit == args.refits.split(",")[0]
                if target == "forward" and not first:
                    continue
                out = subprocess.run([sys.executable, __file__, "--child", name, target, "--calib", calib,
                                      "--batch-size", str(args.batch_size), "--sparsity", str(args.sparsity),
                                      "--refits", refit], capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{name} / {target} failed:\n{out.stderr[-2000:]}")
                rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "calib": int(calib)})
                print(rows[-1], flush=True)
    print(f"\nRandom calibration inputs (224 px images; linear:D: D-dim vectors), batch {args.batch_size}, every prunable layer at {args.sparsity:.0%}; "
          "peak RssAnon growth over the process before the step (MB)\n")
    print("| model | layers | parameters (MB) | largest group's X^T X (MB) | all Hessians (MB) | step | calibration "
          "images | peak growth (MB) | = largest layer's X^T X x | pre-flight estimate (MB) | time (s) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        step = "one forward" if r["target"] == "forward" else f"reconstruct, target {r['target']}" + (
            f", refit {r['refit']}" if r["refit"] else "")
        print(f"| {r['model']} | {r['layers']} | {r['params_mb']:.0f} | {r['max_group_hessian_mb']:.0f} | "
              f"{r['all_hessians_mb']:.0f} | {step} | {'–' if r['target'] == 'forward' else r['calib']} | "
              f"{r['peak_growth_mb']:.0f} | {r['peak_growth_mb'] / r['largest_hessian_mb']:.2f} | "
              f"{r['preflight_mb']:.0f} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
