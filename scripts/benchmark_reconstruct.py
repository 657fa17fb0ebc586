#!/usr/bin/env python
"""Activation-aware scores (Wanda) and layer-wise reconstruction (SparseGPT) inside Mix-and-Match vs the field,
one-shot, on the reference models (``reference_models/<name>``, ``scripts/train_reference.py``).

Per model and seed:

1. Mix-and-Match (``run_mixmatch``: ``--signals`` x the default strategies, observed ranges) with
   ``reconstruct="sparsegpt"``: every variant is measured masked, the candidates of the rule (one-shot variants on
   the first ``--depth`` non-dominated layers) also reconstructed. Both fronts are chosen on the **selection**
   split (``--select-samples`` training images never used for training or calibration): the one-shot front (masked
   numbers) and the reconstructed front; each front member is then re-derived and reported on the **test** split.
2. Baselines at the measured sparsity of every front member, on test: masking (MAG, uniform, ERK, LAMP, SNIP, Wanda)
   and reconstructed (SparseGPT = uniform + its own mask, LAMP + SparseGPT, ERK + SparseGPT, SNIP + SparseGPT).
3. The same methods (and Wanda's score on LAMP's allocation) at fixed global targets (``--fixed-targets``), with
   ``--rd`` / ``--rd-own`` also RD/DP's allocations + SparseGPT; with ``--stages fixed,finetune`` the reconstructed
   allocations and the best masking method fine-tuned with the same budget at every target >= ``--finetune-min``.

Writes ``runs/bench_recon/summary_<models>_s<seeds>_<stages>.json`` and (``recon_report.py``) the section between
the ``recon`` markers of ``docs/BENCHMARKS_quality.md`` (below the hand-written marker, so ``benchmark_quality.py``
keeps it).

    OMP_NUM_THREADS=1 nice -n 10 python scripts/benchmark_reconstruct.py --models vit,resnet --seeds 0
    python scripts/benchmark_reconstruct.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
from fashion_mnist import DEFAULT_ROOT  # noqa: E402
from hf_mixmatch.reconstruct import REFIT_DEFAULT  # noqa: E402
from recon_bench import Bench, splits  # noqa: E402
from recon_report import merge_summaries, update_doc, write_section  # noqa: E402

MASKED = ("global_magnitude", "erk", "lamp", "snip", "wanda")  # matched to the one-shot front
MASKED_VS_RECON = ("lamp", "snip", "wanda")  # the strongest masking rivals, also matched to the reconstructed front
FIXED_MASKED = ("lamp", "snip", "wanda")
RECON = ("sparsegpt", "lamp", "erk")  # allocations + SparseGPT ("sparsegpt" = uniform + SparseGPT)
FIXED_FT_RECON = ("rdsgpt", "rd", "lamp", "erk")  # fine-tuned at fixed targets (+ SparseGPT), with the best masking


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit,resnet")
    p.add_argument("--models-dir", default=str(ROOT / "reference_models"))
    p.add_argument("--fmnist-root", default=DEFAULT_ROOT)
    p.add_argument("--seeds", default="0")
    p.add_argument("--signals", default="magnitude,activation")
    p.add_argument("--strategies", default="default")
    p.add_argument("--range-targets", default="0.7,0.8,0.9")
    p.add_argument("--ranges", default="observed", help="the M&M run's --ranges (observed, rd, preset, ...)")
    p.add_argument("--depth", type=int, default=2, help="reconstruction candidates: non-dominated layers")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--select-samples", type=int, default=1000)
    p.add_argument("--test-samples", type=int, default=None, help="first N test images (default: all 10000)")
    p.add_argument("--extra-test", type=int, default=0, help="add the last N training images (never trained on; "
                   "calibration and selection then come from training images 20000..60000-N) to the test pool: "
                   "a narrower noise band")
    p.add_argument("--min-sparsity", type=float, default=0.5, help="front members below this are not re-tested")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--fixed-targets", default="0.5,0.7,0.8,0.9")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench_recon"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "BENCHMARKS_quality.md"))
    p.add_argument("--stages", default="fronts,fixed", help="fronts (M&M run + matched baselines), fixed (targets), "
                   "finetune (with fronts: every reconstructed front member >= --finetune-min and its strongest "
                   "rivals, each fine-tuned with the same budget; with fixed: the reconstructed allocations and the "
                   "best masking method at every target >= --finetune-min)")
    p.add_argument("--fronts", default="oneshot,recon", help="which fronts to re-derive on test and match "
                   "baselines to: oneshot (masked M&M), recon (M&M with reconstruction)")
    p.add_argument("--rd", action="store_true", help="also RD/DP's allocation + SparseGPT among the reconstructed "
                   "baselines (distortion curves on the calibration images, grid --rd-grid-step, cached in the run dir)")
    p.add_argument("--rd-grid-step", type=float, default=0.02)
    p.add_argument("--rd-own", action="store_true", help="also RD/DP on SparseGPT-distortion curves + SparseGPT "
                   "(column RD-rec +SGPT; this project's allocator, not counted as a rival)")
    p.add_argument("--rd-distortion", default="magnitude", choices=("magnitude", "sparsegpt"),
                   help="the M&M run's --rd-distortion (with --ranges rd); the --rd baseline is always the paper's "
                        "magnitude curves")
    p.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=False,
                   help="re-estimate BatchNorm statistics after pruning (and after SparseGPT), for M&M and every "
                        "baseline alike (the library's default; off here so the recorded tables reproduce)")
    p.add_argument("--reconstruct-target", choices=("dense", "pruned"), default="dense",
                   help="the M&M run's --reconstruct-target (its reconstructed variants and the front's re-measure)")
    p.add_argument("--baseline-target", choices=("dense", "pruned"), default="pruned",
                   help="the reconstruction target of every '+SGPT' baseline: pruned = SparseGPT as its paper runs "
                        "it (default), dense = the same dense-output target as the M&M run")
    p.add_argument("--reconstruct-refit", type=int, default=REFIT_DEFAULT,
                   help="the M&M run's --reconstruct-refit (conjugate-gradient steps refitting the kept weights)")
    p.add_argument("--baseline-refit", type=int, default=0,
                   help="the same refit for every +SGPT baseline (default 0: SparseGPT as its paper runs it)")
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--finetune-min", type=float, default=0.8, help="fine-tune front members at >= this sparsity")
    p.add_argument("--reuse", action="store_true", help="reuse the M&M run's results.json in the runs dir if present")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def run_model(name: str, seed: int, args) -> dict:
    from hf_mixmatch.data import PreparedData

    model_dir = Path(args.models_dir) / name
    calib, select, test = splits(args.fmnist_root, seed, args.calib_samples, args.select_samples, args.test_samples,
                                 args.extra_test)
    bench = Bench(model_dir, calib, select, test, args)
    out = Path(args.runs_dir) / name / f"seed{seed}"
    data = PreparedData(calib=calib, eval=select, dataset="fashion_mnist", calib_split="train[20000:]",
                        eval_split="train[20000:] (selection)", image_column="image", label_column="label",
                        num_classes=10, seed=seed)
    stages = set(args.stages.split(","))
    log = json.loads((model_dir / "train_log.json").read_text()) if (model_dir / "train_log.json").exists() else {}
    dense, n_test = {"test": bench.evaluate(test)}, len(test)
    # a fixed-targets-only invocation may use another test size: its own keys, so merging keeps the fronts' ones
    sizes = {"dense": dense, "n_test": n_test} if "fronts" in stages else {"fixed_dense": dense, "fixed_n_test": n_test}
    summary = {"model": name, "seed": seed, **sizes, "extra_test": args.extra_test, "batch_size": args.batch_size,
               "bn_recalibrate": args.bn_recalibrate, "baseline_target": args.baseline_target,
               "baseline_refit": args.baseline_refit,
               "n_select": len(select), "rows": [], "fixed": {},
               "train_log": {k: log.get(k) for k in ("epochs", "train_samples", "test_accuracy")}}
    if "fronts" in stages:
        summary.update(_fronts(name, seed, bench, out, data, args))
    if "fixed" in stages:
        if bench.scores is None:
            from hf_mixmatch.signals import compute_scores

            bench.scores = compute_scores(bench.model, bench.layers, calib, batch_size=args.batch_size, progress=False,
                                          signals=("magnitude", "snip", "activation", "activation_row"))
        bench.add_rd_scores(out, rd=args.rd, own=args.rd_own)
        summary["fixed"] = _fixed(name, seed, bench, args)
        if "finetune" in stages:
            summary["fixed_finetuned"] = _fixed_finetuned(name, seed, bench, summary["fixed"], args)
    return summary


def _fronts(name: str, seed: int, bench: Bench, out: Path, data, args) -> dict:
    """The M&M run (selection split), both fronts re-derived on test, baselines matched to every member."""
    from hf_mixmatch.pareto import pareto_front
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch
    from hf_mixmatch.signals import load_scores
    from hf_mixmatch.strategies import STRATEGY_SETS

    # "default": the run's own default (the 13, plus the curve-driven strategies with --ranges rd)
    strategies = None if args.strategies == "default" else (STRATEGY_SETS.get(args.strategies)
                                                            or tuple(args.strategies.split(",")))
    t0 = time.perf_counter()
    if args.reuse and (out / "results.json").exists():
        res = json.loads((out / "results.json").read_text())
    else:
        cfg = PruneConfig(model=str(Path(args.models_dir) / name), output_dir=str(out), overwrite=True, save="none",
                          progress=False, signals=tuple(args.signals.split(",")), strategies=strategies,
                          range_targets=tuple(float(t) for t in args.range_targets.split(",")), ranges=args.ranges,
                          calib_samples=args.calib_samples, batch_size=args.batch_size, seed=seed,
                          reconstruct="sparsegpt", reconstruct_depth=args.depth, rd_distortion=args.rd_distortion,
                          bn_recalibrate=args.bn_recalibrate, reconstruct_target=args.reconstruct_target,
                          reconstruct_refit=args.reconstruct_refit)
        res = run_mixmatch(cfg, loaded=bench.loaded, data=data).results
    mm_s = res["timings"]["total_s"] if args.reuse else time.perf_counter() - t0
    bench.scores = load_scores(out / "scores.safetensors")
    if "snip" not in bench.scores:  # a run with --ranges rd/preset computes no SNIP; the SNIP baseline needs it
        from hf_mixmatch.signals import compute_scores

        bench.scores.update(compute_scores(bench.model, bench.layers, bench.calib, batch_size=args.batch_size,
                                           progress=False, signals=("snip",)))
    if "activation_row" not in bench.scores:  # the run computed the signals it needed; Wanda's row ranks too
        from hf_mixmatch.activations import activation_scores

        bench.scores.update(activation_scores(bench.model, bench.layers, bench.calib.tensors[0],
                                              signals=("activation", "activation_row"), batch_size=args.batch_size))
    bench.add_rd_scores(out, rd=args.rd, own=args.rd_own)
    unique = [v for v in res["variants"] if "same_as" not in v]
    masked_pts = [{"id": v["id"], "sparsity": v["sparsity"], "accuracy": (v.get("masked") or v)["accuracy"]}
                  for v in unique]
    by_id = {v["id"]: v for v in unique}
    settings = res["reconstruct"]["settings"]
    fronts = {"oneshot": pareto_front(masked_pts), "recon": list(res["pareto"])}
    rows = []
    for kind, ids in fronts.items():
        if kind not in args.fronts.split(","):
            continue
        for vid in ids:
            v = by_id[vid]
            if v["sparsity"] < args.min_sparsity:
                continue
            recon = kind == "recon" and bool(v.get("reconstructed"))
            # the M&M run's own reconstruction (runs from before the refit: none)
            mm_target, mm_refit = settings.get("target", "pruned"), settings.get("refit", 0)
            m = bench.measure(v["target_layers"], rank_by=v["signal"], reconstruct=recon, data=bench.test,
                              target=mm_target, refit=mm_refit)
            row = {"front": kind, "id": vid, "reconstructed": recon,
                   "target": mm_target if recon else None, "refit": mm_refit if recon else None, "select": v["accuracy"] if kind == "recon"
                   else (v.get("masked") or v)["accuracy"], "test": m["accuracy"], "sparsity": m["sparsity"],
                   "baselines": {}}
            for method in (MASKED if kind == "oneshot" else MASKED_VS_RECON):
                row["baselines"][method] = bench.baseline(method, m["sparsity"], reconstruct=False)["accuracy"]
            if kind == "recon":
                for method in RECON + (("rd",) if args.rd else ()) + (("rdsgpt",) if args.rd_own else ()):
                    row["baselines"][_recon_key(method)] = bench.baseline(method, m["sparsity"],
                                                                          reconstruct=True)["accuracy"]
            rows.append(row)
            print(f"[{name} s{seed}] {kind:7s} {vid:32s} sp {m['sparsity']:.3f} test {m['accuracy']:.4f} "
                  f"best baseline {max(row['baselines'].values()):.4f}", flush=True)
    finetuned = _finetune_rows(name, seed, bench, by_id, rows, args) if "finetune" in args.stages.split(",") else []
    return {"timings": res["timings"], "mixmatch_s": mm_s, "reconstruct": res["reconstruct"],
            "n_variants": len(unique), "rows": rows, "dense_select": res["dense"]["accuracy"], "finetuned": finetuned}


def _finetune_rows(name: str, seed: int, bench: Bench, by_id: dict, rows: list[dict], args) -> list[dict]:
    """The same fine-tuning budget for every reconstructed front member at >= ``--finetune-min`` sparsity and
    its rivals at the same sparsity: LAMP + SparseGPT, ERK + SparseGPT and the best masking baseline there."""
    out = []
    for row in rows:
        if row["front"] != "recon" or row["sparsity"] < args.finetune_min:
            continue
        v = by_id[row["id"]]
        masked = max(MASKED_VS_RECON, key=lambda m: row["baselines"].get(m, -1.0))
        ft = {"mm": bench.finetuned(v["target_layers"], rank_by=v["signal"], reconstruct=row["reconstructed"],
                                    target=row.get("target"), refit=row.get("refit"))}
        for key, method, recon in (("lamp+sgpt", "lamp", True), ("erk+sgpt", "erk", True), (masked, masked, False)):
            ft[key] = bench.baseline(method, row["sparsity"], reconstruct=recon, finetune=True)
        out.append({"id": row["id"], "sparsity": row["sparsity"], "steps": args.finetune_steps,
                    "lr": args.finetune_lr, "results": ft})
        print(f"[{name} s{seed}] fine-tuned {row['id']} sp {row['sparsity']:.3f}: " +
              ", ".join(f"{k} {e['oneshot']:.4f}->{e['accuracy']:.4f}" for k, e in ft.items()), flush=True)
    return out


def _recon_key(method: str) -> str:
    return method if method == "sparsegpt" else f"{method}+sgpt"


def _fixed(name: str, seed: int, bench: Bench, args) -> dict:
    fixed = {}
    recon = RECON + (("rd",) if args.rd else ()) + (("rdsgpt",) if args.rd_own else ())
    for target in (float(t) for t in args.fixed_targets.split(",")):
        entry = {}
        for method in FIXED_MASKED:
            entry[method] = bench.baseline(method, target, reconstruct=False)
        entry["wanda_lamp"] = bench.baseline("lamp", target, reconstruct=False, rank_by="activation")
        for method in recon:
            entry[_recon_key(method)] = bench.baseline(method, target, reconstruct=True)
        fixed[f"{target:g}"] = entry
        print(f"[{name} s{seed}] fixed {target:g}: " + ", ".join(f"{k} {e['accuracy']:.4f}" for k, e in entry.items()),
              flush=True)
    return fixed


def _fixed_finetuned(name: str, seed: int, bench: Bench, fixed: dict, args) -> dict:
    """At every fixed target >= ``--finetune-min``: the same fine-tuning budget for the reconstructed allocations
    (RD-rec, RD, LAMP, ERK + SparseGPT, those that ran) and the best masking method one-shot there."""
    out = {}
    for t, entry in fixed.items():
        if float(t) < args.finetune_min:
            continue
        masked = max(FIXED_MASKED, key=lambda m: entry[m]["accuracy"])
        ft = {}
        for method in FIXED_FT_RECON:
            if _recon_key(method) in entry:
                ft[_recon_key(method)] = bench.baseline(method, float(t), reconstruct=True, finetune=True)
        ft[masked] = bench.baseline(masked, float(t), reconstruct=False, finetune=True)
        for e in ft.values():
            e["steps"] = args.finetune_steps
        out[t] = ft
        print(f"[{name} s{seed}] fixed {t} fine-tuned: " +
              ", ".join(f"{k} {e['oneshot']:.4f}->{e['accuracy']:.4f}" for k, e in ft.items()), flush=True)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    runs_dir = Path(args.runs_dir)
    if not args.report_only:  # one summary file per invocation, so models can run as separate processes
        torch.manual_seed(0)
        argv_used = sys.argv[1:] if argv is None else argv
        command = "OMP_NUM_THREADS=1 python scripts/benchmark_reconstruct.py " + " ".join(shlex.quote(a) for a in argv_used)
        runs = [{**run_model(m, int(s), args), "command": command}
                for m in args.models.split(",") for s in args.seeds.split(",")]
        runs_dir.mkdir(parents=True, exist_ok=True)
        path = runs_dir / (f"summary_{args.models.replace(',', '_')}_s{args.seeds.replace(',', '_')}_"
                           f"{args.stages.replace(',', '_')}.json")
        path.write_text(json.dumps({"runs": runs, "torch": torch.__version__}, indent=1))
    update_doc(Path(args.doc), write_section({"runs": merge_summaries(runs_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
