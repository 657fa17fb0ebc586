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
3. The same methods (and Wanda's score on LAMP's allocation) at fixed global targets (``--fixed-targets``).

Writes ``runs/bench_recon/summary.json`` and the section between the ``recon`` markers of
``docs/BENCHMARKS_quality.md`` (below the hand-written marker, so ``benchmark_quality.py`` keeps it).

    OMP_NUM_THREADS=1 nice -n 10 python scripts/benchmark_reconstruct.py --models vit,resnet --seeds 0
    python scripts/benchmark_reconstruct.py --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
from fashion_mnist import DEFAULT_ROOT, read_split  # noqa: E402
from train_reference import preprocess  # noqa: E402

MASKED = ("global_magnitude", "erk", "lamp", "snip", "wanda")  # matched to the one-shot front
MASKED_VS_RECON = ("lamp", "snip", "wanda")  # the strongest masking rivals, also matched to the reconstructed front
FIXED_MASKED = ("lamp", "snip", "wanda")
RECON = ("sparsegpt", "lamp", "erk")  # allocations + SparseGPT ("sparsegpt" = uniform + SparseGPT)
SHORT = {"global_magnitude": "MAG", "uniform": "uniform", "erk": "ERK", "lamp": "LAMP", "snip": "SNIP",
         "wanda": "Wanda", "sparsegpt": "SparseGPT", "wanda_lamp": "Wanda@LAMP", "rd": "RD", "rdsgpt": "RD-rec"}
# this project's own allocators, shown for reference but not rivals in the verdicts (RD/DP on SparseGPT-distortion
# curves: what --ranges rd --rd-distortion sparsegpt takes its ranges from)
OWN = ("rdsgpt+sgpt",)
BEGIN, END = "<!-- recon:begin (scripts/benchmark_reconstruct.py) -->", "<!-- recon:end -->"
NOTES_MARKER = "<!-- analysis: hand-written, kept when the tables above are regenerated -->"


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
    p.add_argument("--min-sparsity", type=float, default=0.5, help="front members below this are not re-tested")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--fixed-targets", default="0.5,0.7,0.8,0.9")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench_recon"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "BENCHMARKS_quality.md"))
    p.add_argument("--stages", default="fronts,fixed", help="fronts (M&M run + matched baselines), fixed (targets), "
                   "finetune (with fronts: every reconstructed front member >= --finetune-min and its strongest "
                   "rivals, each fine-tuned with the same budget)")
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
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--finetune-min", type=float, default=0.8, help="fine-tune front members at >= this sparsity")
    p.add_argument("--reuse", action="store_true", help="reuse the M&M run's results.json in the runs dir if present")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------- data


def splits(root: str, seed: int, calib: int, select: int, test: int | None):
    """Calibration and selection from training images 20000.. (the reference models train on the first 20000),
    disjoint, drawn with ``seed``; test: the first ``test`` test images."""
    x_u8, y = read_split("train", root)
    pool = 20000 + torch.randperm(len(x_u8) - 20000, generator=torch.Generator().manual_seed(seed)).numpy()
    ci, si = pool[:calib], pool[calib : calib + select]
    xt, yt = read_split("test", root, samples=test)

    def ds(x, labels):
        return TensorDataset(preprocess(x), torch.from_numpy(np.asarray(labels, dtype=np.int64)))

    return ds(x_u8[ci], y[ci]), ds(x_u8[si], y[si]), ds(xt, yt)


# ------------------------------------------------------------------------------------------------ running


