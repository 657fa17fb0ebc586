"""The reconstruction target and the kept-weight refit, measured: each allocation at each sparsity reconstructed
towards SparseGPT's own target (``pruned``: W·X on the pruned model's inputs) and towards the dense model's outputs
(``dense``, the library's default), with each ``--refits`` count of conjugate-gradient steps refitting the kept
weights (``--reconstruct-refit``; 0: SparseGPT's weights), everything else equal (calibration images, allocation,
BatchNorm re-estimation).

    OMP_NUM_THREADS=1 python scripts/benchmark_target.py --model reference_models/resnet-narrow --seed 0 \\
        --targets 0.8,0.875,0.9,0.935 --extra-test 20000 --bn-recalibrate \\
        --curves-dir runs/bench_recon_narrow/resnet-narrow/seed0

``--curves-dir``: where the RD curves are cached (a `benchmark_reconstruct.py` seed folder reuses its own).
Allocations: ``rd`` (RD/DP on magnitude curves), ``rdsgpt`` (RD/DP on SparseGPT-distortion curves, the curve
strategies' allocation), ``lamp``, ``erk``. Prints one markdown row per sparsity: test accuracy per allocation,
target and refit, and per allocation the gain of its last setting over its first.

    OMP_NUM_THREADS=1 python scripts/benchmark_target.py --model reference_models/resnet-narrow --seed 0 \
        --recon-targets dense --refits 0,20 --targets 0.9,0.95 --extra-test 20000 --bn-recalibrate \
        --curves-dir runs/bench_recon_narrow/resnet-narrow/seed0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import DEFAULT_ROOT  # noqa: E402
from recon_bench import Bench, splits  # noqa: E402



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a reference model folder (scripts/train_reference.py)")
    p.add_argument("--seed", type=int, default=0, help="draws the calibration images (as benchmark_reconstruct.py)")
    p.add_argument("--targets", default="0.8,0.9", help="overall sparsities")
    p.add_argument("--methods", default="rd,rdsgpt,lamp", help="allocations: rd, rdsgpt, lamp, erk")
    p.add_argument("--recon-targets", default="pruned,dense", help="reconstruction targets: pruned, dense")
    p.add_argument("--refits", default="0", help="conjugate-gradient steps of the kept-weight refit, comma list")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--select-samples", type=int, default=1000, help="kept out of calibration (same draw as the "
                   "benchmark, so its cached curves apply)")
    p.add_argument("--test-samples", type=int, default=None)
    p.add_argument("--extra-test", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rd-grid-step", type=float, default=0.02)
    p.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--curves-dir", default=None, help="RD curve cache (default: a temporary folder)")
    p.add_argument("--fmnist-root", default=DEFAULT_ROOT)
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    import tempfile

    args = parse_args(argv)
    calib, select, test = splits(args.fmnist_root, args.seed, args.calib_samples, args.select_samples,
                                 args.test_samples, args.extra_test)
    bench = Bench(Path(args.model), calib, select, test, args)
    bench.scores = {}
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        bench.add_rd_scores(Path(args.curves_dir or tmp), rd="rd" in methods, own="rdsgpt" in methods)
    print(f"dense {100 * bench.evaluate(test):.2f}% on {len(test)} test images; seed {args.seed}, "
          f"{len(calib)} calibration images, BatchNorm re-estimation {'on' if args.bn_recalibrate else 'off'}")
    settings = [(t, int(r)) for t in args.recon_targets.split(",") for r in args.refits.split(",")]
    print("| sparsity | " + " | ".join(f"{m} {t}" + (f" refit {r}" if r else "") for m in methods for t, r in settings)
          + " | " + " | ".join(f"{m} gain" for m in methods) + " |")
    print("|---" * (1 + (len(settings) + 1) * len(methods)) + "|")
    rows = []
    for sparsity in (float(t) for t in args.targets.split(",")):
        row = {"sparsity": sparsity}
        for method in methods:
            for target, refit in settings:
                # Bench reconstructs every allocation with these
                args.baseline_target, args.baseline_refit = target, refit
                t0 = time.perf_counter()
                row[(method, target, refit)] = bench.baseline(method, sparsity, reconstruct=True)["accuracy"]
                row[(method, target, refit, "s")] = time.perf_counter() - t0
        rows.append(row)
        cells = [f"{100 * row[(m, *c)]:.2f}" for m in methods for c in settings]
        gains = [f"{100 * (row[(m, *settings[-1])] - row[(m, *settings[0])]):+.2f}" for m in methods]
        print(f"| {sparsity:g} | " + " | ".join(cells + gains) + " |", flush=True)
    return rows


if __name__ == "__main__":
    main()
