"""Structured, component-aware pruning on Fashion-MNIST: the reference CNN (a CIFAR-style timm resnet18, widths
32-64-128-256 by default: 3×3 stride-1 stem, no max-pool), the paper's conv autoencoder (PSNR floor) and, on
request, the earlier references (the same CNN at widths 16-32-64-128; resnet18 with its 7×7 stride-2 stem). Dense vs grid search vs gradient
search (parameter-only, λ=0, and FLOP-aware, λ>0) vs plain L1 channel pruning at equal parameter count: params,
FLOPs, CPU latency (batch 1 / 32), metric, search time.

    OMP_NUM_THREADS=1 python scripts/benchmark_structured.py --with-narrow-cnn --out docs/BENCHMARKS_structured.md

Reads top to bottom: data, training, one function per case, the table, main.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hf_mixmatch.structured import (
    SearchConfig,
    build_architecture,
    classification_task,
    count_params,
    find_groups,
    finetune,
    latency_ms,
    measure_many,
    prune_physical,
    reconstruction_task,
    timm_model,
)
from hf_mixmatch.structured.gradient import gradient_search
from hf_mixmatch.structured.search import grid_search, l1_baseline

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


def run_case(name, model, task, test_metric, example, ft_steps, variants, log, *, runs, extra=None):
    """Dense plus one row per variant → rows of the table. ``variants``: ``(label, components, method, cfg)``
    with method ``grid`` / ``gradient`` / ``l1``; every pruned model is fine-tuned ``ft_steps`` steps. The
    searches select on ``task.metric`` (a validation split); the table reports ``test_metric`` (the test split).

    Latency: every model of the case is timed in turn (interleaved, ``runs`` rounds after 10 warm-up passes,
    median), and, for comparison with the first version of this benchmark, also one after the other
    (3 warm-up, 20 runs each). ``extra``: more modules timed alongside (e.g. the un-prunable stem)."""
    total = count_params(model)
    rows = [dict(method="dense", metric=test_metric(model), sparsity=0.0, seconds=0.0, model=model)]
    plans = {}
    for label, comps, method, cfg in variants:
        key = repr(comps)
        if key not in plans:
            plans[key] = find_groups(model, example, components=comps)
            plan = plans[key]
            log(f"[{name}] components {list(plan.components)}: {len(plan.groups)} groups, {len(plan.prunable)} "
                f"prunable ({', '.join(f'{g.root}:{g.reason}' for g in plan.groups if not g.prunable)})")
        plan = plans[key]
        search = {"grid": grid_search, "gradient": gradient_search, "l1": l1_baseline}[method]
        sel = search(model, plan, task, cfg, total)
        pruned, _ = prune_physical(model, plan, sel.removed)
        one_shot = test_metric(pruned)
        finetune(pruned, task, steps=ft_steps, lr=1e-3)
        rows.append(dict(method=label, metric_one_shot=one_shot, metric=test_metric(pruned),
                         sparsity=1 - count_params(pruned) / total, seconds=sel.seconds, model=pruned,
                         detail={k: v for k, v in sel.detail.items() if k != "tried"}))
        d = sel.detail
        if "start" in d:
            log(f"[{name}] {label}: init {d.get('init')}, kept {d['start']} (held-out metric gates "
                f"{d.get('metric_gates', float('nan')):.4f}, l1 {d.get('metric_l1', float('nan')):.4f}"
                + (f"; l1 not a candidate: {d['l1_skipped']}" if "l1_skipped" in d else "") + ")")
        log(f"[{name}] {label}: share {rows[-1]['sparsity']:.3f} one-shot {one_shot:.4f} "
            f"fine-tuned {rows[-1]['metric']:.4f} ({sel.seconds:.1f}s) kept "
            + ", ".join(f"{g.root}:{g.size - len(sel.removed.get(g.index, []))}/{g.size}" for g in plan.prunable))
    models = {r["method"]: r["model"] for r in rows}
    stats = measure_many({**models, **(extra or {})}, tuple(example.shape), runs=runs, threads=1)
    cl = measure_many({**models, **(extra or {})}, tuple(example.shape), runs=runs, threads=1, channels_last=True)
    for r in rows:
        r.update(stats[r["method"]])
        r["cl"] = cl[r["method"]]["latency_ms"]
        r["seq_b32"] = latency_ms(r["model"], tuple(example.shape), batch=32, runs=20, warmup=3, threads=1)
    extras = {k: stats[k]["latency_ms"] for k in (extra or {})}
    extras.update({f"{k}, channels-last": cl[k]["latency_ms"] for k in (extra or {})})
    log(f"[{name}] latency (ms) " + ", ".join(f"{r['method']}: {r['latency_ms']['b32']:.2f}" for r in rows)
        + "".join(f", {k}: {v['b32']:.2f}" for k, v in extras.items()))
    return rows, extras


def table(title, rows, metric_name, floor):
    dense = rows[0]
    lines = [f"### {title}", "",
             f"| method | params | removed | FLOPs (MAC) | FLOPs vs dense | b1 ms | b32 ms | b32 vs dense "
             f"| {metric_name} one-shot "
             f"| {metric_name} fine-tuned | ≥ floor {floor:.3g} | search s | b32 ms one-after-another "
             "| b1 ms NHWC | b32 ms NHWC | b32 vs dense NHWC |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|"]
    for r in rows:
        one = r.get("metric_one_shot")
        lines.append(
            f"| {r['method']} | {r['params']:,} | {r['sparsity']:.1%} | {r['flops']:,} "
            f"| {r['flops'] / dense['flops']:.2f}× | {r['latency_ms']['b1']:.2f} "
            f"| {r['latency_ms']['b32']:.2f} | {r['latency_ms']['b32'] / dense['latency_ms']['b32']:.2f}× "
            f"| {'' if one is None else f'{one:.4f}'} | {r['metric']:.4f} | {'yes' if r['metric'] >= floor else 'no'} "
            f"| {r['seconds']:.1f} | {r['seq_b32']:.2f} | {r['cl']['b1']:.2f} | {r['cl']['b32']:.2f} "
            f"| {r['cl']['b32'] / dense['cl']['b32']:.2f}× |")
    return lines


def load_average() -> str:
    try:
        import os

        return " / ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"
    except (OSError, AttributeError):
        return "unknown"


STAGES = {"stem": ["conv1", "bn1"], "layer1": ["layer1"], "layer2": ["layer2"], "layer3": ["layer3"],
          "layer4": ["layer4"], "head": ["fc", "global_pool"]}
BODY = {"body": ["conv1", "bn1", "layer*"], "head": ["fc", "global_pool"]}


def _gradient(lam, round_to, comps_label, comps, cfg):
    tag = f"gradient λ={lam:g}" + (f" ×{round_to}" if round_to > 1 else "")
    return (f"{tag}, {comps_label}", comps, "gradient", replace(cfg, flops_weight=lam, round_to=round_to))


def cnn_variants(cfg, stage, body, grid=False):
    """(label, components, method, config) rows of a CNN case: one component per stage, then stem + stages as
    one 'body' component (every residual stream but the one into the classifier becomes prunable). ``stage`` /
    ``body``: (λ, round_to) of the gradient rows; round_to > 1 keeps every pruned width a multiple of it."""
    out = [("grid, per stage", STAGES, "grid", cfg)] if grid else []
    out += [_gradient(lam, r, "per stage", STAGES, cfg) for lam, r in stage]
    out += [("l1, per stage", STAGES, "l1", cfg)]
    out += [_gradient(lam, r, "body", BODY, cfg) for lam, r in body]
    out += [("l1, body", BODY, "l1", cfg)]
    return out


def row(rows, method):
    return next(r for r in rows if r["method"] == method)


def _safeguard_note(r):
    d = r.get("detail") or {}
    if "start" not in d:
        return ""
    l1 = (f"L1 {d['metric_l1']:.4f}" if "metric_l1" in d else f"L1 not a candidate: {d.get('l1_skipped')}")
    return (f"; search returned the {'L1' if d['start'] == 'l1' else 'gates’'} selection (held-out metric: "
            f"gates {d['metric_gates']:.4f}, {l1})")


def targets(rows, tag, floor):
    """The issue's two CNN targets, one line per gradient row, against L1 on the same components."""
    dense = rows[0]
    ratio = lambda r: r["latency_ms"]["b32"] / dense["latency_ms"]["b32"]  # noqa: E731
    cl_ratio = lambda r: r["cl"]["b32"] / dense["cl"]["b32"]  # noqa: E731
    out = []
    for r in rows:
        if not r["method"].startswith("gradient"):
            continue
        comps = r["method"].split(", ", 1)[1]
        l1 = row(rows, f"l1, {comps}")
        lat = ratio(r)
        out.append(
            f"- {tag}, {r['method']} ({r['sparsity']:.1%} removed, FLOPs {r['flops'] / dense['flops']:.2f}×): "
            f"b32 latency {lat:.2f}× dense → ≤ 0.6× {'**met**' if lat <= 0.6 else 'NOT met'} (NHWC {cl_ratio(r):.2f}×); "
            f"top-1 fine-tuned {r['metric']:.4f} vs L1 {l1['metric']:.4f} "
            f"({'≥ L1' if r['metric'] >= l1['metric'] else '< L1'}; one-shot {r['metric_one_shot']:.4f} vs "
            f"{l1['metric_one_shot']:.4f}), floor {floor:.4f} {'met' if r['metric'] >= floor else 'NOT met'}; "
            f"L1 itself {ratio(l1):.2f}× latency, FLOPs {l1['flops'] / dense['flops']:.2f}×{_safeguard_note(r)}.")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/BENCHMARKS_structured.md")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--search-steps", type=int, default=120)
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--test-images", type=int, default=5000)
    ap.add_argument("--cnn-channels", default="32,64,128,256", help="stage widths of the reference CNN")
    ap.add_argument("--lambda", dest="lam", type=float, default=10.0,
                    help="the FLOP weight λ of the FLOP-aware rows (besides λ=0 and the rounded λ=--lambda-rounded rows)")
    ap.add_argument("--lambda-rounded", type=float, default=30.0,
                    help="λ of the reference CNN's gradient rows whose pruned widths stay multiples of --round-to")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--with-narrow-cnn", action="store_true",
                    help="also the reference CNN at widths 16-32-64-128 (the previous reference)")
    ap.add_argument("--with-old-cnn", action="store_true", help="also the 7×7-stem resnet18 case")
    ap.add_argument("--init", choices=["l1", "uniform"], default="l1",
                    help="gradient search: start from the L1-uniform selection (l1) or from equal gates (uniform)")
    ap.add_argument("--no-safeguard", action="store_true",
                    help="gradient search: return the gates' selection even where L1 is better on the held-out metric")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    channels = [int(v) for v in args.cnn_channels.split(",")]
    full, test_ds = load_fmnist("train", 8500), load_fmnist("test", args.test_images)
    train_ds = TensorDataset(*(t[:8000] for t in full.tensors))
    val_ds = TensorDataset(*(t[8000:] for t in full.tensors))
    calib = train_ds
    cfg = SearchConfig(sparsity=args.sparsity, tolerance=args.tolerance, steps=args.search_steps, init=args.init,
                       safeguard=not args.no_safeguard)
    example = torch.zeros(1, 1, 28, 28)

    # --- the paper's case: conv autoencoder, encoder / decoder components, PSNR
    ae = build_architecture("conv_autoencoder", {"widths": [32, 64], "latent": 16})
    ae_task = reconstruction_task(calib, TensorDataset(val_ds.tensors[0]), batch_size=64)
    ae_test = reconstruction_task(calib, TensorDataset(test_ds.tensors[0]), batch_size=64).metric
    train(ae, ae_task, args.train_steps)
    ae_floor = ae_test(ae) - 1.0
    ae_variants = [("grid", None, "grid", cfg), ("gradient λ=0", None, "gradient", cfg),
                   (f"gradient λ={args.lam:g}", None, "gradient", replace(cfg, flops_weight=args.lam)),
                   ("l1", None, "l1", cfg)]
    ae_rows, _ = run_case("autoencoder", ae, ae_task, ae_test, example, args.finetune_steps, ae_variants, log,
                          runs=args.latency_runs)

    # --- the reference CNN: CIFAR-style reduced-width resnet18 (3×3 stride-1 stem, no max-pool), top-1
    cnn_task = classification_task(calib, val_ds, batch_size=64)
    cnn_test = classification_task(calib, test_ds, batch_size=64).metric
    cnn = build_architecture("cifar_resnet", {"channels": channels})
    train(cnn, cnn_task, args.train_steps)
    cnn_floor = cnn_test(cnn) - 0.03
    stem = torch.nn.Sequential(cnn.conv1, cnn.bn1, cnn.act1)
    rounded = (args.lambda_rounded, args.round_to)
    cnn_rows, cnn_extra = run_case(f"cifar-resnet18-w{channels[0]}", cnn, cnn_task, cnn_test, example,
                                   args.finetune_steps,
                                   cnn_variants(cfg, [(0.0, 1), (args.lam, 1), rounded], [(args.lam, 1), rounded]),
                                   log, runs=args.latency_runs, extra={"stem": stem})

    # --- the previous reference: the same CNN at widths 16-32-64-128 (narrow convs, overhead-bound on CPU)
    narrow_rows = []
    if args.with_narrow_cnn:
        narrow = build_architecture("cifar_resnet", {"channels": [16, 32, 64, 128]})
        train(narrow, cnn_task, args.train_steps)
        narrow_floor = cnn_test(narrow) - 0.03
        narrow_rows, _ = run_case("cifar-resnet18-w16", narrow, cnn_task, cnn_test, example, args.finetune_steps,
                                  cnn_variants(cfg, [(args.lam, 1)], [(args.lam, 1), rounded]), log,
                                  runs=args.latency_runs)

    # --- the earlier reference: timm resnet18 with its 7×7 stride-2 stem and max-pool (for comparison)
    old_rows, old_extra = [], {}
    if args.with_old_cnn:
        old = timm_model("resnet18", num_classes=10, in_chans=1, channels=(16, 32, 64, 128), stem_width=16)
        train(old, cnn_task, args.train_steps)
        old_floor = cnn_test(old) - 0.03
        old_stem = torch.nn.Sequential(old.conv1, old.bn1, old.act1, old.maxpool)
        old_rows, old_extra = run_case("resnet18-w16", old, cnn_task, cnn_test, example, args.finetune_steps,
                                       cnn_variants(cfg, [(0.0, 1)], [(args.lam, 1)]), log,
                                       runs=args.latency_runs, extra={"stem": old_stem})

    elapsed = time.perf_counter() - t0
    cmd = "OMP_NUM_THREADS=1 " + " ".join(["python", "scripts/benchmark_structured.py", *(argv or sys.argv[1:])])
    dense = cnn_rows[0]
    md = [
        "## Structured, component-aware pruning (seed 002)", "",
        f"Command: `{cmd}` ({elapsed:.0f} s in all on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, `OMP_NUM_THREADS=1` and `torch.set_num_threads(1)` for every latency; "
        f"machine load average at the end {load_average()}).", "",
        "Latency: all models of a case are timed in turn (dense, grid, gradient, … , dense, grid, …), "
        f"{args.latency_runs} rounds after 10 warm-up passes each, median reported (`measure_many`), so a change "
        "of load on the shared machine hits every model alike; every ratio in a table comes from one such run. "
        "The column 'one-after-another' is the earlier method (one model after the other, 3 warm-up + 20 runs) "
        "for comparison. NHWC = models and inputs in channels-last layout, timed in a second interleaved run.", "",
        f"Fashion-MNIST, {len(train_ds)} training images ({args.train_steps} Adam steps of training, batch 64), "
        f"{len(val_ds)} held-out training images for the searches' metric, {len(test_ds)} test images for the "
        f"tables. Target: {args.sparsity:.0%} ± {args.tolerance:.0%} of the parameters removed. Every pruned model "
        f"is then fine-tuned for {args.finetune_steps} steps (same for all methods); 'one-shot' is before that. "
        "l1 = Torch-Pruning group L1 magnitude with one uniform ratio over the same component-aware groups, "
        "fitted to the same parameter share. grid = per-component ratios "
        f"s·w (w ∈ {list(cfg.grid_weights)}, s fitted to the target), lowest-L1 units first. gradient λ = sigmoid "
        f"gates, {args.search_steps} steps, "
        + ("logits started at the L1-uniform selection (L1 rank within each group, the L1 cut at 0; "
           "`SearchConfig.init='l1'`), " if args.init == "l1" else "all logits started equal, ")
        + "task loss divided by the dense model's, augmented Lagrangian on "
        "expected params, plus λ·E[MACs]/MACs_dense "
        "(`SearchConfig.flops_weight`, `--flops-weight`; λ=0 is the parameter-only search), then thresholded to "
        f"the parameter target; '×{args.round_to}' = units removed in blocks of {args.round_to}, so every pruned "
        f"width stays a multiple of {args.round_to} (`SearchConfig.round_to`, `--round-to`). "
        + ("Safeguard (`SearchConfig.safeguard`): the search then compares its selection with the L1 selection at "
           "the same parameter target (L1-uniform; with ×N the L1 order thresholded in the same blocks) on the "
           "held-out selection images and returns the better; with λ > 0 L1 is a candidate only if it has no more "
           "MACs than the gates' selection; which one was returned is given per row below the table. "
           if not args.no_safeguard else "No safeguard: the gates' selection is returned as is. ")
        + "'per stage' = one component per stage (stem, layer1 … layer4, head): every "
        "stage-to-stage residual stream spans two components and stays dense; 'body' = stem and all stages one "
        "component, head (fc) another: every residual stream but the one into the classifier is prunable. "
        "Search time includes its metric evaluations. FLOPs count conv/linear multiply-accumulates per image.", "",
        *table(f"Reference CNN: CIFAR-style resnet18 (timm, widths {'-'.join(map(str, channels))}; 3×3 stride-1 "
               f"stem with {channels[0]} channels, no max-pool; stages at 28, 14, 7, 4 px; "
               f"{args.train_steps} training steps)", cnn_rows, "top-1", cnn_floor), "",
        f"Its stem (conv1 3×3, BN, ReLU; {channels[0]} channels at 28×28) takes {cnn_extra['stem']['b32']:.2f} ms at batch 32 "
        f"= {cnn_extra['stem']['b32'] / dense['latency_ms']['b32']:.2f}× the dense model.", "",
        "Targets on the reference CNN at 50% of the parameters removed (floor: dense test top-1 − 3 points):", "",
        *targets(cnn_rows, "CIFAR-style", cnn_floor), "",
        *table("Conv autoencoder (encoder / decoder components; the latent is never pruned)", ae_rows, "PSNR dB",
               ae_floor), "",
    ]
    if narrow_rows:
        md += [
            *table("Previous reference: the same CIFAR-style resnet18 at widths 16-32-64-128 (16-channel stem)",
                   narrow_rows, "top-1", narrow_floor), "",
            *targets(narrow_rows, "widths 16-128", narrow_floor), "",
        ]
    if old_rows:
        odense = old_rows[0]
        md += [
            *table("Earlier reference: resnet18 (timm, widths 16-32-64-128) with its 7×7 stride-2 stem (64 channels) "
                   "and max-pool; stages at 7, 4, 2, 1 px", old_rows, "top-1", old_floor), "",
            f"Its stem (conv1 7×7 with 64 channels, BN, ReLU, max-pool; kept dense with per-stage components) takes "
            f"{old_extra['stem']['b32']:.2f} ms at batch 32 = {old_extra['stem']['b32'] / odense['latency_ms']['b32']:.2f}× "
            "the dense model.", "",
            *targets(old_rows, "7×7 stem", old_floor), "",
        ]
    md += [
        "Floors: autoencoder dense test PSNR − 1 dB, CNN dense test top-1 − 3 points. Groups whose members fall in "
        "two components are kept dense, not split: DepGraph cannot split a coupled group without breaking shapes.",
        "",
    ]
    text = "\n".join(md)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
