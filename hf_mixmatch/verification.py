"""``hf-mixmatch verify`` and :func:`verify`: re-measure a variant's accuracy and sparsity against its claims.

The variant is opened with :func:`hf_mixmatch.loading.from_pretrained` (without its sparsity check: here the
sparsity is measured and reported), evaluated on the dataset with its own preprocessing, and compared.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .errors import ModelLoadError
from .loading import SPARSITY_TOLERANCE, from_pretrained, is_structured, measure_model_sparsity


@dataclass
class VerifyReport:
    """Claimed vs measured numbers of a variant; ``ok`` when both agree within the tolerances."""

    claimed_accuracy: float | None
    measured_accuracy: float
    claimed_sparsity: float | None
    measured_sparsity: float
    ok: bool
    claimed_top5: float | None = None
    measured_top5: float | None = None
    tolerance: float = 0.005
    eval_split: str | None = None
    eval_samples: int | None = None

    def __post_init__(self) -> None:
        from .errors import ConfigError

        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise ConfigError(f"--tolerance must be a finite number >= 0, got {self.tolerance}")

    def to_dict(self) -> dict:
        return asdict(self)


def _preprocess_for(model: nn.Module, library: str, folder: Path):
    """The variant's own preprocessing (its processor file / timm pretrained_cfg), as its library reads it."""
    from .adapters import get_adapter

    return get_adapter(library).transform(model, folder)


def _id2label(model) -> dict[int, str]:
    """The model's class names (transformers config), so verify matches labels the way the run did."""
    names = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {int(k): str(v) for k, v in names.items()}


def verify(repo_id_or_path: str | os.PathLike, dataset: str, *, eval_split: str | None = None,
           eval_samples: int | None = None, batch_size: int = 64, tolerance: float = 0.005,
           image_column: str | None = None, label_column: str | None = None, revision: str | None = None,
           token: str | None = None) -> VerifyReport:
    """Re-measure a variant's accuracy on ``dataset`` and its sparsity, and compare with its claims.

    The split, sample count and seed default to the recipe's, so the same evaluation subset is used.
    """
    from .data import load_image_dataset, prepare_splits
    from .evaluate import evaluate

    from .errors import ConfigError

    if not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"--tolerance must be a finite number >= 0, got {tolerance}")
    if eval_samples is not None and eval_samples < 1 or batch_size < 1:
        raise ConfigError("--eval-samples and --batch-size must be >= 1")
    model = from_pretrained(repo_id_or_path, revision=revision, token=token, check_sparsity=False)
    recipe = model.mixmatch_recipe or {}
    claims = model.mixmatch_claims
    folder = Path(model.mixmatch_dir)
    preprocess = _preprocess_for(model, model.mixmatch_library, folder)
    ds, img, lab = load_image_dataset(dataset, image_column=image_column, label_column=label_column)
    split = eval_split or (recipe.get("eval_split") if recipe.get("eval_split") in ds else None)
    samples = eval_samples if eval_samples is not None else recipe.get("eval_samples")
    calib = recipe.get("calib_split") if recipe.get("calib_split") in ds and recipe.get("calib_split") != split else None
    num_labels = getattr(getattr(model, "config", None), "num_labels", None) or getattr(model, "num_classes", None)
    data = prepare_splits(ds, preprocess, calib_split=calib, eval_split=split, calib_samples=1, eval_samples=samples,
                          seed=int(recipe.get("seed", 0)), image_column=img, label_column=lab, num_labels=num_labels,
                          dataset_name=str(dataset), id2label=_id2label(model))
    metrics = evaluate(model, data.eval, batch_size=batch_size)
    if is_structured(folder):  # structured: sparsity = share of the dense model's parameters removed
        dense = claims.get("params_dense") or recipe.get("params_dense")
        if not dense:
            raise ModelLoadError(f"{folder} claims no dense parameter count (params_dense): re-export it with hf-mixmatch structured")
        measured_sparsity = 1.0 - sum(p.numel() for p in model.parameters()) / float(dense)
    else:
        measured_sparsity = measure_model_sparsity(model, recipe)
    claimed_acc, claimed_sp = claims.get("accuracy"), claims.get("sparsity")
    ok = (claimed_acc is not None and claimed_sp is not None
          and abs(float(claimed_acc) - metrics["accuracy"]) <= tolerance + 1e-12
          and abs(float(claimed_sp) - measured_sparsity) <= SPARSITY_TOLERANCE)
    if ok and claims.get("top5") is not None and metrics.get("top5") is not None:
        ok = abs(float(claims["top5"]) - metrics["top5"]) <= tolerance + 1e-12
    return VerifyReport(claimed_accuracy=claimed_acc, measured_accuracy=metrics["accuracy"],
                        claimed_sparsity=claimed_sp, measured_sparsity=measured_sparsity, ok=bool(ok),
                        claimed_top5=claims.get("top5"), measured_top5=metrics.get("top5"), tolerance=tolerance,
                        eval_split=data.eval_split, eval_samples=len(data.eval))


# ------------------------------------------------------------------------------------------------ CLI


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.4f}"


def cmd_verify(args) -> int:
    report = verify(args.repo, args.dataset, eval_split=args.eval_split, eval_samples=args.eval_samples,
                    batch_size=args.batch_size, tolerance=args.tolerance, image_column=args.image_column,
                    label_column=args.label_column, revision=args.revision)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{'':10s}{'claimed':>10s}{'measured':>10s}")
        print(f"{'sparsity':10s}{_fmt(report.claimed_sparsity):>10s}{_fmt(report.measured_sparsity):>10s}")
        print(f"{'top-1':10s}{_fmt(report.claimed_accuracy):>10s}{_fmt(report.measured_accuracy):>10s}")
        print(f"{'top-5':10s}{_fmt(report.claimed_top5):>10s}{_fmt(report.measured_top5):>10s}")
        print(f"split {report.eval_split}, {report.eval_samples} samples, tolerance {report.tolerance}: "
              + ("OK" if report.ok else "MISMATCH"))
    if not report.ok:
        print(f"hf-mixmatch: {args.repo}: claims differ from the measurement beyond tolerance", file=sys.stderr)
    return 0 if report.ok else 1


def add_cli(subparsers) -> None:
    """Register ``hf-mixmatch verify``."""
    from .argtypes import non_negative_float, positive_int

    p = subparsers.add_parser(
        "verify", help="re-measure a published variant's accuracy and sparsity against its card",
        description="Download (or open) a variant, evaluate it on the dataset (the recipe's split, samples and seed by "
                    "default), re-count its zeros, and compare with the card. Exit code 1 on a mismatch.")
    p.add_argument("repo", help="Hub repo id of the variant, or a local variant folder")
    p.add_argument("--dataset", required=True, help="Hub id or local folder of the evaluation dataset")
    p.add_argument("--eval-split", help="split to evaluate on (default: the recipe's)")
    p.add_argument("--eval-samples", type=positive_int, help="evaluation samples (default: the recipe's)")
    p.add_argument("--tolerance", type=non_negative_float, default=0.005, help="allowed |claimed - measured| accuracy")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--image-column", help="image column (default: auto-detected)")
    p.add_argument("--label-column", help="label column (default: auto-detected)")
    p.add_argument("--revision", help="revision of the variant repo")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)
