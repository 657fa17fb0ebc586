"""Time of the signal_* strategies' allocation (one global threshold, every layer clipped to its range) on a
timm ResNet-50 (23.5 M weights; ranges with minima in [0, 0.4] and maxima in [0.6, 1], magnitude-like scores): the former implementation (one sort of
all scores per call, kept as the tests' reference) against bisection over the float64 values with one sort per
signal shared by its strategies. Both must give the same counts.

Then the observed ranges' global thresholds (3 criteria x 3 targets): one float64 copy of all scores per target
(the former ``global_threshold`` per call) against one copy per criterion, in the scores' own float width
(``global_thresholds``). Same sparsities.

    python scripts/benchmark_allocation.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hf_mixmatch.allocation_math import clipped_global_counts, global_threshold, global_thresholds  # noqa: E402
from hf_mixmatch.layers import list_prunable, weights_of  # noqa: E402
from hf_mixmatch.ranges import LayerRange, RangeTable  # noqa: E402
from test_strategies import _clipped_counts_by_sorting_everything as reference  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    model = timm.create_model("resnet50", num_classes=10)
    layers = list_prunable(model, num_labels=10)
    g = torch.Generator().manual_seed(0)
    ranges = RangeTable({layer.name: LayerRange(0.4 * float(torch.rand(1, generator=g)),
                                                0.6 + 0.4 * float(torch.rand(1, generator=g)), "x")
                         for layer in layers}, "x")  # every target below lies strictly inside what they allow
    totals = [0.0, 0.0]
    for sig in range(2):  # two signals, three strategies (targets) each, as in a run
        scores = {k: v.detach().abs() * (1 + sig) + torch.rand_like(v) for k, v in weights_of(model, layers).items()}
        for target in (0.5, 0.6, 0.7):
            t0 = time.perf_counter()
            a = reference(scores, layers, ranges, target)
            t1 = time.perf_counter()
            b = clipped_global_counts(scores, layers, ranges, target)
            t2 = time.perf_counter()
            totals[0] += t1 - t0
            totals[1] += t2 - t1
            print(f"signal {sig} target {target}: sort of everything {t1 - t0:.2f}s, bisection {t2 - t1:.3f}s, "
                  f"same counts {a == b}")
    print(f"total: {totals[0]:.1f}s vs {totals[1]:.1f}s ({totals[0] / totals[1]:.1f}x), 1 thread")
    thresholds(model, layers)


def thresholds(model, layers) -> None:
    """The observed ranges' 9 global thresholds, per-target float64 copies vs one copy per criterion."""
    targets, totals = (0.7, 0.8, 0.9), [0.0, 0.0]
    for crit in range(3):
        scores = {k: v.detach().abs() * (1 + crit) + torch.rand_like(v) for k, v in weights_of(model, layers).items()}
        wide = {k: v.double() for k, v in scores.items()}  # the former copy: float64 whatever the scores' dtype
        t0 = time.perf_counter()
        a = [global_threshold(wide, t) for t in targets]
        t1 = time.perf_counter()
        b = global_thresholds(scores, targets)
        t2 = time.perf_counter()
        totals[0] += t1 - t0
        totals[1] += t2 - t1
        print(f"criterion {crit}: per-target float64 copies {t1 - t0:.2f}s, one copy {t2 - t1:.2f}s, same {a == b}")
    print(f"observed ranges' thresholds: {totals[0]:.1f}s vs {totals[1]:.1f}s ({totals[0] / totals[1]:.2f}x), 1 thread")


if __name__ == "__main__":
    main()
