#!/usr/bin/env python
"""How much could any racing rule save on a real population of variants? Replays racing policies on the
per-image results of every variant, recorded once with ``--eval full`` (same split, same order).

    python scripts/racing_policies.py --model reference_models/resnet --dataset /tmp/fmnist

Prints, per policy, the fraction of image evaluations (the variant-evaluation cost relative to ``full``), the
survivors, and whether the front equals the ``full`` front (else each missing member's gap in points to the
best member of the replayed front at equal or higher sparsity). Policies: the library's sign test at several
schedules and family-wise error levels; a test with an indifference margin m (drop ``a`` when, with
confidence, a sparser ``b`` is at most m points worse: empirical-Bernstein bound on the paired differences,
with the discordant fraction bounded by a Chernoff-KL upper limit). Also prints how many variants are
within 0.1 / 0.5 points of a variant with equal or higher sparsity (the near-ties no valid test can separate
early), and two lower bounds (:func:`oracle`): a clairvoyant sign-test racing, and the front members alone.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hf_mixmatch import racing  # noqa: E402
from hf_mixmatch.pareto import pareto_front  # noqa: E402


def record_hits(model: str, dataset: str, eval_samples: int | None) -> dict[str, tuple[float, torch.Tensor]]:
    """``--eval full`` on the whole split, keeping every variant's (sparsity, per-image top-1 correctness)."""
    from hf_mixmatch import variant_eval
    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    loaded = load_model(model)
    data = load_data(dataset, loaded.preprocess, num_labels=loaded.num_labels, eval_samples=eval_samples)
    store, real = {}, variant_eval.race

    def capture(ids, measure, n_total, **kw):
        log = real(ids, measure, n_total, **kw)
        store.update({k: (lane.sparsity, lane.hits.top1.bool().clone()) for k, lane in log.lanes.items()})
        return log

    variant_eval.race = capture
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_mixmatch(PruneConfig(model=model, output_dir=str(Path(tmp) / "run"), save="none", progress=False,
                                     eval="full", bn_recalibrate=False), loaded=loaded, data=data)
    finally:
        variant_eval.race = real
    return store


def margin_drop(a: torch.Tensor, b: torch.Tensor, margin: float, delta: float) -> bool:
    """With confidence 1 - delta, acc(a) - acc(b) < margin on the whole split (paired differences in {-1,0,1})."""
    d = a.float() - b.float()
    n, log_term = len(d), math.log(2.0 / delta)
    hi = racing.kl_upper(float((d != 0).float().mean()), n, log_term)  # the discordant fraction bounds the variance
    t = math.sqrt(2 * hi * log_term / n) + 4 * log_term / (3 * n)  # Bernstein, range 2
    return float(d.mean()) + t < margin


def replay(hits, policy: str, *, first=256, growth=1.5, delta=0.01, last=0.5, margin=0.0, seed=0):
    """``policy``: "sign" (the sign test alone, as if the split were infinite), "fpc" (the library's test, with
    the finite-population correction) or "margin"."""
    ids = list(hits)
    sp = {k: hits[k][0] for k in ids}
    n_total = len(hits[ids[0]][1])
    rounds = racing.schedule(n_total, racing.RaceConfig(first=first, growth=growth, delta=delta, last=last))
    order = torch.tensor(racing.sample_order(n_total, seed))
    pairs = sum(sp[b] >= sp[a] for a in ids for b in ids if a != b)
    per_test = delta / max(1, (len(rounds) - 1) * pairs)
    alive, seen = sorted(ids), dict.fromkeys(ids, 0)
    for n in rounds:
        for k in alive:
            seen[k] = n
        if n == n_total:
            break
        idx = order[:n]
        if policy == "margin":
            dropped = {a for a in alive if any(a != b and sp[b] >= sp[a] and
                                               margin_drop(hits[a][1][idx], hits[b][1][idx], margin, per_test)
                                               for b in alive)}
        else:
            by = racing.dominators(torch.stack([hits[k][1][idx] for k in alive]), [sp[k] for k in alive],
                                   n_total if policy == "fpc" else None, per_test)
            dropped = {a for a, b in zip(alive, by) if b is not None}
        alive = [k for k in alive if k not in dropped]
    return sum(seen.values()) / (n_total * len(ids)), set(alive)