class Bench:
    def __init__(self, model_dir: Path, calib, select, test, args):
        from hf_mixmatch.layers import list_prunable, weights_of
        from hf_mixmatch.masks import WeightStash
        from hf_mixmatch.models import load_model

        self.loaded = load_model(str(model_dir))
        self.model = self.loaded.model.eval()
        self.layers = list_prunable(self.model, num_labels=self.loaded.num_labels)
        self.weights = weights_of(self.model, self.layers)
        self.stash = WeightStash(self.model, self.layers)
        self.calib, self.select, self.test, self.args = calib, select, test, args
        self.scores = None
        self.dense_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.train = None  # the images the reference model was trained on, for the fine-tuning stage
        self.rd_grid = None  # the RD grid of the "rdsgpt" curves (--rd-own)

    def evaluate(self, data) -> float:
        from hf_mixmatch.evaluate import evaluate

        return evaluate(self.model, data, batch_size=500)["accuracy"]

    def prune(self, sparsities: dict, *, rank_by: str | None, reconstruct: bool) -> None:
        """Apply an allocation in place: SparseGPT at its per-layer counts, or masks ranked by ``rank_by``."""
        from hf_mixmatch.masks import apply_sparsities
        from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct as run_reconstruct

        if reconstruct:
            run_reconstruct(self.model, self.layers, sparsities, self.calib.tensors[0],
                            settings=ReconstructSettings(batch_size=self.args.batch_size))
        else:
            apply_sparsities(self.model, self.layers, sparsities, self.scores[rank_by])

    def measure(self, sparsities: dict, *, rank_by: str | None, reconstruct: bool, data) -> dict:
        """Mask (by ``rank_by``) or reconstruct, measure sparsity and accuracy on ``data``, restore."""
        from hf_mixmatch.masks import measure_sparsity

        t0 = time.perf_counter()
        self.prune(sparsities, rank_by=rank_by, reconstruct=reconstruct)
        t_apply = time.perf_counter() - t0
        overall, _ = measure_sparsity(self.model, self.layers)
        acc = self.evaluate(data)
        self.stash.restore()
        return {"sparsity": overall, "accuracy": acc, "apply_s": round(t_apply, 3)}

    def baseline(self, method: str, target: float, *, reconstruct: bool, rank_by: str | None = None,
                 finetune: bool = False) -> dict:
        from hf_mixmatch.allocators import RDAllocator, allocate

        if method == "rdsgpt":
            alloc = RDAllocator(self.scores["rdsgpt"], grid=self.rd_grid)(weights=self.weights, layers=self.layers,
                                                                          target=target)
        else:
            alloc = allocate(method, weights=self.weights, layers=self.layers, target=target, scores=self.scores)
        recon = reconstruct or bool(alloc.info.get("reconstruct"))
        if finetune:
            return self.finetuned(alloc.sparsities, rank_by=rank_by or alloc.rank_by, reconstruct=recon)
        return self.measure(alloc.sparsities, rank_by=rank_by or alloc.rank_by, reconstruct=recon, data=self.test)

    def finetuned(self, sparsities: dict, *, rank_by: str | None, reconstruct: bool) -> dict:
        """Mask (or reconstruct), fine-tune ``--finetune-steps`` steps keeping the mask (the project's
        ``finetune``: AdamW, early stopping on the selection split), measure on test, restore every weight."""
        from hf_mixmatch.finetune import finetune
        from hf_mixmatch.masks import measure_sparsity

        if self.train is None:
            x_u8, y = read_split("train", self.args.fmnist_root, samples=20000)
            self.train = TensorDataset(preprocess(x_u8), torch.from_numpy(np.asarray(y, dtype=np.int64)))
        t0 = time.perf_counter()
        self.prune(sparsities, rank_by=rank_by, reconstruct=reconstruct)
        oneshot = self.evaluate(self.test)
        steps = self.args.finetune_steps
        ft = finetune(self.model, self.layers, self.train, self.select, steps=steps, lr=self.args.finetune_lr,
                      batch_size=self.args.batch_size, eval_every=max(1, steps // 3), patience=3, seed=0, progress=False)
        overall, _ = measure_sparsity(self.model, self.layers)
        acc = self.evaluate(self.test)
        self.model.load_state_dict(self.dense_state)
        self.model.eval()
        return {"sparsity": overall, "accuracy": acc, "oneshot": oneshot, "best_step": ft.best_step,
                "time_s": round(time.perf_counter() - t0, 1)}


def run_model(name: str, seed: int, args) -> dict:
    from hf_mixmatch.data import PreparedData

    model_dir = Path(args.models_dir) / name
    calib, select, test = splits(args.fmnist_root, seed, args.calib_samples, args.select_samples, args.test_samples)
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
    summary = {"model": name, "seed": seed, **sizes, "batch_size": args.batch_size,
               "n_select": len(select), "rows": [], "fixed": {},
               "train_log": {k: log.get(k) for k in ("epochs", "train_samples", "test_accuracy")}}
    if "fronts" in stages:
        summary.update(_fronts(name, seed, bench, out, data, args))
    if "fixed" in stages:
        if bench.scores is None:
            from hf_mixmatch.signals import compute_scores

            bench.scores = compute_scores(bench.model, bench.layers, calib, batch_size=args.batch_size, progress=False,
                                          signals=("magnitude", "snip", "activation", "activation_row"))
        summary["fixed"] = _fixed(name, seed, bench, args)
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
                          reconstruct="sparsegpt", reconstruct_depth=args.depth, rd_distortion=args.rd_distortion)
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
    if args.rd:  # RD/DP's allocation reads its distortion curves as the "rd" score
        from hf_mixmatch.allocators import ALLOCATORS
        from hf_mixmatch.rd import default_grid

        prepared = ALLOCATORS["rd"].prepare(bench.model, bench.calib.tensors[0], layers=bench.layers,
                                            grid=default_grid(args.rd_grid_step), cache_dir=out / "rd",
                                            batch_size=args.batch_size)
        bench.scores["rd"] = prepared.curves
    if args.rd_own:  # the run's own curves when it measured them (same calibration images, grid and key)
        from hf_mixmatch.allocators import ALLOCATORS
        from hf_mixmatch.rd import default_grid

        bench.rd_grid = default_grid(args.rd_grid_step)
        bench.scores["rdsgpt"] = ALLOCATORS["rd"].prepare(bench.model, bench.calib.tensors[0], layers=bench.layers,
                                                          grid=bench.rd_grid, cache_dir=out, batch_size=args.batch_size,
                                                          method="sparsegpt").curves
    unique = [v for v in res["variants"] if "same_as" not in v]
    masked_pts = [{"id": v["id"], "sparsity": v["sparsity"], "accuracy": (v.get("masked") or v)["accuracy"]}
                  for v in unique]
    by_id = {v["id"]: v for v in unique}
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
            m = bench.measure(v["target_layers"], rank_by=v["signal"], reconstruct=recon, data=bench.test)
            row = {"front": kind, "id": vid, "reconstructed": recon, "select": v["accuracy"] if kind == "recon"
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
        ft = {"mm": bench.finetuned(v["target_layers"], rank_by=v["signal"], reconstruct=row["reconstructed"])}
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
    for target in (float(t) for t in args.fixed_targets.split(",")):
        entry = {}
        for method in FIXED_MASKED:
            entry[method] = bench.baseline(method, target, reconstruct=False)
        entry["wanda_lamp"] = bench.baseline("lamp", target, reconstruct=False, rank_by="activation")
        for method in RECON:
            entry[_recon_key(method)] = bench.baseline(method, target, reconstruct=True)
        fixed[f"{target:g}"] = entry
        print(f"[{name} s{seed}] fixed {target:g}: " + ", ".join(f"{k} {e['accuracy']:.4f}" for k, e in entry.items()),
              flush=True)
    return fixed


# ------------------------------------------------------------------------------------------------ report


def noise(acc: float, n: int) -> float:
    """2 * sqrt(2) * SE: two accuracies on the same n test images differ beyond noise past this."""
    return 2 * math.sqrt(2) * math.sqrt(max(acc * (1 - acc), 1e-12) / n)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def write_section(summary: dict) -> str:
    lines = [BEGIN, "## Activation-aware scores and reconstruction (Wanda, SparseGPT) inside Mix-and-Match", "",
             "Generated by `scripts/benchmark_reconstruct.py` (one-shot; no fine-tuning; the command of each model "
             "is under its heading; `--report-only` rebuilds this section from `runs/bench_recon/summary_*.json`).", "",
             "Fronts chosen on the selection split (training images never trained on nor calibrated on), reported "
             "on test. Baselines evaluated on test at each front member's measured sparsity. `+SGPT`: the "
             "allocation's per-layer sparsities, mask and kept weights from SparseGPT (exact per-layer counts). "
             "Noise: 2·√2·SE of the best baseline (binomial SE on the test images). `RD-rec +SGPT` (`--rd-own`): "
             "RD/DP on reconstruction-aware curves (`--rd-distortion sparsegpt`) + SparseGPT — this project's own "
             "allocator, shown for reference and never counted as the best baseline.", ""]
    for r in summary["runs"]:
        tl = r["train_log"]
        dense, n_test = r.get("dense") or r["fixed_dense"], r.get("n_test") or r["fixed_n_test"]
        lines += [f"### {r['model']} (seed {r['seed']}): dense test {_pct(dense['test'])}% on {n_test} "
                  f"test images; trained {tl.get('epochs')} epochs on {tl.get('train_samples')} images", "",
                  *[f"    {c}" for c in r["commands"]], ""]
        if "reconstruct" in r:
            rec = r["reconstruct"]
            lines += [f"{r['n_variants']} distinct variants; reconstructed by the rule ({rec['rule']}): "
                      f"{len(rec['candidates'])} candidates, {rec.get('reconstructions', len(rec['candidates']))} "
                      f"distinct allocations. Time: M&M run {r['mixmatch_s']:.0f} s wall (variants "
                      f"{r['timings'].get('variants_s', 0):.0f} s, reconstruction {r['timings'].get('reconstruct_s', 0):.0f}"
                      " s).", ""]
        cols = list(dict.fromkeys(c for row in r["rows"] for c in row["baselines"]))
        recon_cols = [c for c in cols if c == "sparsegpt" or c.endswith("+sgpt")]
        if r["rows"]:
            lines += ["| front | variant | sparsity | M&M test | " + " | ".join(SHORT.get(c.split("+")[0], c) +
                      (" +SGPT" if c.endswith("+sgpt") else "") for c in cols) + " | best baseline | Δ | noise | verdict |",
                      "|" + "---|" * (8 + len(cols))]
            for row in r["rows"]:
                bl = row["baselines"]
                pool = {k: v for k, v in bl.items() if k not in OWN and (row["front"] == "recon" or k not in recon_cols)}
                best_m = max(pool, key=pool.get)
                delta = row["test"] - pool[best_m]
                nz = noise(pool[best_m], r["n_test"])
                verdict = _verdict(delta, nz)
                cells = [_pct(bl[c]) if c in bl else "–" for c in cols]
                lines.append(f"| {'M&M+SGPT' if row['front'] == 'recon' else 'M&M one-shot'} | {row['id']} | "
                             f"{row['sparsity']:.3f} | **{_pct(row['test'])}** | " + " | ".join(cells) +
                             f" | {SHORT.get(best_m.split('+')[0], best_m)}{' +SGPT' if best_m.endswith('+sgpt') else ''}"
                             f" {_pct(pool[best_m])} | {100 * delta:+.2f} | {100 * nz:.2f} | {verdict} |")
        if r.get("finetuned"):
            ft0 = r["finetuned"][0]
            lines += ["", f"After the same fine-tuning budget ({r['model']}, seed {r['seed']}: {ft0['steps']} AdamW steps "
                      f"at lr {ft0['lr']:g}, batch {r.get('batch_size', 64)}, on the 20000 training images, early "
                      "stopping on the selection split; test accuracy %, one-shot → fine-tuned):", "",
                      "| variant | sparsity | M&M+SGPT | LAMP +SGPT | ERK +SGPT | best masking | Δ vs best | noise | verdict |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for f in r["finetuned"]:
                res = f["results"]
                masked = next(k for k in res if k not in ("mm", "lamp+sgpt", "erk+sgpt"))
                rivals = {k: e["accuracy"] for k, e in res.items() if k != "mm"}
                best = max(rivals, key=rivals.get)
                delta, nz = res["mm"]["accuracy"] - rivals[best], noise(rivals[best], r["n_test"])
                cell = lambda e: f"{_pct(e['oneshot'])} → {_pct(e['accuracy'])}"  # noqa: E731
                lines.append(f"| {f['id']} | {f['sparsity']:.3f} | **{cell(res['mm'])}** | {cell(res['lamp+sgpt'])} | "
                             f"{cell(res['erk+sgpt'])} | {SHORT.get(masked, masked)} {cell(res[masked])} | "
                             f"{100 * delta:+.2f} | {100 * nz:.2f} | {_verdict(delta, nz)} |")
        if r["fixed"]:
            lines += ["", f"Fixed global targets ({r['model']}, test accuracy % on "
                      f"{r.get('fixed_n_test') or r['n_test']} test images):", ""]
            methods = list(next(iter(r["fixed"].values())))
            lines += ["| target | " + " | ".join(SHORT.get(m.split("+")[0], m) + (" +SGPT" if m.endswith("+sgpt") else "")
                                               for m in methods) + " |", "|" + "---|" * (1 + len(methods))]
            for t, entry in r["fixed"].items():
                lines.append(f"| {t} | " + " | ".join(_pct(entry[m]["accuracy"]) for m in methods) + " |")
        lines.append("")
    lines += _pooled(summary["runs"])
    lines.append(END)
    return "\n".join(lines)


def _verdict(delta: float, nz: float) -> str:
    return "above" if delta > nz else ("below" if delta < -nz else "tie")


def _pooled(runs: list[dict]) -> list[str]:
    """Per model, over every seed: the reconstructed front's rows at >= 80% against the best baseline there."""
    lines = ["### All seeds: the reconstructed M&M front at ≥ 80% sparsity against the best baseline "
             "(masking or + SparseGPT)", "",
             "| model | seeds | rows | above | tie | below | mean Δ | min Δ | max Δ | noise (range) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in runs):
        deltas, noises, seeds = [], [], []
        for r in (r for r in runs if r["model"] == model):
            seeds.append(str(r["seed"]))
            for row in r["rows"]:
                if row["front"] != "recon" or row["sparsity"] < 0.8:
                    continue
                best = max(v for k, v in row["baselines"].items() if k not in OWN)
                deltas.append(row["test"] - best)
                noises.append(noise(best, r["n_test"]))
        if not deltas:
            continue
        verdicts = [_verdict(d, n) for d, n in zip(deltas, noises)]
        lines.append(f"| {model} | {', '.join(seeds)} | {len(deltas)} | {verdicts.count('above')} | "
                     f"{verdicts.count('tie')} | {verdicts.count('below')} | {100 * sum(deltas) / len(deltas):+.2f} | "
                     f"{100 * min(deltas):+.2f} | {100 * max(deltas):+.2f} | {100 * min(noises):.2f}–{100 * max(noises):.2f} |")
    return lines + [""]


def update_doc(doc_path: Path, section: str) -> None:
    old = doc_path.read_text() if doc_path.exists() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END):]
    else:
        if NOTES_MARKER not in old:
            old += "\n" + NOTES_MARKER + "\n"
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    doc_path.write_text(new)


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
    merged: dict[tuple, dict] = {}  # the stages of one model and seed may come from separate invocations
    for f in sorted(runs_dir.glob("summary_*.json")):
        for r in json.loads(f.read_text())["runs"]:
            m = merged.setdefault((r["model"], r["seed"]), {**r, "commands": [], "rows": []})
            m["commands"].append(r["command"])
            rows = {(x["front"], x["id"]): x for x in m["rows"]}  # a later invocation may add baseline columns
            for x in r.get("rows", []):
                before = rows.get((x["front"], x["id"]), {}).get("baselines", {})
                rows[(x["front"], x["id"])] = {**x, "baselines": {**before, **x["baselines"]}}
            m.update({k: v for k, v in r.items() if v and k not in ("command", "commands", "rows")})
            m["rows"] = sorted(rows.values(), key=lambda x: (x["front"] != "oneshot", x["sparsity"]))
    runs = list(merged.values())
    update_doc(Path(args.doc), write_section({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
