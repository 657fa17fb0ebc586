"""``scripts/benchmark_quality.py``'s runs: one reference model and one seed (:class:`Bench`: evaluate and fine-tune
allocations at fixed targets) and one Mix-and-Match run through the pipeline (:func:`run_one`)."""

from __future__ import annotations

import time
from pathlib import Path


def slim(row: dict) -> dict:
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


def run_one(args, model_dir: Path, data, seed: int, ranges: str, *, out: Path, acc) -> dict:
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
