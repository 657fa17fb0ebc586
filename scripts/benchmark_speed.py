"""How close is a Mix-and-Match run to the floor of work it cannot avoid?

Floor, measured in the same process on the same decoded tensors: one calibration forward+backward
pass (the gradient signals) + one evaluation forward pass per variant (39 with the default 13 strategies). The run does more
(GraSP's Hessian-gradient pass for observed ranges, the dense evaluation, mask application and
sparsity measurement), so the ratio shows the overhead of everything that is not a forward/backward.

    python scripts/benchmark_speed.py                       # embedded default
    python scripts/benchmark_speed.py --model DIR --dataset DIR --eval-samples 1000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch


def floor_seconds(model, layers, data, *, batch_size: int, n_variants: int = 30) -> dict[str, float]:
    from hf_mixmatch.layers import weights_of
    from hf_mixmatch.models import logits

    params = list(weights_of(model, layers).values())
    x, y = data.calib.tensors
    t0 = time.perf_counter()
    for s in range(0, len(x), batch_size):
        loss = torch.nn.functional.cross_entropy(logits(model, x[s : s + batch_size]), y[s : s + batch_size])
        torch.autograd.grad(loss, params)
    calib = time.perf_counter() - t0
    from hf_mixmatch.datacache import tensors_of

    xe = tensors_of(data.eval)[0]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(xe), batch_size):
            logits(model, xe[s : s + batch_size])
    one_eval = time.perf_counter() - t0
    return {"calib_fwd_bwd_s": calib, "eval_forward_s": one_eval, "floor_s": calib + n_variants * one_eval}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--eval-samples", type=int, default=None)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ranges", default="observed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")

    from hf_mixmatch.data import load_data
    from hf_mixmatch.layers import list_prunable
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    loaded = load_model(args.model)
    data = load_data(args.dataset or ("default" if args.model == "default" else args.model), loaded.preprocess,
                     calib_samples=args.calib_samples, eval_samples=args.eval_samples, num_labels=loaded.num_labels)
    layers = list_prunable(loaded.model, num_labels=loaded.num_labels)
    floor_seconds(loaded.model, layers, data, batch_size=args.batch_size, n_variants=1)  # warm-up
    before = floor_seconds(loaded.model, layers, data, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        config = PruneConfig(model=args.model, output_dir=tmp, overwrite=True, save="none", progress=False,
                             ranges=args.ranges, batch_size=args.batch_size, calib_samples=args.calib_samples)
        t0 = time.perf_counter()
        run = run_mixmatch(config, loaded=loaded, data=data)
        wall = time.perf_counter() - t0
    after = floor_seconds(loaded.model, layers, data, batch_size=args.batch_size)
    # the floor is measured before and after the run; the smaller (less disturbed) of each part counts
    floor = {k: min(before[k], after[k]) for k in ("calib_fwd_bwd_s", "eval_forward_s")}
    n_var = len(run.variants)  # one evaluation per variant (the paper's 10 strategies x 3 signals = 30)
    floor["floor_s"] = floor["calib_fwd_bwd_s"] + n_var * floor["eval_forward_s"]
    t = run.results["timings"]
    pruning = t["dense_eval_s"] + t["scoring_s"] + t["variants_s"]
    out = {
        "model": args.model, "threads": torch.get_num_threads(), "eval_samples": data.eval_samples,
        "calib_samples": data.calib_samples, "variants": len(run.variants),
        "unique_variants": sum("same_as" not in v for v in run.variants), **floor,
        "run_scoring_s": t["scoring_s"], "run_variants_s": t["variants_s"], "run_pruning_s": pruning,
        "run_wall_s": wall, "ratio_pruning_to_floor": pruning / floor["floor_s"], "ratio_wall_to_floor": wall / floor["floor_s"],
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"model {out['model']}  threads {out['threads']}  calib {out['calib_samples']}  eval {out['eval_samples']}")
    print(f"floor: calib fwd+bwd {floor['calib_fwd_bwd_s']:.3f}s + {n_var} x eval forward {floor['eval_forward_s']:.3f}s"
          f" = {floor['floor_s']:.2f}s")
    print(f"run:   scoring {t['scoring_s']:.2f}s  variants {t['variants_s']:.2f}s  (dense eval {t['dense_eval_s']:.2f}s)"
          f"  total {pruning:.2f}s, wall incl. report {wall:.2f}s")
    print(f"ratio run/floor: {out['ratio_pruning_to_floor']:.2f}x  (wall/floor {out['ratio_wall_to_floor']:.2f}x)")


if __name__ == "__main__":
    main()
