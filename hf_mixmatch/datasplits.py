"""Which splits a run uses and which rows of them: calibration, evaluation, selection and fine-tuning
draws, all seeded and identical for any number of processes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .errors import DatasetError

EVAL_SPLIT_NAMES = ("test", "validation", "valid", "val", "eval")
CALIB_SPLIT_NAMES = ("train", "training")
SELECT_SAMPLES = 2000  # default size of the selection data (at most a fifth of the training split when held out)


def resolve_splits(ds, calib_split: str | None, eval_split: str | None) -> tuple[str, str]:
    """Pick the calibration (training) and evaluation splits; warn on test leakage."""
    names = list(ds.keys())
    for requested in (calib_split, eval_split):
        if requested is not None and requested not in names:
            raise DatasetError(f"split '{requested}' not in the dataset (splits: {names}): pass one of them")
    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLIT_NAMES if s in names), None)
        if eval_split is None:
            raise DatasetError(f"no evaluation split found (splits: {names}): pass --eval-split NAME")
    if calib_split is None:
        calib_split = next((s for s in CALIB_SPLIT_NAMES if s in names and s != eval_split), None)
        if calib_split is None:
            calib_split = next((s for s in names if s != eval_split), None)
        if calib_split is None:
            raise DatasetError(
                f"no training split to calibrate on (splits: {names}): pass --calib-split NAME"
                " (calibrating on the evaluation split leaks test data)"
            )
    if calib_split == eval_split:
        warnings.warn(
            f"calibrating on the evaluation split '{eval_split}': accuracies are optimistic (test leakage)",
            stacklevel=2,
        )
    return calib_split, eval_split


def resolve_select_split(names, select_split: str | None, calib_split: str, eval_split: str) -> tuple[str | None, bool]:
    """``(split the front is chosen on or None, held out of the calibration split?)``.

    Default: ``validation`` when the dataset also has ``test`` (and evaluates on it), else a held-out
    slice of the calibration split; ``"none"`` chooses on the evaluation split (selection bias)."""
    if select_split == "none":
        return None, False
    if select_split is not None:
        if select_split not in names:
            raise DatasetError(f"--select-split '{select_split}' not in the dataset (splits: {list(names)}): pass one "
                               "of them, or 'none'")
        if select_split == eval_split:
            warnings.warn(f"choosing the front on the evaluation split '{eval_split}': its accuracies are optimistic "
                          "(selection bias)", stacklevel=3)
            return None, False
        return select_split, select_split == calib_split
    if "validation" in names and "test" in names and eval_split == "test" and calib_split != "validation":
        return "validation", False
    if calib_split == eval_split:
        return None, False
    return calib_split, True


def _draw(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """A seeded random draw of ``n`` of ``range(n_total)`` (all when None), in random order."""
    return rng.permutation(n_total)[: n if n is not None else n_total]


@dataclass
class _Rows:
    calib: np.ndarray
    eval: np.ndarray
    train: np.ndarray | None
    select: np.ndarray | None


def draw_rows(ds, calib_split: str, eval_split: str, select_split: str | None, heldout: bool, *, seed: int,
               calib_samples: int | None, eval_samples: int | None, train_samples: int | None,
               select_samples: int | None) -> _Rows:
    """Seeded draws. Calibration and fine-tuning rows stay in random order, so every batch mixes classes
    (whatever the split's order); evaluation / selection rows are sorted (sequential reads)."""
    n_calib_split = len(ds[calib_split])
    perm = np.random.default_rng(seed).permutation(n_calib_split)
    n_cal = n_calib_split if calib_samples is None else min(calib_samples, n_calib_split)
    select = None
    if select_split is not None and heldout:  # the tail of the permutation: calibration rows do not move
        n_sel = min(SELECT_SAMPLES, n_calib_split // 5) if select_samples is None else select_samples
        n_sel = min(n_sel, n_calib_split - n_cal)
        if n_sel > 0:
            select, perm = np.sort(perm[n_calib_split - n_sel:]), perm[: n_calib_split - n_sel]
    elif select_split is not None:
        n = len(ds[select_split])
        select = np.sort(_draw(n, min(SELECT_SAMPLES, n) if select_samples is None else select_samples,
                               np.random.default_rng(seed + 3)))
    calib = perm[:n_cal]
    evals = np.sort(_draw(len(ds[eval_split]), eval_samples, np.random.default_rng(seed + 1)))
    train = None
    if train_samples is not None:
        train = np.random.default_rng(seed + 2).permutation(perm)[:train_samples]
    return _Rows(calib=calib, eval=evals, train=train, select=select)
