"""What BatchNorm re-estimation after pruning (``--bn-recalibrate``) is worth, per method and sparsity.

For a reference CNN (trained by ``scripts/train_reference.py``): every method at fixed global targets, measured
with the dense model's BatchNorm statistics and with statistics re-estimated on N calibration images (N from
``--calib-sizes``; 0 = not re-estimated), on the Fashion-MNIST test split (plus ``--extra-test`` held-out training
images). Methods: masking on LAMP's / SNIP's / RD/DP's allocation (``lamp``, ``snip``, ``rd``), and SparseGPT on
RD/DP's and LAMP's allocations (``rd+sgpt``, ``lamp+sgpt``). Calibration images are drawn with ``--seed`` from
training images the reference never saw (the same draw as ``benchmark_reconstruct.py``), the first N of them used
for each size. The last column is the library's rule (``BatchNormRecalibrator``: re-estimated statistics kept only
when they lower the cross-entropy on the first ``--guard-size`` labelled calibration images). Prints a markdown
table (accuracy in %, and the change re-estimation makes).

``structured``: whole channels removed by ``hf-mixmatch structured``'s search (``--structured-search``; target = the
share of parameters removed, scored on ``--select`` held-out training images) with the dense statistics, then the
same columns; the guarded column is the library's path: the search scoring each selection with re-estimated
statistics, then the structured rule (kept when the accuracy on the selection images rises)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from fashion_mnist import DEFAULT_ROOT  # noqa: E402
from recon_bench import Bench, splits  # noqa: E402

METHODS = ("lamp", "snip", "rd", "rd+sgpt", "lamp+sgpt", "structured")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "reference_models" / "resnet"))
    p.add_argument("--fmnist-root", default=DEFAULT_ROOT)
    p.add_argument("--targets", default="0,0.5,0.7,0.8,0.9,0.95,0.97")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--calib-sizes", default="0,64,256,1000", help="images the statistics are re-estimated on")
    p.add_argument("--guard-size", type=int, default=256, help="the last column: the library's rule (re-estimated "
                   "statistics kept only when they lower the cross-entropy on these N labelled calibration images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-samples", type=int, default=None, help="first N test images (default: all 10000)")
    p.add_argument("--extra-test", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rd-grid-step", type=float, default=0.02)
    p.add_argument("--rd-cache", default=None, help="where the RD curves are cached (default: runs/bench_bn)")
    p.add_argument("--select", type=int, default=1000, help="structured: held-out images its search is scored on")
    p.add_argument("--structured-search", choices=("grid", "gradient", "both"), default="grid")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from hf_mixmatch.bn_recalibrate import BatchNormRecalibrator, recalibrate_batchnorm
    from hf_mixmatch.allocators import allocate
    from hf_mixmatch.rd import default_grid
    from hf_mixmatch.rd_dp import rd_strategy
    from hf_mixmatch.signals import compute_scores

    args = parse_args(argv)
    sizes = [int(n) for n in args.calib_sizes.split(",")]
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        raise SystemExit(f"unknown --methods {sorted(unknown)}; choose from {list(METHODS)}")
    calib, select, test = splits(args.fmnist_root, args.seed, max(max(sizes), 128, args.guard_size),
                                 args.select if "structured" in methods else 0, args.test_samples, args.extra_test)
    guard_x, guard_y = (t[: args.guard_size] for t in calib.tensors)
    rd_calib = torch.utils.data.TensorDataset(*(t[:128] for t in calib.tensors))  # RD curves / scores / SparseGPT
    bench = Bench(Path(args.model), rd_calib, select, test,
                  SimpleNamespace(batch_size=args.batch_size, rd_grid_step=args.rd_grid_step))
    bench.scores = compute_scores(bench.model, bench.layers, rd_calib, batch_size=args.batch_size, progress=False,
                                  signals=("magnitude", "snip"))
    if "rd" in methods or "rd+sgpt" in methods:
        bench.add_rd_scores(Path(args.rd_cache or ROOT / "runs" / "bench_bn"), rd=True, own=False)
    grid = default_grid(args.rd_grid_step)
    t0 = time.perf_counter()
    print(f"model {args.model}: dense {100 * bench.evaluate(test):.2f}% on {len(test)} images; "
          f"re-estimated on {sizes} calibration images (seed {args.seed})\n")
    print("| method | target | " + " | ".join(f"N={n}" if n else "dense stats" for n in sizes)
          + f" | Δ (largest N) | guarded, N={args.guard_size} | kept |")
    print("|---|---:|" + "---:|" * (len(sizes) + 2) + "---|")
    for method in methods:
        for target in (float(t) for t in args.targets.split(",")):
            if method == "structured":
                if target > 0:
                    print(structured_row(bench, calib, select, test, target, sizes, args), flush=True)
                continue
            base = method.split("+")[0]
            if base == "rd":
                sparsities, rank_by = rd_strategy(bench.scores["rd"], bench.layers, target, grid=grid), "magnitude"
            else:
                alloc = allocate(base, weights=bench.weights, layers=bench.layers, target=target, scores=bench.scores)
                sparsities, rank_by = alloc.sparsities, alloc.rank_by
            accs = []
            for n in sizes:
                bench.prune(sparsities, rank_by=rank_by, reconstruct=method.endswith("+sgpt"))
                if n:
                    recalibrate_batchnorm(bench.model, calib.tensors[0][:n], batch_size=args.batch_size)
                accs.append(100 * bench.evaluate(test))
                bench.stash.restore()  # weights and BatchNorm statistics
            bench.prune(sparsities, rank_by=rank_by, reconstruct=method.endswith("+sgpt"))
            kept = BatchNormRecalibrator(bench.model, guard_x, guard_y, batch_size=args.batch_size)(bench.model)
            guarded = 100 * bench.evaluate(test)
            bench.stash.restore()
            print(f"| {method} | {target:.2f} | " + " | ".join(f"{a:.2f}" for a in accs)
                  + f" | {accs[-1] - accs[0]:+.2f} | {guarded:.2f} | {'re-estimated' if kept else 'dense'} |",
                  flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


def structured_row(bench, calib, select, test, target, sizes, args) -> str:
    """One table row for channels removed by the structured search at ``target`` (share of parameters)."""
    from hf_mixmatch.bn_recalibrate import batchnorm_modules, batchnorm_state, load_batchnorm_state, recalibrate_batchnorm
    from hf_mixmatch.errors import HfMixmatchError
    from hf_mixmatch.evaluate import evaluate
    from hf_mixmatch.structured import SearchConfig, classification_task, structured_prune

    guard = torch.utils.data.TensorDataset(*(t[: args.guard_size] for t in calib.tensors))
    task = classification_task(guard, select, batch_size=args.batch_size)
    cfg = SearchConfig(sparsity=target, search=args.structured_search, bn_recalibrate=False)
    try:
        res = structured_prune(bench.model, task, example=test.tensors[0][:1], config=cfg, with_baseline=False)
        lib = structured_prune(bench.model, task, example=test.tensors[0][:1], with_baseline=False,
                               config=SearchConfig(sparsity=target, search=args.structured_search))
    except HfMixmatchError as exc:
        return f"| structured | {target:.2f} | " + " | ".join("–" for _ in sizes) + f" | – | – | {exc} |"
    model = res.model
    modules = batchnorm_modules(model)
    stale = batchnorm_state(modules)
    accs = []
    for n in sizes:
        load_batchnorm_state(modules, stale)
        if n:
            recalibrate_batchnorm(model, calib.tensors[0][:n], batch_size=args.batch_size)
        accs.append(100 * evaluate(model, test, batch_size=500)["accuracy"])
    kept = lib.recipe["bn_recalibration"]["kept"]
    guarded = 100 * evaluate(lib.model, test, batch_size=500)["accuracy"]
    return (f"| structured ({res.recipe['achieved_sparsity']:.1%} / {lib.recipe['achieved_sparsity']:.1%} of params) | {target:.2f} | "
            + " | ".join(f"{a:.2f}" for a in accs)
            + f" | {accs[-1] - accs[0]:+.2f} | {guarded:.2f} | {'re-estimated' if kept else 'dense'} |")


if __name__ == "__main__":
    raise SystemExit(main())
