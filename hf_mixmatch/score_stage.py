"""The run's scoring stage: the sensitivity signals (cached in the output dir by fingerprint) and, for
``--ranges rd``, RD/DP's distortion curves (cached by the RD module)."""

from __future__ import annotations

import time
from pathlib import Path

from .config import PruneConfig
from .data import PreparedData
from .errors import ConfigError
from .outdir import record
from .signals import compute_scores, fingerprint, load_scores, save_scores


def run_scores(config: PruneConfig, model, layers, data: PreparedData, acc, out: Path, timings: dict,
            precision: str = "fp32") -> tuple[dict, dict]:
    """Compute the signals the run needs, or reuse the ones cached in the output dir.

    Also returns ``{signal: why}`` for the optional signals that could not be computed (GraSP on a model
    with an operation that has no second derivative); the observed ranges are then built without them.
    """
    from .ranges import detect_family

    needed = set(config.signals) | {"magnitude"}
    if config.ranges == "observed" or (config.ranges == "preset" and detect_family(layers) is None):
        needed |= {"snip", "grasp"}
    from .allocators import ALLOCATOR_SIGNALS

    needed |= {s for b in config.baselines for s in ALLOCATOR_SIGNALS.get(b, ())}
    t0 = time.perf_counter()
    fp = fingerprint(model, layers, data.calib, batch_size=config.batch_size, train_mode=config.grad_train_mode,
                     **({} if precision == "fp32" else {"precision": precision}))
    cache = out / "scores.safetensors"
    scores = load_scores(cache, fingerprint=fp)
    timings["scoring_cached"] = scores is not None and needed <= set(scores)
    if not timings["scoring_cached"]:
        scores = compute_scores(model, layers, data.calib, signals=tuple(sorted(needed)), batch_size=config.batch_size,
                                accelerator=acc, train_mode=config.grad_train_mode, progress=config.progress,
                                precision=precision)
        if acc.is_main_process:
            record(out, cache.name, cache=True)
            save_scores(scores, cache, fingerprint=fp)
    timings["scoring_s"] = time.perf_counter() - t0
    missing = needed - set(scores)  # only optional criteria can be missing (compute_scores raises otherwise)
    if missing & set(config.baselines):
        raise ConfigError(f"the {sorted(missing & set(config.baselines))} baseline needs a second derivative that an "
                          "operation of this model lacks: drop it from --baselines")
    return scores, {s: "an operation of the model has no second derivative" for s in sorted(missing)}


def rd_grid(config: PruneConfig):
    from .rd import default_grid

    return default_grid(config.rd_grid_step)


def record_rd_caches(out: Path, acc) -> None:
    """The RD curve caches are named by the RD module: add the ones now in the run dir to its manifest."""
    if acc.is_main_process:
        record(out, *sorted(p.name for p in out.glob("rd_curves_*.safetensors")), cache=True)


def rd_curves(config: PruneConfig, model, layers, data: PreparedData, acc, out: Path, timings: dict) -> dict:
    """RD/DP distortion curves on the calibration images (cached in the output dir), for ``--ranges rd``; each
    layer pruned by ``config.rd_distortion`` (magnitude, or SparseGPT's reconstruction)."""
    from .allocators import ALLOCATORS

    t0 = time.perf_counter()
    rd = ALLOCATORS["rd"].prepare(model, data.calib.tensors[0], grid=rd_grid(config), reduction=config.rd_reduction,
                                  cache_dir=out if acc.is_main_process else None, batch_size=config.batch_size,
                                  layers=layers, method=config.rd_distortion)
    timings["rd_curves_s"] = time.perf_counter() - t0
    record_rd_caches(out, acc)
    return rd.curves
