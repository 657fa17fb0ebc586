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
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ("global_magnitude", "uniform", "uniform_plus", "erk", "lamp", "snip", "grasp", "rd")
SHORT = {"global_magnitude": "MAG", "uniform": "uniform", "uniform_plus": "uniform+", "erk": "ERK", "lamp": "LAMP",
         "snip": "SNIP", "grasp": "GraSP", "rd": "RD/DP", "mixmatch": "M&M"}
BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0))
FIXED_TARGETS = (0.5, 0.7, 0.9)
NOTES_MARKER = "<!-- analysis: hand-written, kept when the tables above are regenerated -->"


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


def _slim(row: dict) -> dict:
    keep = ("id", "method", "signal", "strategy", "matched_to", "sparsity", "accuracy", "oneshot", "same_as", "rank_by",
            "finetune_steps", "sparsity_after")
    return {k: row[k] for k in keep if k in row}


class Bench:
    """One reference model and one seed: model, layers, data, scores, RD curves; evaluate and fine-tune allocations."""

    def __init__(self, args, model_dir: Path, data, seed: int, run_dir: Path):
        from hf_mixmatch.layers import list_prunable, weights_of
        from hf_mixmatch.masks import WeightStash
        from hf_mixmatch.models import load_model

        self.args, self.data, self.seed, self.run_dir = args, data, seed, run_dir
        self.loaded = load_model(str(model_dir))
        self.model = self.loaded.model.eval()
        self.layers = list_prunable(self.model, num_labels=self.loaded.num_labels)
        self.weights = weights_of(self.model, self.layers)
        self.stash = WeightStash(self.model, self.layers)
        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.scores = None
        self.rd = None

    def load_scores(self, path: Path) -> None:
        from hf_mixmatch.signals import load_scores

        self.scores = load_scores(path)

    def prepare_rd(self) -> float:
        """RD/DP distortion curves on the first --rd-calib calibration images (cached in the run dir)."""
        from hf_mixmatch.allocators import ALLOCATORS
        from hf_mixmatch.rd import default_grid

        t0 = time.perf_counter()
        x = self.data.calib.tensors[0][: self.args.rd_calib]
        self.rd = ALLOCATORS["rd"].prepare(self.model, x, grid=default_grid(self.args.rd_grid_step), reduction="mean",
                                           cache_dir=self.run_dir, batch_size=self.args.batch_size, layers=self.layers)
        return time.perf_counter() - t0

    def recalibrate(self) -> None:
        """--bn-recalibrate: the pruned model's BatchNorm statistics re-estimated on the calibration images, as the
        M&M run does (the stash / state restore puts the dense ones back)."""
        if self.args.bn_recalibrate:
            from hf_mixmatch.bn_recalibrate import BatchNormRecalibrator

            BatchNormRecalibrator(self.model, *self.data.calib.tensors, batch_size=self.args.batch_size)(self.model)

    def allocate(self, method: str, target: float):
        from hf_mixmatch.allocators import ALLOCATORS

        fn = self.rd if method == "rd" else ALLOCATORS[method]
        return fn(weights=self.weights, layers=self.layers, target=target, scores=self.scores)

    def measure(self, sparsities: dict, rank_by: str) -> dict:
        from hf_mixmatch.evaluate import evaluate
        from hf_mixmatch.masks import apply_sparsities, measure_sparsity

        apply_sparsities(self.model, self.layers, sparsities, self.scores[rank_by])
        self.recalibrate()
        sp, per_layer = measure_sparsity(self.model, self.layers)
        accuracy = evaluate(self.model, self.data.eval, batch_size=self.args.batch_size)["accuracy"]
        self.stash.restore()
        return {"sparsity": sp, "accuracy": accuracy, "layers": per_layer}

    def finetune(self, sparsities: dict, rank_by: str) -> dict:
        """Fine-tune one allocation (masks exact), evaluate, put every parameter back."""
        from torch.utils.data import Subset

        from hf_mixmatch.evaluate import evaluate
        from hf_mixmatch.finetune import finetune
        from hf_mixmatch.masks import apply_sparsities, measure_sparsity

        train = self.data.train  # memory-mapped decoded cache; the subsets read it batch by batch
        n_val = max(1, len(train) // 10)
        apply_sparsities(self.model, self.layers, sparsities, self.scores[rank_by])
        self.recalibrate()
        sp0, _ = measure_sparsity(self.model, self.layers)
        res = finetune(self.model, self.layers, Subset(train, range(n_val, len(train))), Subset(train, range(n_val)),
                       steps=self.args.finetune_steps, lr=self.args.finetune_lr, patience=3,
                       batch_size=self.args.finetune_batch_size, seed=self.seed, progress=False)
        sp1, _ = measure_sparsity(self.model, self.layers)
        accuracy = evaluate(self.model, self.data.eval, batch_size=self.args.batch_size)["accuracy"]
        self.model.load_state_dict(self.state)
        return {"accuracy": accuracy, "sparsity": sp1, "sparsity_before": sp0, "steps": res.steps,
                "best_step": res.best_step}


def _run(args, model_dir: Path, data, seed: int, ranges: str, *, out: Path, acc) -> dict:
    import hf_mixmatch.pipeline as pipeline
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    pipeline._write_report = lambda out, results: None  # the benchmark reads results, not the per-run report
    cfg = PruneConfig(
        model=str(model_dir), dataset=args.dataset, output_dir=str(out), ranges=ranges,
        range_targets=args.range_targets, strategies=args.strategies, rd_grid_step=args.rd_grid_step,
        calib_samples=args.calib_samples, eval_samples=args.eval_samples,
        batch_size=args.batch_size, seed=seed, save="none", overwrite=True, progress=False,
        baselines=tuple(b for b in args.baselines if b != "rd"), baseline_match=args.baseline_match,
        reconstruct=args.reconstruct, bn_recalibrate=args.bn_recalibrate,
    )
    t0 = time.perf_counter()
    res = run_mixmatch(cfg, data=data, accelerator=acc).results
    wall = time.perf_counter() - t0
    variants = [v for v in res["variants"] if "same_as" not in v]
    for v in variants:
        v["ranges"] = ranges
    return {"ranges": ranges, "pareto": res["pareto"], "variants": variants, "baselines": res.get("baselines", []),
            "timings": res["timings"], "wall_s": wall, "range_table": res["ranges"]}


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
                r = _run(args, model_dir, data, seed, ranges, out=out, acc=acc)
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
                        band = _band_of(front[len(front) // 2]) if front else None
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
                    ft["variants"].append({**_slim(best), "oneshot": {"accuracy": best["accuracy"]}, **res})
                    for b in best_run["baselines"]:
                        if b["matched_to"] == best["id"]:
                            res = bench.finetune(b["target_layers"], b["rank_by"])
                            ft["baselines"].append({**_slim(b), "oneshot": {"accuracy": b["accuracy"]}, **res})
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
                r["variants"] = [{**_slim(v), "ranges": r["ranges"], "target_layers": v["target_layers"]} for v in r["variants"]]
                r["baselines"] = [_slim(b) for b in r["baselines"]]
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
    run = {"ranges": cfg["ranges"], "pareto": res["pareto"], "variants": [{**_slim(v), "ranges": cfg["ranges"]} for v in variants],
           "baselines": [_slim(b) for b in res.get("baselines", [])], "timings": res.get("timings", {}),
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


# ---------------------------------------------------------------------------------------------- analysis


def _band_of(sp: float):
    for lo, hi in BANDS:
        if lo <= sp < hi:
            return (lo, hi)
    return None


def _band_label(band) -> str:
    return f"{band[0] * 100:.0f}–{band[1] * 100:.0f}%"


def _mm_points(run_list: list[dict], finetuned: bool) -> list[dict]:
    """Mix-and-Match points of one seed (union over range sources); fine-tuned: only the tuned fronts."""
    pts = []
    for r in run_list:
        front = set(r["pareto"])
        for v in r["variants"]:
            if finetuned and v["id"] not in front:
                continue
            pts.append({**v, "key": f"{r['ranges']}|{v['id']}"})
    return pts


def _baseline_rows(run_list: list[dict]) -> dict[tuple[str, str], dict]:
    """(variant key, method) -> baseline row."""
    out = {}
    for r in run_list:
        for b in r["baselines"]:
            out[(f"{r['ranges']}|{b['matched_to']}", b["method"])] = b
    return out


def band_table(model: dict, mode: str, methods: tuple[str, ...]) -> dict:
    """Per band: for each seed the best M&M variant (by accuracy) in the band and the baselines matched to it.

    Returns {band: {"n_seeds", "sparsity": [..], "mm": [drops], method: [drops], "mm_id": [...]}}.
    """
    dense = model["dense"]
    table: dict = {}
    for seed, s in model["seeds"].items():
        runs = s[mode]
        if not runs:
            continue
        pts = _mm_points(runs, finetuned=(mode == "finetuned"))
        rows = _baseline_rows(runs)
        present = {mth for (_, mth) in rows}
        need = [mth for mth in methods if mth in present]  # a stopped run may lack e.g. the RD rows
        best: dict = {}
        for p in pts:
            band = _band_of(p["sparsity"])
            if band is None:
                continue
            if not all((p["key"], mth) in rows for mth in need):
                continue
            if band not in best or p["accuracy"] > best[band]["accuracy"]:
                best[band] = p
        for band, p in best.items():
            t = table.setdefault(band, {"sparsity": [], "mm": [], "mm_id": [], **{m: [] for m in methods}})
            t["sparsity"].append(p["sparsity"])
            t["mm"].append(100 * (dense - p["accuracy"]))
            t["mm_id"].append(p["key"])
            for mth in methods:
                if (p["key"], mth) in rows:
                    t[mth].append(100 * (dense - rows[(p["key"], mth)]["accuracy"]))
    return dict(sorted(table.items()))


def _finite(xs):
    return [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]


def _ms(xs: list[float]) -> str:
    xs = _finite(xs)
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _mean(xs):
    xs = _finite(xs)
    return statistics.mean(xs) if xs else float("nan")


def _std(xs):
    xs = _finite(xs)
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def binom_se(acc: float, n: int) -> float:
    """Standard error (points) of an accuracy measured on n images."""
    return 100 * math.sqrt(max(acc * (1 - acc), 1e-12) / n)


def front_check(model: dict, mode: str, methods: tuple[str, ...], n_eval: int) -> dict:
    """Target (b): every Pareto-front variant vs every baseline matched to it, per seed.

    A pair *loses* when the baseline is more accurate by more than the noise: 2 x the binomial standard
    error of a difference of two accuracies on the same n images (sqrt(2) x SE each).
    """
    per_method = {m: {"pairs": 0, "wins": 0, "ties": 0, "losses": 0, "worst": 0.0, "worst_at": None} for m in methods}
    for seed, s in model["seeds"].items():
        for r in s[mode]:
            rows = {(b["matched_to"], b["method"]): b for b in r["baselines"]}
            by_id = {v["id"]: v for v in r["variants"]}
            for vid in r["pareto"]:
                v = by_id[vid]
                for mth in methods:
                    b = rows.get((vid, mth))
                    if b is None:
                        continue
                    d = 100 * (v["accuracy"] - b["accuracy"])
                    noise = 2 * math.sqrt(2) * binom_se(v["accuracy"], n_eval)
                    c = per_method[mth]
                    c["pairs"] += 1
                    if d > noise:
                        c["wins"] += 1
                    elif d >= -noise:
                        c["ties"] += 1
                    else:
                        c["losses"] += 1
                    if d < c["worst"]:
                        c["worst"], c["worst_at"] = d, f"seed {seed} {r['ranges']} {vid} @ {v['sparsity']:.3f} (noise ±{noise:.2f})"
    return per_method


def dominance_check(model: dict, mode: str, methods: tuple[str, ...], n_eval: int) -> dict:
    """For every baseline point: is there an M&M point (same seed) at >= its sparsity and >= its accuracy - noise?"""
    out = {m: {"points": 0, "dominated": 0, "worst_gap": 0.0} for m in methods}
    for s in model["seeds"].values():
        pts = _mm_points(s[mode], finetuned=(mode == "finetuned"))
        for r in s[mode]:
            for b in r["baselines"]:
                if b["method"] not in out:
                    continue
                noise = 2 * math.sqrt(2) * binom_se(b["accuracy"], n_eval)
                best = max((p["accuracy"] for p in pts if p["sparsity"] >= b["sparsity"] - 1e-9), default=-1.0)
                gap = 100 * (best - b["accuracy"])
                o = out[b["method"]]
                o["points"] += 1
                if gap >= -noise:
                    o["dominated"] += 1
                o["worst_gap"] = min(o["worst_gap"], gap)
    return out


def fixed_table(model: dict, methods: tuple[str, ...]) -> dict:
    """{target: {method: [accuracy points over seeds]}}, plus emptied layers per method (seed of first)."""
    dense = model["dense"]
    tab: dict = {}
    emptied: dict = {}
    for s in model["seeds"].values():
        for row in s["fixed"]["rows"]:
            if "error" in row:
                continue
            tab.setdefault(row["target"], {}).setdefault(row["method"], []).append(100 * (dense - row["accuracy"]))
            emptied.setdefault((row["target"], row["method"]), row["emptied"])
    return {"drops": tab, "emptied": emptied}


# ------------------------------------------------------------------------------------------------ output


COLORS = {"mixmatch": "black", "global_magnitude": "tab:red", "uniform": "tab:gray", "uniform_plus": "tab:brown",
          "erk": "tab:olive", "lamp": "tab:blue", "snip": "tab:orange", "grasp": "tab:pink", "rd": "tab:green"}
MARKERS = {"global_magnitude": "v", "uniform": "s", "uniform_plus": "D", "erk": "P", "lamp": "^", "snip": "<",
           "grasp": ">", "rd": "*"}


def plot_model(name: str, model: dict, methods: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("oneshot", "finetuned") if any(s[m] for s in model["seeds"].values())]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.8), squeeze=False)
    dense = 100 * model["dense"]
    for ax, mode in zip(axes[0], modes):
        first = True
        for seed, s in model["seeds"].items():
            pts = _mm_points(s[mode], finetuned=(mode == "finetuned"))
            ax.scatter([100 * p["sparsity"] for p in pts], [100 * p["accuracy"] for p in pts], s=14, c="black",
                       marker="o", alpha=0.6, label="Mix-and-Match" if first else None, zorder=3)
            for mth in methods:
                rows = [b for r in s[mode] for b in r["baselines"] if b["method"] == mth]
                ax.scatter([100 * b["sparsity"] for b in rows], [100 * b["accuracy"] for b in rows], s=22,
                           c=COLORS[mth], marker=MARKERS[mth], alpha=0.55, label=SHORT[mth] if first else None)
            first = False
        ax.axhline(dense, color="black", ls="--", lw=0.8, label=f"dense {dense:.1f}%")
        ax.set_xlabel("sparsity (% of prunable weights)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{name}: {'one-shot' if mode == 'oneshot' else 'fine-tuned (best M&M in band + matched baselines)'}")
        lo = min([100 * p["accuracy"] for s in model["seeds"].values() for r in s[mode]
                  for p in r["variants"] + r["baselines"]], default=0)
        ax.set_ylim(max(0, min(lo, dense) - 3), dense + 3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_doc(summary: dict, args) -> str:
    methods = tuple(summary["args"]["baselines"])
    n_eval = summary["args"]["eval_samples"]
    seeds = sorted({int(k) for mm in summary["models"].values() for k in mm["seeds"]})
    L = []
    L.append("# Quality benchmark: Mix-and-Match vs baselines at matched sparsity\n")
    L.append("Generated by `scripts/benchmark_quality.py` (do not edit by hand; rerun the script or "
             "`--report-only`). Reference models: `scripts/train_reference.py`, Fashion-MNIST.\n")
    L.append(f"- Command: `OMP_NUM_THREADS={summary['machine']['threads']} HF_HUB_OFFLINE=1 python {summary['command']}`")
    L.append(f"- Seeds: {', '.join(map(str, seeds))} (seed = calibration subset of {summary['args']['calib_samples']} "
             f"training images, fine-tuning subset/order, RD curves). Evaluation: a fixed subset of "
             f"{n_eval} Fashion-MNIST *test* images (same for all seeds and methods); binomial SE of one accuracy "
             f"≈ {binom_se(0.9, n_eval):.2f} points at 90%.")
    strats = summary["args"].get("strategies") or ["the paper's ten"]
    L.append(f"- Mix-and-Match family: 3 signals × {len(strats) if len(strats) > 1 else 10} strategies "
             f"({', '.join(strats)}) per range source; range sources: "
             f"{', '.join('`' + r + '`' for r in summary['args']['ranges'])} (observed targets "
             f"{summary['args']['range_targets']}). Baselines: {', '.join(SHORT[m] for m in methods)}, each evaluated "
             f"at the measured sparsity of {'every' if summary['args']['baseline_match'] == 'all' else 'every Pareto-front'} "
             f"M&M variant (one-shot; RD/DP curves on {summary['args']['rd_calib']} calibration images, grid step "
             f"{summary['args']['rd_grid_step']}).")
    if summary["args"]["finetune_steps"]:
        L.append(f"- Fine-tuning (CPU budget): in each band of `--ft-bands` ({summary['args']['ft_bands']}), the best "
                 f"one-shot M&M front variant and every baseline matched to it get the same budget: "
                 f"{summary['args']['finetune_steps']} AdamW steps, lr {summary['args']['finetune_lr']}, batch "
                 f"{summary['args']['finetune_batch_size']}, {summary['args']['finetune_samples']} training images (10% "
                 f"held out for early stopping / best-step restore), masks exact (sparsity checked after).")
    L.append(f"- Wall time: {summary.get('wall_s', 0) / 60:.1f} min on {summary['machine']['threads']} CPU threads "
             f"(torch {summary['machine']['torch']}).")
    L.append("- *Best M&M* in a band = the most accurate M&M variant (of the front, when fine-tuned) whose sparsity "
             "falls in the band, chosen per seed **on the test subset** (as the paper does); every baseline is "
             "compared at exactly that variant's sparsity. Choosing the best of ~30–60 variants on the test set "
             "flatters M&M by a selection effect of the order of the SE above; the per-variant check (target b) "
             "does not select.\n")
    for name, model in summary["models"].items():
        L.append(f"## {name}\n")
        tl = model.get("train_log") or {}
        L.append(f"Dense accuracy: **{100 * model['dense']:.2f}%** on the {n_eval} evaluation images"
                 + (f" ({100 * tl['test_accuracy']:.2f}% on all {10000} test images; {tl.get('params')} parameters; trained "
                    f"{tl.get('epochs')} epochs on {tl.get('train_samples')} images in {tl.get('wall_s')} s)" if tl.get("test_accuracy") else "")
                 + f". Seeds: {', '.join(model['seeds'])}. Range source(s): "
                 + ", ".join(f"`{r}`" for r in model.get("ranges", summary["args"]["ranges"]))
                 + (f" (observed targets {model.get('range_targets')})" if "observed" in model.get("ranges", []) else "")
                 + (f". Command: `{model['command']}`" if model.get("command") else "") + "\n")
        L.append(f"![{name}](img/quality_{name}.png)\n")
        for mode in ("oneshot", "finetuned"):
            if not any(s[mode] for s in model["seeds"].values()):
                continue
            tab = band_table(model, mode, methods)
            L.append(f"### {name}, {'one-shot' if mode == 'oneshot' else 'fine-tuned'}: accuracy drop (points, mean ± std over seeds)\n")
            hdr = "| band | seeds | sparsity | best M&M | " + " | ".join(SHORT[m] for m in methods) + \
                  " | reduction vs MAG | vs best baseline |"
            L.append(hdr)
            L.append("|" + "---|" * (hdr.count("|") - 1))
            for band, t in tab.items():
                mag = t.get("global_magnitude", [])
                red = [((a - b) / a) if a > 1e-9 else float("nan") for a, b in zip(mag, t["mm"])]
                red_s = "–" if not mag else (f"{_mean(red) * 100:.0f}%" + (f" ± {_std(red) * 100:.0f}" if len(red) > 1 else ""))
                if mag and _mean(mag) <= 0.05:
                    red_s += " (MAG drop ≈ 0)"
                best_base = [min(t[m][i] for m in methods if len(t[m]) > i) for i in range(len(t["mm"]))]
                gap = [b - a for a, b in zip(t["mm"], best_base)]
                cells = [_band_label(band), str(len(t["mm"])), f"{_mean(t['sparsity']) * 100:.1f}%", f"**{_ms(t['mm'])}**"]
                cells += [_ms(t[m]) for m in methods]
                cells += [red_s, f"{_ms(gap)}"]
                L.append("| " + " | ".join(cells) + " |")
            L.append("\n*vs best baseline*: (best baseline's drop − best M&M drop) per seed, mean ± std; > 0 means M&M "
                     "loses less.\n")
            fc = front_check(model, mode, methods, n_eval)
            L.append(f"Target (b), {name} {mode}: each Pareto-front variant vs each baseline at its sparsity "
                     f"(win/tie/loss with noise = 2·√2·SE):\n")
            L.append("| baseline | pairs | M&M better | within noise | M&M worse | worst M&M − baseline (points) |")
            L.append("|---|---|---|---|---|---|")
            for m in methods:
                c = fc[m]
                L.append(f"| {SHORT[m]} | {c['pairs']} | {c['wins']} | {c['ties']} | {c['losses']} | "
                         f"{c['worst']:.2f}{' (' + c['worst_at'] + ')' if c['worst_at'] and c['losses'] else ''} |")
            L.append("")
        ft = fixed_table(model, methods)
        L.append(f"### {name}: every allocator at fixed global targets, one-shot (drop in points, mean ± std over seeds)\n")
        hdr = "| target | " + " | ".join(SHORT[m] for m in methods) + " | RD − LAMP drop |"
        L.append(hdr)
        L.append("|" + "---|" * (hdr.count("|") - 1))
        for target, d in sorted(ft["drops"].items()):
            diff = [a - b for a, b in zip(d.get("rd", []), d.get("lamp", []))]
            L.append(f"| {target * 100:.0f}% | " + " | ".join(_ms(d.get(m, [])) for m in methods) + f" | {_ms(diff)} |")
        L.extend(strategy_lines(model))
        L.extend(sensitivity_lines(model))
        emptied = {k: v for k, v in ft["emptied"].items() if v}
        if emptied:
            L.append("\nLayers pruned to 100% (first seed): " + "; ".join(
                f"{SHORT[m]}@{t * 100:.0f}%: {len(v)} ({', '.join(v[:3])}{'…' if len(v) > 3 else ''})"
                for (t, m), v in sorted(emptied.items())))
        L.append("")
    L.append(targets_section(summary, methods, n_eval))
    return "\n".join(L) + "\n"


def strategy_lines(model: dict) -> list[str]:
    """Signal-driven strategies vs the interpolated strategy with the same overall sparsity (one-shot)."""
    pairs = (("signal_balanced", "balanced"), ("signal_p90", "percentile_90"), ("signal_max", "aggressive"))
    dense = model["dense"]
    rows = []
    for signal in ("magnitude", "gradient", "hybrid"):
        for new, ref in pairs:
            d_new, d_ref, sp = [], [], []
            for seed in model["seeds"].values():
                for r in seed["oneshot"]:
                    by = {(v["signal"], v["strategy"]): v for v in r["variants"]}
                    if (signal, new) in by and (signal, ref) in by:
                        d_new.append(100 * (dense - by[(signal, new)]["accuracy"]))
                        d_ref.append(100 * (dense - by[(signal, ref)]["accuracy"]))
                        sp.append(by[(signal, new)]["sparsity"])
            if d_new:
                diff = [b - a for a, b in zip(d_new, d_ref)]
                rows.append(f"| {signal} | `{new}` vs `{ref}` | {len(d_new)} | {_mean(sp) * 100:.1f}% | {_ms(d_new)} | "
                            f"{_ms(d_ref)} | {_ms(diff)} |")
    if not rows:
        return []
    return ["", "Signal-driven strategies (one global threshold on the signal, layers clipped to their ranges) vs the "
                "interpolated strategy with the same overall sparsity, one-shot drop in points (mean ± std over seeds and "
                "range sources; gain > 0: the signal-driven one loses less):", "",
            "| signal | strategies | runs | sparsity | drop (signal-driven) | drop (interpolated) | gain |",
            "|---|---|---|---|---|---|---|", *rows]


def sensitivity_lines(model: dict) -> list[str]:
    """Which layers break first: RD distortion of pruning one layer alone, vs how hard MAG/LAMP prune it."""
    seed0 = next(iter(model["seeds"].values()))
    sens = seed0.get("rd_sensitivity")
    if not sens:
        return []
    info = seed0["oneshot"][0].get("layer_info", {})
    rows = {(r["method"], r["target"]): r for r in seed0["fixed"]["rows"] if "error" not in r}
    top = sorted(sens, key=lambda n: -sens[n]["0.5"])[:6]
    L = ["", "Most sensitive layers (RD distortion of the logits when only that layer is pruned by magnitude, first "
         "seed), and the sparsity MAG / LAMP / RD give them at 50% and 70% overall:", "",
         "| layer | role | weights | D(50%) | D(90%) | MAG@50 | LAMP@50 | RD@50 | MAG@70 | LAMP@70 | RD@70 |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in top:
        cells = [f"`{n}`", info.get(n, {}).get("role", "?"), str(info.get(n, {}).get("numel", "?")),
                 f"{sens[n]['0.5']:.3g}", f"{sens[n]['0.9']:.3g}"]
        for t in (0.5, 0.7):
            for mth in ("global_magnitude", "lamp", "rd"):
                r = rows.get((mth, t))
                cells.append(f"{100 * r['layers'][n]:.0f}%" if r and n in r.get("layers", {}) else "–")
        L.append("| " + " | ".join(cells) + " |")
    return L


def targets_section(summary: dict, methods, n_eval: int) -> str:
    L = ["## Targets\n"]
    for sw_name, sw in summary["models"].items():
        if not sw_name.startswith("swin"):
            continue
        for mode in ("oneshot", "finetuned"):
            if not any(s[mode] for s in sw["seeds"].values()):
                L.append(f"- (a) {sw_name} 40–50% {mode}: **not measured** (the run stopped before this step).")
                continue
            t = band_table(sw, mode, methods).get((0.4, 0.5))
            if not t:
                L.append(f"- (a) {sw_name} 40–50% {mode}: **no M&M variant in the band** (ranges do not reach it).")
                continue
            ok = _mean(t["mm"]) <= 0.6 * _mean(t["global_magnitude"])
            vacuous = _mean(t["global_magnitude"]) <= 2 * math.sqrt(2) * binom_se(0.75, n_eval)
            L.append(f"- (a) {sw_name} 40–50% {mode}: best M&M drop {_ms(t['mm'])} vs MAG {_ms(t['global_magnitude'])} "
                     f"(ratio of means "
                     f"{'n/a' if _mean(t['global_magnitude']) <= 1e-9 else format(_mean(t['mm']) / _mean(t['global_magnitude']), '.2f')}"
                     f"; target ≤ 0.6): **{'met' if ok else 'not met'}**"
                     + (" — but vacuous: MAG's drop is within the noise, so the ratio is not meaningful." if vacuous else "."))
    for name, model in summary["models"].items():
        for mode in ("oneshot", "finetuned"):
            if not any(s[mode] for s in model["seeds"].values()):
                continue
            fc = front_check(model, mode, methods, n_eval)
            losses = {m: c["losses"] for m, c in fc.items() if c["losses"]}
            pairs = sum(c["pairs"] for c in fc.values())
            L.append(f"- (b) {name} {mode}: front vs matched baselines, {pairs} pairs: "
                     + ("**met** (no loss beyond noise)" if not losses else
                        "**not met**: losses beyond noise vs " + ", ".join(f"{SHORT[m]} ({n})" for m, n in losses.items())))
    for name, model in summary["models"].items():
        ft = fixed_table(model, methods)["drops"]
        parts = []
        ok_all = True
        for target, d in sorted(ft.items()):
            if "rd" not in d or "lamp" not in d:
                continue
            diff = [a - b for a, b in zip(d["rd"], d["lamp"])]
            noise = 2 * math.sqrt(2) * binom_se(0.85, n_eval)
            ok = _mean(diff) <= max(noise / max(1, math.sqrt(len(diff))), 0.0) or _mean(diff) <= 0
            ok_all &= ok
            parts.append(f"{target * 100:.0f}%: RD {_ms(d['rd'])} vs LAMP {_ms(d['lamp'])} {'✓' if ok else '✗'}")
        if not parts:
            L.append(f"- (c) {name}: **not measured** (the run stopped before the fixed-target step).")
            continue
        L.append(f"- (c) {name}: RD/DP vs LAMP drop one-shot — " + "; ".join(parts) + f": **{'met' if ok_all else 'not met'}**.")
    return "\n".join(L) + "\n"


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
    methods = tuple(summary["args"]["baselines"])
    for name, model in summary["models"].items():
        plot_model(name, model, methods, Path(args.img_dir) / f"quality_{name}.png")
    doc = write_doc(summary, args)
    old = Path(args.doc).read_text() if Path(args.doc).is_file() else ""
    if NOTES_MARKER in old:  # hand-written analysis below the marker survives a regeneration
        doc += "\n" + old[old.index(NOTES_MARKER):]
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
    Path(args.doc).write_text(doc)
    print(f"wrote {args.doc} ({summary.get('wall_s', 0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
