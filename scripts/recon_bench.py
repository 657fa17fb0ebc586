"""The building blocks of ``scripts/benchmark_reconstruct.py``: the benchmark's data splits and ``Bench``, which
applies an allocation (masks or SparseGPT), measures it on test, fine-tunes it with the project's ``finetune`` and
restores the dense weights."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from fashion_mnist import read_split
from train_reference import preprocess


# --------------------------------------------------------------------------------------------------- data


def splits(root: str, seed: int, calib: int, select: int, test: int | None, extra_test: int = 0):
    """Calibration and selection from training images 20000.. (the reference models train on the first 20000),
    disjoint, drawn with ``seed``; test: the first ``test`` test images. ``extra_test``: the last ``extra_test``
    training images (never trained on) join the test pool, and calibration / selection are drawn from
    20000..60000-extra_test, so the pool never overlaps them: a larger held-out pool from the same distribution
    narrows the noise band of every comparison."""
    x_u8, y = read_split("train", root)
    end = len(x_u8) - extra_test
    if extra_test < 0 or end - 20000 < calib + select:
        raise SystemExit(f"--extra-test must be in 0..{len(x_u8) - 20000 - calib - select}, got {extra_test}")
    pool = 20000 + torch.randperm(end - 20000, generator=torch.Generator().manual_seed(seed)).numpy()
    ci, si = pool[:calib], pool[calib : calib + select]
    xt, yt = read_split("test", root, samples=test)
    if extra_test:
        xt, yt = np.concatenate([xt, x_u8[end:]]), np.concatenate([np.asarray(yt), np.asarray(y)[end:]])

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

    def prune(self, sparsities: dict, *, rank_by: str | None, reconstruct: bool, target: str | None = None,
              refit: int | None = None) -> None:
        """Apply an allocation in place: SparseGPT at its per-layer counts, or masks ranked by ``rank_by``.
        ``target``, ``refit``: the reconstruction's (default: ``--baseline-target``, ``--baseline-refit``, the
        baselines')."""
        from hf_mixmatch.masks import apply_sparsities
        from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct as run_reconstruct

        if reconstruct:
            target = target or getattr(self.args, "baseline_target", "pruned")
            refit = getattr(self.args, "baseline_refit", 0) if refit is None else refit
            run_reconstruct(self.model, self.layers, sparsities, self.calib.tensors[0],
                            settings=ReconstructSettings(batch_size=self.args.batch_size, target=target, refit=refit))
        else:
            apply_sparsities(self.model, self.layers, sparsities, self.scores[rank_by])
        if getattr(self.args, "bn_recalibrate", False):  # as the M&M run does with --bn-recalibrate (guard included)
            from hf_mixmatch.bn_recalibrate import BatchNormRecalibrator

            BatchNormRecalibrator(self.model, *self.calib.tensors, batch_size=self.args.batch_size)(self.model)

    def measure(self, sparsities: dict, *, rank_by: str | None, reconstruct: bool, data,
                target: str | None = None, refit: int | None = None) -> dict:
        """Mask (by ``rank_by``) or reconstruct, measure sparsity and accuracy on ``data``, restore."""
        from hf_mixmatch.masks import measure_sparsity

        t0 = time.perf_counter()
        self.prune(sparsities, rank_by=rank_by, reconstruct=reconstruct, target=target, refit=refit)
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

    def add_rd_scores(self, out: Path, *, rd: bool, own: bool) -> None:
        """RD/DP's distortion curves as scores: "rd" (magnitude curves, the paper's; cached in ``out/rd``) and
        "rdsgpt" (SparseGPT-distortion curves, cached in ``out`` where the M&M run with ``--rd-distortion
        sparsegpt`` keeps its own: same calibration images, grid and key)."""
        from hf_mixmatch.allocators import ALLOCATORS
        from hf_mixmatch.rd import default_grid

        grid = default_grid(self.args.rd_grid_step)
        prepare = ALLOCATORS["rd"].prepare
        if rd and "rd" not in self.scores:
            self.scores["rd"] = prepare(self.model, self.calib.tensors[0], layers=self.layers, grid=grid,
                                        cache_dir=out / "rd", batch_size=self.args.batch_size).curves
        if own and "rdsgpt" not in self.scores:
            self.rd_grid = grid
            self.scores["rdsgpt"] = prepare(self.model, self.calib.tensors[0], layers=self.layers, grid=grid,
                                            cache_dir=out, batch_size=self.args.batch_size, method="sparsegpt").curves

    def finetuned(self, sparsities: dict, *, rank_by: str | None, reconstruct: bool, target: str | None = None,
                  refit: int | None = None) -> dict:
        """Mask (or reconstruct), fine-tune ``--finetune-steps`` steps keeping the mask (the project's
        ``finetune``: AdamW, early stopping on the selection split), measure on test, restore every weight."""
        from hf_mixmatch.finetune import finetune
        from hf_mixmatch.masks import measure_sparsity

        if self.train is None:
            x_u8, y = read_split("train", self.args.fmnist_root, samples=20000)
            self.train = TensorDataset(preprocess(x_u8), torch.from_numpy(np.asarray(y, dtype=np.int64)))
        t0 = time.perf_counter()
        self.prune(sparsities, rank_by=rank_by, reconstruct=reconstruct, target=target, refit=refit)
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
