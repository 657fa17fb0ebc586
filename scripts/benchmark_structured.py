"""Structured, component-aware pruning on Fashion-MNIST: the paper's conv autoencoder (PSNR floor) and a
reduced-width timm resnet18 classifier (accuracy floor). Dense vs grid search vs gradient search vs plain
L1 channel pruning at equal parameter count: params, FLOPs, CPU latency (batch 1 / 32), metric, search time.

    OMP_NUM_THREADS=1 python scripts/benchmark_structured.py --out docs/BENCHMARKS_structured.md

Reads top to bottom: data, training, one function per case, the table, main.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from hf_mixmatch.structured import (
    SearchConfig,
    build_architecture,
    classification_task,
    count_params,
    find_groups,
    finetune,
    measure,
    prune_physical,
    reconstruction_task,
    timm_model,
)
from hf_mixmatch.structured.search import grid_search, gradient_search, l1_baseline

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def load_fmnist(split: str, n: int) -> TensorDataset:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FMNIST / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(FMNIST / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = torch.from_numpy(images[:n].astype(np.float32) / 255.0)
    return TensorDataset(x, torch.from_numpy(labels[:n].astype(np.int64)))


def train(model, task, steps: int, lr: float = 2e-3):
    return finetune(model, task, steps=steps, lr=lr)


def run_case(name, model, task, test_metric, example, cfg, ft_steps, components, log):
    """Dense, grid, gradient and L1 (equal params) → rows of the table. The searches select on
    ``task.metric`` (a validation split); the table reports ``test_metric`` (the test split)."""
    total = count_params(model)
    plan = find_groups(model, example, components=components)
    log(f"[{name}] {len(plan.groups)} groups, {len(plan.prunable)} prunable "
        f"({', '.join(f'{g.root}:{g.reason}' for g in plan.groups if not g.prunable)})")
    rows = [dict(method="dense", metric=test_metric(model), sparsity=0.0, seconds=0.0,
                 **measure(model, example.shape, threads=1))]
    for search in (grid_search, gradient_search, l1_baseline):
        sel = search(model, plan, task, cfg, total)
        pruned, _ = prune_physical(model, plan, sel.removed)
        one_shot = test_metric(pruned)
        finetune(pruned, task, steps=ft_steps, lr=1e-3)
        rows.append(dict(method=sel.method, metric_one_shot=one_shot, metric=test_metric(pruned),
                         sparsity=1 - count_params(pruned) / total, seconds=sel.seconds,
                         **measure(pruned, example.shape, threads=1)))
        log(f"[{name}] {sel.method}: share {rows[-1]['sparsity']:.3f} one-shot {one_shot:.4f} "
            f"fine-tuned {rows[-1]['metric']:.4f} ({sel.seconds:.1f}s)")
    return rows


def table(title, rows, metric_name, floor):
    dense = rows[0]
    lines = [f"### {title}", "",
             f"| method | params | removed | FLOPs (MAC) | b1 ms | b32 ms | b32 vs dense | {metric_name} one-shot "
             f"| {metric_name} fine-tuned | ≥ floor {floor:.3g} | search s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|"]
    for r in rows:
        one = r.get("metric_one_shot")
        lines.append(
            f"| {r['method']} | {r['params']:,} | {r['sparsity']:.1%} | {r['flops']:,} | {r['latency_ms']['b1']:.2f} "
            f"| {r['latency_ms']['b32']:.2f} | {r['latency_ms']['b32'] / dense['latency_ms']['b32']:.2f}× "
            f"| {'' if one is None else f'{one:.4f}'} | {r['metric']:.4f} | {'yes' if r['metric'] >= floor else 'no'} "
            f"| {r['seconds']:.1f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/BENCHMARKS_structured.md")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--search-steps", type=int, default=120)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    full, test_ds = load_fmnist("train", 8500), load_fmnist("test", 1000)
    train_ds = TensorDataset(*(t[:8000] for t in full.tensors))
    val_ds = TensorDataset(*(t[8000:] for t in full.tensors))
    calib = train_ds
    cfg = SearchConfig(sparsity=args.sparsity, tolerance=args.tolerance, steps=args.search_steps)
    example = torch.zeros(1, 1, 28, 28)

    # --- the paper's case: conv autoencoder, encoder / decoder components, PSNR
    ae = build_architecture("conv_autoencoder", {"widths": [32, 64], "latent": 16})
    ae_task = reconstruction_task(calib, TensorDataset(val_ds.tensors[0]), batch_size=64)
    ae_test = reconstruction_task(calib, TensorDataset(test_ds.tensors[0]), batch_size=64).metric
    train(ae, ae_task, args.train_steps)
    ae_floor = ae_test(ae) - 1.0
    ae_rows = run_case("autoencoder", ae, ae_task, ae_test, example, cfg, args.finetune_steps, None, log)

    # --- classifier: reduced-width timm resnet18, one component per stage, top-1 accuracy
    cnn = timm_model("resnet18", num_classes=10, in_chans=1, channels=(16, 32, 64, 128), stem_width=16)
    cnn_task = classification_task(calib, val_ds, batch_size=64)
    cnn_test = classification_task(calib, test_ds, batch_size=64).metric
    train(cnn, cnn_task, args.train_steps)
    cnn_floor = cnn_test(cnn) - 0.03
    comps = {"stem": ["conv1", "bn1"], "layer1": ["layer1"], "layer2": ["layer2"], "layer3": ["layer3"],
             "layer4": ["layer4"], "head": ["fc", "global_pool"]}
    cnn_rows = run_case("resnet18-w16", cnn, cnn_task, cnn_test, example, cfg, args.finetune_steps, comps, log)

    elapsed = time.perf_counter() - t0
    grad = next(r for r in cnn_rows if r["method"] == "gradient")
    l1 = next(r for r in cnn_rows if r["method"] == "l1")
    lat = grad["latency_ms"]["b32"] / cnn_rows[0]["latency_ms"]["b32"]
    best = max(cnn_rows[1:3], key=lambda r: r["metric"])
    cmd = "OMP_NUM_THREADS=1 " + " ".join(["python", "scripts/benchmark_structured.py", *(argv or sys.argv[1:])])
    md = [
        "## Structured, component-aware pruning (seed 002)", "",
        f"Command: `{cmd}` ({elapsed:.0f} s in all on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 CPU thread for latency; median of 20 runs after 3 warm-up runs).", "",
        f"Fashion-MNIST, {len(train_ds)} training images ({args.train_steps} Adam steps of training, batch 64), "
        f"{len(val_ds)} held-out training images for the searches' metric, {len(test_ds)} test images for the table. Target: {args.sparsity:.0%} ± {args.tolerance:.0%} of the "
        f"parameters removed. Every pruned model is then fine-tuned for {args.finetune_steps} steps (same for all "
        "methods); 'one-shot' is before that. L1 = Torch-Pruning group L1 magnitude with one uniform ratio over the "
        "same component-aware groups, fitted to the same parameter share. Grid = per-component ratios "
        f"s·w (w ∈ {list(cfg.grid_weights)}, s fitted to the target), lowest-L1 units first. Gradient = sigmoid "
        f"gates, {args.search_steps} steps, augmented Lagrangian on expected params, then thresholded to the target. "
        "Search time includes its metric evaluations. FLOPs count conv/linear multiply-accumulates per image.", "",
        *table("Conv autoencoder (encoder / decoder components; the latent is never pruned)", ae_rows, "PSNR dB",
               ae_floor), "",
        *table("resnet18 (timm, widths 16-32-64-128), one component per stage", cnn_rows, "top-1", cnn_floor), "",
        "Targets on the CNN at 50% of the parameters removed:", "",
        f"- CPU latency ≤ 0.6× dense at batch 32 (gradient search): {lat:.2f}× → "
        f"{'met' if lat <= 0.6 else 'NOT met'}.",
        f"- gradient search ≥ L1 at equal params (fine-tuned top-1): {grad['metric']:.4f} vs {l1['metric']:.4f} → "
        f"{'met' if grad['metric'] >= l1['metric'] else 'NOT met'} "
        f"(one-shot {grad['metric_one_shot']:.4f} vs {l1['metric_one_shot']:.4f}).",
        f"- better search on the CNN: {best['method']}.", "",
        "Floors: autoencoder dense test PSNR − 1 dB, CNN dense test top-1 − 3 points. Groups whose members fall in",
        "two components (the autoencoder latent; the CNN's stem→layer1 stream and every stage-to-stage residual",
        "stream with one component per stage) are kept dense, not split: DepGraph cannot split a coupled group",
        "without breaking shapes. Parameters are the target, so the searches prefer the parameter-heavy, FLOP-light",
        "late stages; that is why FLOPs and latency fall less than the parameter count.", "",
    ]
    text = "\n".join(md)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
