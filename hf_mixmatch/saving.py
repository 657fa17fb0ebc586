"""Saving a variant: its folder in Hub layout (written to a temp dir, then renamed) and its ``mixmatch.json`` recipe."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .layers import LayerInfo
from .models import LoadedModel


def write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def variant_recipe(results: dict, variant: dict, layers: list[LayerInfo]) -> dict:
    """``mixmatch.json``: enough to re-derive the masks from the base model. Local models and datasets are named
    by folder name and content fingerprint, never by path (the recipe is published with the variant)."""
    from .provenance import public_ref

    cfg = results["config"]
    ft_config = ({"steps": cfg["finetune_steps"], "epochs": cfg["finetune_epochs"], "lr": cfg["finetune_lr"],
                  "patience": cfg["finetune_patience"], "samples": cfg["finetune_samples"]}
                 if cfg.get("finetune_steps") or cfg.get("finetune_epochs") else None)
    return {
        "hf_mixmatch_version": results["hf_mixmatch_version"],
        "base_model": public_ref(results["base_model"]),
        "base_revision": results["base_revision"],
        "library": results["library"],
        "method": variant["method"],
        "signal": variant["signal"],
        "strategy": variant["strategy"],
        "sparsity": variant["sparsity"],
        "layers": variant["layers"],
        "target_layers": variant["target_layers"],
        "roles": {layer.name: layer.role for layer in layers},
        "numel": {layer.name: layer.numel for layer in layers},
        "ranges": results["ranges"]["ranges"],
        "range_source": results["ranges"]["source"],
        "range_targets": list(results["config"]["range_targets"]),
        "rd": ({k: cfg.get(f"rd_{k}") for k in ("grid_step", "reduction", "distortion")}
               if results["ranges"]["source"].startswith("rd") else None),
        "dataset": results.get("dataset_name") or public_ref(results["dataset"]),
        "calib_split": results["calib_split"],
        "eval_split": results["eval_split"],
        "calib_samples": results["calib_samples"],
        "eval_samples": results["eval_samples"],
        "batch_size": results["config"]["batch_size"],
        "grad_train_mode": results["config"]["grad_train_mode"],
        "seed": results["seed"],
        "accuracy": variant["accuracy"],
        "top5": variant["top5"],
        "dense_accuracy": results["dense"]["accuracy"],
        "dense_top5": results["dense"]["top5"],
        "storage": "dense",
        "finetune": variant.get("finetune"),
        "finetune_config": ft_config,
        "oneshot": variant.get("oneshot"),
        "reconstructed": bool(variant.get("reconstructed")),
        "reconstruct": results.get("reconstruct", {}).get("settings") if variant.get("reconstructed") else None,
        # BatchNorm statistics re-estimated on the calibration images (None: off, or no BatchNorm in the model)
        "bn_recalibrate": cfg.get("bn_recalibrate", False),
        "bn_recalibration": results.get("bn_recalibration"),
        "bn_recalibrated": variant.get("bn_recalibrated"),  # this variant: re-estimated statistics kept?
    }


def save_variant(loaded: LoadedModel, path: Path, *, recipe: dict, storage: str = "dense") -> None:
    """Write a variant folder in Hub layout; written to a temp dir first, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        loaded.save_pretrained(tmp)
        (tmp / "mixmatch.json").write_text(json.dumps(recipe, indent=1))
        if storage == "compact":
            from .storage import compact_variant

            compact_variant(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
