"""Re-load every saved variant of a run with *plain* transformers / timm (no hf_mixmatch loader), re-count
its zeros and re-evaluate it, and compare with what results.json claims.

    python scripts/verify_run.py runs/x --dataset data/fashion_mnist

Exit code 1 when any variant differs (sparsity by more than 1e-9, accuracy by more than 1e-9).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_plain(folder: Path):
    cfg = json.loads((folder / "config.json").read_text())
    if "architecture" in cfg:
        import timm

        return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(folder).eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()

    from hf_mixmatch.data import load_data
    from hf_mixmatch.evaluate import evaluate
    from hf_mixmatch.layers import list_prunable
    from hf_mixmatch.masks import measure_sparsity
    from hf_mixmatch.models import load_model

    res = json.loads((args.run_dir / "results.json").read_text())
    saved = [v for v in res["variants"] if v.get("path")]
    first = load_model(args.run_dir / saved[0]["path"])  # preprocessing of the saved folder
    data = load_data(args.dataset, first.preprocess, calib_split=res["calib_split"], eval_split=res["eval_split"],
                     calib_samples=1, eval_samples=res["eval_samples"] if res["config"]["eval_samples"] else None,
                     seed=res["seed"])
    bad = 0
    print(f"{'variant':34s} {'sparsity claimed/measured':>28s} {'top-1 claimed/measured':>26s}")
    for v in saved:
        model = load_plain(args.run_dir / v["path"])
        sparsity, _ = measure_sparsity(model, list_prunable(model))
        acc = evaluate(model, data.eval, batch_size=args.batch_size)["accuracy"]
        ok = abs(sparsity - v["sparsity"]) <= 1e-9 and abs(acc - v["accuracy"]) <= 1e-9
        bad += not ok
        print(f"{v['id']:34s} {v['sparsity']:13.6f} / {sparsity:<12.6f} {v['accuracy']:11.4f} / {acc:<10.4f}"
              f" {'ok' if ok else 'MISMATCH'}")
    print(f"{len(saved) - bad}/{len(saved)} saved variants match results.json")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
