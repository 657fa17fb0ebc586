#!/usr/bin/env python
"""Quality benchmark: Mix-and-Match vs the standard baselines at matched sparsity, one-shot and fine-tuned.

For every reference model (``reference_models/<name>``, trained by ``scripts/train_reference.py`` on
Fashion-MNIST) and every seed:

1. one-shot run (``run_mixmatch``): 3 signals x the strategies (``--strategies``) per range source, every baseline matched to
   *every* Mix-and-Match variant (``baseline_match="all"``);
2. fine-tuned run: the same, but the Pareto front and the baselines matched to it are fine-tuned with the
   same budget (``finetune_steps``; masks kept exact);
3. RD/DP vs LAMP (and the other baselines) at fixed global targets (default 50/70/90%), one-shot, through
   the allocators directly (``ALLOCATORS["rd"].prepare`` + ``apply_sparsities`` + ``evaluate``).

The seed changes the calibration subset (scores, observed ranges, RD curves) and the fine-tuning subset and
order; the evaluation subset of the test split is fixed (``--eval-samples`` images, chosen with seed 0) so
the spread over seeds measures the methods, not the test sample. ``--baselines`` also takes ``wanda`` and
``sparsegpt``, and ``--reconstruct sparsegpt`` reconstructs the front candidates and the matched baselines
(the pipeline's stage); the one-shot comparison of Wanda / SparseGPT / allocations + SparseGPT at fixed targets,
with fronts chosen on a selection split, is ``scripts/benchmark_reconstruct.py``. Writes ``runs/bench_quality/summary.json``,
``docs/BENCHMARKS_quality.md`` and ``docs/img/quality_<model>.png``.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python scripts/benchmark_quality.py            # full
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python scripts/benchmark_quality.py --quick    # 1 seed, smaller
    python scripts/benchmark_quality.py --report-only    # rebuild the doc/plots from summary.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from quality_doc import write_outputs  # noqa: E402
from quality_bench import Bench, run_one, slim  # noqa: E402
from quality_report import band_of  # noqa: E402

BASELINES = ("global_magnitude", "uniform", "uniform_plus", "erk", "lamp", "snip", "grasp", "rd")
FIXED_TARGETS = (0.5, 0.7, 0.9)


# ----------------------------------------------------------------------------------------------- running


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="swin,vit,resnet", help="comma list of folders under --models-dir")
    p.add_argument("--models-dir", default=str(ROOT / "reference_models"))
    p.add_argument("--dataset", default=str(ROOT / "data" / "fashion_mnist"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--ranges", default="observed",
                   help="comma list of range sources; each gives 3 x 10 variants, their union is the M&M family")
    p.add_argument("--range-targets", default="0.7,0.8,0.9", help="global targets of the observed ranges")
    p.add_argument("--strategies", default="default",
                   help="comma list of strategies, 'default' (the library's default), 'paper' (the paper's ten) or 'all'")
    p.add_argument("--baselines", default=",".join(BASELINES))
    p.add_argument("--baseline-match", default="pareto", choices=("all", "pareto"))
    p.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=False,
                   help="re-estimate BatchNorm statistics after pruning, for M&M and every baseline alike (the "
                        "library's default; off here so the recorded tables reproduce)")
    p.add_argument("--reconstruct", default="none", choices=("none", "sparsegpt"),
                   help="the pipeline's reconstruction stage for the front candidates and matched baselines")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--finetune-steps", type=int, default=30, help="same budget for every fine-tuned model; 0: skip")
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--finetune-samples", type=int, default=1024)
    p.add_argument("--finetune-batch-size", type=int, default=32)
    p.add_argument("--ft-bands", default="0.4-0.5",
                   help="sparsity bands to fine-tune in: '0.4-0.5' (all models), 'swin:0.4-0.5,resnet:auto' (auto: the band "
                        "of the median-sparsity front variant)")
    p.add_argument("--rd-calib", type=int, default=64, help="calibration images for the RD/DP distortion curves")
    p.add_argument("--fixed-methods", default="rd,lamp,global_magnitude")
    p.add_argument("--rd-grid-step", type=float, default=0.05)
    p.add_argument("--fixed-targets", default=",".join(f"{t:g}" for t in FIXED_TARGETS))
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench_quality"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "BENCHMARKS_quality.md"))
    p.add_argument("--img-dir", default=str(ROOT / "docs" / "img"))
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--quick", action="store_true", help="1 seed, 1000 eval images, 20 fine-tune steps, RD grid 0.1 on 32 images")
    p.add_argument("--report-only", action="store_true", help="rebuild the doc and plots from summary.json")
    p.add_argument("--add-results", default="",
                   help="with --report-only: NAME=path/results.json[,...] adds a model from a finished one-shot "
                        "run_mixmatch results.json (for a run that was stopped before its seed completed)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds if "--seeds" in (argv or sys.argv) else "0"
        args.eval_samples = min(args.eval_samples, 1000)
        args.finetune_steps = min(args.finetune_steps, 20)
        args.rd_grid_step = max(args.rd_grid_step, 0.1)
        args.rd_calib = min(args.rd_calib, 32)
    args.models = [m for m in args.models.split(",") if m]
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s != ""]
    args.ranges = [r for r in args.ranges.split(",") if r]
    args.range_targets = tuple(float(t) for t in args.range_targets.split(","))
    from hf_mixmatch.strategies import STRATEGY_SETS

    args.strategies = STRATEGY_SETS.get(args.strategies) or tuple(x for x in args.strategies.split(",") if x)
    args.baselines = tuple(b for b in args.baselines.split(",") if b)
    args.fixed_targets = tuple(float(t) for t in args.fixed_targets.split(","))
    args.fixed_methods = tuple(m for m in args.fixed_methods.split(",") if m)
    return args


def _parse_bands(spec: str, models: list[str]) -> dict:
    """"0.4-0.5" (every model) or "swin:0.4-0.5,resnet:0.6-0.7"."""
    out = {}
    for part in spec.split(","):
        if not part:
            continue
        name, _, rng = part.rpartition(":")
        band = "auto" if rng == "auto" else tuple(float(v) for v in rng.split("-"))
        for m in ([name] if name else models):
            out.setdefault(m, []).append(band)
    return out


def run_all(args) -> dict:
    import torch
    from accelerate import Accelerator

    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model

    torch.set_num_threads(args.threads)
    acc = Accelerator(cpu=True)
    runs_dir = Path(args.runs_dir)
    ft_bands = _parse_bands(args.ft_bands, args.models)
    summary = {"command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               "args": {k: v for k, v in vars(args).items()}, "models": {},
               "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                           "cpu": platform.processor() or platform.machine()}}
    t_all = time.perf_counter()
    for name in args.models:
        model_dir = Path(args.models_dir) / name
        loaded = load_model(str(model_dir))
        # the evaluation subset is fixed across seeds (chosen with seed 0)
        eval_data = load_data(args.dataset, loaded.preprocess, calib_samples=8, eval_samples=args.eval_samples,
                              seed=0, num_labels=loaded.num_labels).eval
        m = {"path": str(model_dir), "seeds": {}, "dense": None, "train_log": _train_log(model_dir),
             "command": summary["command"], "ranges": list(args.ranges), "range_targets": list(args.range_targets)}
        summary["models"][name] = m
        for seed in args.seeds:
            t_seed = time.perf_counter()
            data = load_data(args.dataset, loaded.preprocess, calib_samples=args.calib_samples, eval_samples=8,
                             seed=seed, num_labels=loaded.num_labels,
                             train_samples=args.finetune_samples if args.finetune_steps else None)
            data.eval = eval_data
            s = {"oneshot": [], "finetuned": [], "timings": {}}
            for ranges in args.ranges:
                tag = ranges.replace(":", "_").replace("/", "_")
                out = runs_dir / name / f"s{seed}" / tag
                r = run_one(args, model_dir, data, seed, ranges, out=out, acc=acc)
                bench = Bench(args, model_dir, data, seed, out)
                bench.load_scores(out / "scores.safetensors")
                if m["dense"] is None:
                    from hf_mixmatch.evaluate import evaluate

                    m["dense"] = evaluate(bench.model, data.eval, batch_size=args.batch_size)["accuracy"]
                # RD/DP at the sparsity of every matched variant (curves on --rd-calib images)
                if "rd" in args.baselines:
                    s["timings"]["rd_curves_s"] = bench.prepare_rd()
                    t0 = time.perf_counter()
                    matched = sorted({b["matched_to"] for b in r["baselines"]}) or list(r["pareto"])
                    by_id = {v["id"]: v for v in r["variants"]}
                    for vid in matched:
                        alloc = bench.allocate("rd", by_id[vid]["sparsity"])
                        row = bench.measure(alloc.sparsities, alloc.rank_by)
                        r["baselines"].append({"id": f"rd@{vid}", "method": "rd", "matched_to": vid, "rank_by": "magnitude",
                                               "target_layers": alloc.sparsities, **row})
                    s["timings"]["rd_matched_s"] = time.perf_counter() - t0
                print(f"[{name} seed {seed} {ranges}] one-shot: {len(r['variants'])} variants, "
                      f"{len(r['baselines'])} baseline evals, {r['wall_s']:.0f}s {_fmt_t(r['timings'])} "
                      f"{_fmt_t(s['timings'])}", flush=True)
                r["layer_info"] = {la.name: {"role": la.role, "stage": la.stage, "numel": la.numel} for la in bench.layers}
                s["oneshot"].append(r)
            # fine-tuning: in each chosen band, the best one-shot M&M variant (over range sources) + every baseline
            # matched to it, with the same budget
            if args.finetune_steps:
                t0 = time.perf_counter()
                for band in ft_bands.get(name, []):
                    if band == "auto":  # the band of the median-sparsity front variant
                        front = sorted(v["sparsity"] for r in s["oneshot"] for v in r["variants"] if v["id"] in r["pareto"])
                        band = band_of(front[len(front) // 2]) if front else None
                        if band is None:
                            continue
                    # the most accurate front variant in the band; if the front skips the band (a sparser
                    # variant is as accurate), the most accurate variant in it
                    best, best_run = None, None
                    for front_only in (True, False):
                        for r in s["oneshot"]:
                            for v in r["variants"]:
                                if (v["id"] in r["pareto"] or not front_only) and band[0] <= v["sparsity"] < band[1] \
                                        and (best is None or v["accuracy"] > best["accuracy"]):
                                    best, best_run = v, r
                        if best is not None:
                            break
                    if best is None:
                        print(f"[{name} seed {seed}] no front variant in band {band}: nothing fine-tuned", flush=True)
                        continue
                    bench = Bench(args, model_dir, data, seed, runs_dir / name / f"s{seed}")
                    bench.load_scores(runs_dir / name / f"s{seed}" / best_run["ranges"].replace(":", "_") / "scores.safetensors")
                    ft = {"band": list(band), "ranges": best_run["ranges"], "pareto": [best["id"]], "variants": [], "baselines": []}
                    if not any(b["matched_to"] == best["id"] for b in best_run["baselines"]):
                        # not on the front, so no baseline was matched to it yet: match them now (one-shot)
                        if "rd" in args.baselines:
                            bench.prepare_rd()
                        for method in args.baselines:
                            alloc = bench.allocate(method, best["sparsity"])
                            row = bench.measure(alloc.sparsities, alloc.rank_by)
                            best_run["baselines"].append({"id": f"{method}@{best['id']}", "method": method,
                                                          "matched_to": best["id"], "rank_by": alloc.rank_by,
                                                          "target_layers": alloc.sparsities, **row})
                    res = bench.finetune(best["target_layers"], best["signal"])
                    ft["variants"].append({**slim(best), "oneshot": {"accuracy": best["accuracy"]}, **res})
                    for b in best_run["baselines"]:
                        if b["matched_to"] == best["id"]:
                            res = bench.finetune(b["target_layers"], b["rank_by"])
                            ft["baselines"].append({**slim(b), "oneshot": {"accuracy": b["accuracy"]}, **res})
                    s["finetuned"].append(ft)
                s["timings"]["finetune_s"] = time.perf_counter() - t0
                print(f"[{name} seed {seed}] fine-tuned {sum(1 + len(f['baselines']) for f in s['finetuned'])} models "
                      f"in {s['timings']['finetune_s']:.0f}s", flush=True)
            # RD/DP vs LAMP (and more) at fixed global targets, one-shot
            t0 = time.perf_counter()
            bench = Bench(args, model_dir, data, seed, runs_dir / name / f"s{seed}" / args.ranges[0].replace(":", "_"))
            bench.load_scores(bench.run_dir / "scores.safetensors")
            if "rd" in args.fixed_methods:
                bench.prepare_rd()
                grid = [float(g) for g in bench.rd.grid]
                s["rd_sensitivity"] = {
                    la: {f"{a:g}": float(c[min(range(len(grid)), key=lambda i: abs(grid[i] - a))]) for a in (0.5, 0.7, 0.9)}
                    for la, c in bench.rd.curves.items()}
            rows = []
            from hf_mixmatch.errors import ConfigError

            for target in args.fixed_targets:
                for method in args.fixed_methods:
                    try:
                        alloc = bench.allocate(method, target)
                    except ConfigError as err:
                        rows.append({"method": method, "target": target, "error": str(err)})
                        continue
                    row = bench.measure(alloc.sparsities, alloc.rank_by)
                    row["emptied"] = sorted(n for n, v in row["layers"].items() if v >= 0.999)
                    rows.append({"method": method, "target": target, **row})
            s["fixed"] = {"rows": rows, "wall_s": time.perf_counter() - t0}
            s["timings"]["fixed_s"] = time.perf_counter() - t0
            s["timings"]["seed_s"] = time.perf_counter() - t_seed
            # keep the summary small: drop per-layer dicts of the runs
            for r in s["oneshot"]:
                r["variants"] = [{**slim(v), "ranges": r["ranges"], "target_layers": v["target_layers"]} for v in r["variants"]]
                r["baselines"] = [slim(b) for b in r["baselines"]]
            print(f"[{name} seed {seed}] fixed targets {s['timings']['fixed_s']:.0f}s; seed total "
                  f"{s['timings']['seed_s']:.0f}s", flush=True)
            m["seeds"][str(seed)] = s
            summary["wall_s"] = time.perf_counter() - t_all
            _write_json(runs_dir / "summary.json", summary)
    summary["wall_s"] = time.perf_counter() - t_all
    _write_json(runs_dir / "summary.json", summary)
    return summary


def _from_results(path: Path) -> dict:
    """A summary entry (one seed, one-shot only) from a run_mixmatch results.json."""
    res = json.loads(path.read_text())
    cfg = res["config"]
    variants = [v for v in res["variants"] if "same_as" not in v]
    run = {"ranges": cfg["ranges"], "pareto": res["pareto"], "variants": [{**slim(v), "ranges": cfg["ranges"]} for v in variants],
           "baselines": [slim(b) for b in res.get("baselines", [])], "timings": res.get("timings", {}),
           "layer_info": {}}
    return {"path": cfg["model"], "dense": res["dense"]["accuracy"], "train_log": _train_log(Path(cfg["model"])),
            "command": f"(partial: {path})", "ranges": [cfg["ranges"]], "range_targets": cfg["range_targets"],
            "seeds": {str(res["seed"]): {"oneshot": [run], "finetuned": [], "fixed": {"rows": []}, "timings": {}}}}


def _train_log(model_dir: Path) -> dict | None:
    p = model_dir / "train_log.json"
    if not p.is_file():
        return None
    log = json.loads(p.read_text())
    return {k: log.get(k) for k in ("arch", "epochs", "train_samples", "test_accuracy", "params", "wall_s", "seed")}


def _fmt_t(t: dict) -> str:
    return " ".join(f"{k[:-2]}={v:.0f}s" for k, v in t.items() if k.endswith("_s") and isinstance(v, float))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_only:  # --runs-dir A,B merges the models of several summaries (e.g. runs done in parallel)
        dirs = [Path(d) for d in str(args.runs_dir).split(",")]
        summary = json.loads((dirs[0] / "summary.json").read_text())
        for part in filter(None, args.add_results.split(",")):
            mname, _, rpath = part.partition("=")
            summary["models"][mname] = _from_results(Path(rpath))
        for d in dirs[1:]:
            other = json.loads((d / "summary.json").read_text())
            summary["models"].update(other["models"])
            summary["wall_s"] = summary.get("wall_s", 0) + other.get("wall_s", 0)
    else:
        summary = run_all(args)
    write_outputs(summary, Path(args.doc), Path(args.img_dir))
    print(f"wrote {args.doc} ({summary.get('wall_s', 0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