def oracle(hits, *, delta=0.01, fpc=False) -> tuple[float, float]:
    """Lower bounds on what any exact-front racing rule can save on this population and image order.

    ``clairvoyant``: each variant stops at the first image count (any count, not only round ends) where the
    library's test at ``delta`` *without* any multiplicity correction drops it against some variant with
    equal or higher sparsity (the most generous racing with that test possible): the sign test alone, or with
    ``fpc`` the library's finite-population test; never-dropped variants see every image. ``front``: only the
    full-split front's members see every image, every other variant none (the bound of any rule that must
    certify the front on the whole split)."""
    ids = list(hits)
    sp = {k: hits[k][0] for k in ids}
    n_total = len(hits[ids[0]][1])
    order = torch.tensor(racing.sample_order(n_total, 0))
    n = torch.arange(1, n_total + 1)
    seen = {}
    for a in ids:
        stop = n_total
        ha = hits[a][1][order].long()
        for b in ids:
            if b == a or sp[b] < sp[a]:
                continue
            hb = hits[b][1][order].long()
            w, l = torch.cumsum((hb > ha).long(), 0), torch.cumsum((ha > hb).long(), 0)
            ok = racing.significant(w, l, n, n_total if fpc else None, delta).nonzero()
            if len(ok):
                stop = min(stop, int(ok[0]) + 1)
        seen[a] = stop
    acc = {k: float(h.float().mean()) for k, (_, h) in hits.items()}
    front = pareto_front([{"id": k, "sparsity": sp[k], "accuracy": acc[k]} for k in ids])
    return sum(seen.values()) / (n_total * len(ids)), len(front) / len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--eval-samples", type=int, default=None)
    ap.add_argument("--hits", default=None, help="a file keeping the recorded per-image results: read when it "
                                                 "exists, written otherwise (replay other policies without "
                                                 "evaluating again)")
    args = ap.parse_args()
    if args.hits and Path(args.hits).exists():
        hits = torch.load(args.hits)
    else:
        hits = record_hits(args.model, args.dataset, args.eval_samples)
        if args.hits:
            torch.save(hits, args.hits)
    acc = {k: float(h.float().mean()) for k, (_, h) in hits.items()}
    rows = [{"id": k, "sparsity": s, "accuracy": acc[k]} for k, (s, _) in hits.items()]
    full_front = pareto_front(rows)
    n_total = len(next(iter(hits.values()))[1])
    print(f"{len(hits)} variants, {n_total} images, full front {len(full_front)}")
    for tol in (0.001, 0.005):
        near = sum(any(b != a and hits[b][0] >= hits[a][0] and abs(acc[a] - acc[b]) <= tol for b in hits)
                   for a in hits)
        print(f"  within {100 * tol:.1f} pt of a variant with equal or higher sparsity: {near}")
    clair, front_only = oracle(hits)
    clair_fpc, _ = oracle(hits, fpc=True)
    print(f"  lower bounds (stops at the first significant image, no multiplicity correction): clairvoyant sign "
          f"test {100 * clair:.0f}%, clairvoyant finite-population test {100 * clair_fpc:.0f}% of the image "
          f"evaluations; front members alone {100 * front_only:.0f}%")
    sp = [s for s, _ in hits.values()]
    pairs = sum(b >= a for i, a in enumerate(sp) for j, b in enumerate(sp) if i != j)
    decisions = len(racing.schedule(n_total, racing.RaceConfig())) - 1
    for label, d in (("pairs", 0.01 / pairs), ("pairs x decision rounds", 0.01 / (pairs * decisions))):
        print(f"  clairvoyant finite-population test at the race's Bonferroni level over {label} "
              f"(delta = 0.01 / {round(0.01 / d)}): {100 * oracle(hits, delta=d, fpc=True)[0]:.1f}%")
    policies = [(p, dict(first=f, growth=g, delta=d, last=last))
                for p in ("sign", "fpc") for f, g in ((256, 1.5), (128, 1.5), (256, 1.25), (512, 2.0))
                for last in (0.5, 0.75, 0.9) for d in (0.01, 0.05)]
    policies += [("margin", dict(margin=m / 100, delta=d)) for m in (0.0, 0.25, 0.5, 1.0) for d in (0.01, 0.05)]
    for policy, kw in policies:
        frac, alive = replay(hits, policy, **kw)
        front = pareto_front([r for r in rows if r["id"] in alive])
        gaps = [100 * (acc[f] - max([acc[g] for g in front if hits[g][0] >= hits[f][0]] or [0.0]))
                for f in full_front if f not in front]
        print(f"  {policy:6s} {kw}: {100 * frac:.0f}% of the image evaluations, {len(alive)} survivors, "
              + ("same front" if not gaps else "front differs: " + ", ".join(f"{g:+.2f} pt" for g in gaps)))


if __name__ == "__main__":
    main()
