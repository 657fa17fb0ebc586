"""A small, fixed results.json / mixmatch.json pair for card and report tests (no time or version inside)."""

from __future__ import annotations

LAYERS = {"vit.embeddings.patch_embeddings.projection": 0.1, "vit.encoder.layer.0.attention.attention.query": 0.6,
          "vit.encoder.layer.0.intermediate.dense": 0.8, "classifier": 0.2}
ROLES = {"vit.embeddings.patch_embeddings.projection": "patch_embed",
         "vit.encoder.layer.0.attention.attention.query": "attn_qkv",
         "vit.encoder.layer.0.intermediate.dense": "mlp_up", "classifier": "classifier"}
NUMEL = {"vit.embeddings.patch_embeddings.projection": 1536, "vit.encoder.layer.0.attention.attention.query": 1024,
         "vit.encoder.layer.0.intermediate.dense": 2048, "classifier": 128}


def results() -> dict:
    variants = [
        {"id": "magnitude-percentile_50", "method": "mixmatch", "signal": "magnitude", "strategy": "percentile_50",
         "sparsity": 0.5625, "accuracy": 0.90625, "top5": 0.984375, "layers": dict(LAYERS),
         "path": "variants/magnitude-percentile_50"},
        {"id": "gradient-aggressive", "method": "mixmatch", "signal": "gradient", "strategy": "aggressive", "sparsity": 0.75,
         "accuracy": 0.8125, "top5": 0.96875, "layers": {k: min(1.0, v + 0.2) for k, v in LAYERS.items()},
         "path": "variants/gradient-aggressive"},
        {"id": "hybrid-conservative", "method": "mixmatch", "signal": "hybrid", "strategy": "conservative", "sparsity": 0.5,
         "accuracy": 0.875, "top5": 0.96875, "layers": {k: max(0.0, v - 0.1) for k, v in LAYERS.items()},
         "path": None},
        {"id": "magnitude-balanced", "method": "mixmatch", "signal": "magnitude", "strategy": "balanced",
         "sparsity": 0.5625, "accuracy": 0.90625, "top5": 0.984375, "layers": dict(LAYERS), "path": None,
         "same_as": "magnitude-percentile_50"},
    ]
    return {"base_model": "google/vit-base-patch16-224", "base_revision": "3f49326eb077187dfe1c2a2bb15fbd74e6ab91e3",
            "library": "transformers", "license": "apache-2.0", "dataset": "uoft-cs/cifar10", "calib_split": "train",
            "eval_split": "test", "calib_samples": 256, "eval_samples": 64, "seed": 0,
            "hf_mixmatch_version": "9.9.9-test", "dense": {"accuracy": 0.9375, "top5": 1.0},
            "layer_roles": dict(ROLES), "variants": variants, "pareto": ["magnitude-percentile_50", "gradient-aggressive"]}


def recipe(res: dict, variant: dict) -> dict:
    return {"hf_mixmatch_version": res["hf_mixmatch_version"], "base_model": res["base_model"],
            "base_revision": res["base_revision"], "library": res["library"], "method": "mixmatch",
            "signal": variant["signal"], "strategy": variant["strategy"], "sparsity": variant["sparsity"],
            "layers": dict(variant["layers"]), "roles": dict(ROLES),
            "ranges": {k: [0.0, 0.9, "observed"] for k in LAYERS}, "range_source": "observed",
            "dataset": res["dataset"], "calib_split": "train", "eval_split": "test", "calib_samples": 256,
            "eval_samples": 64, "batch_size": 64, "seed": 0, "accuracy": variant["accuracy"], "top5": variant["top5"],
            "dense_accuracy": res["dense"]["accuracy"], "dense_top5": res["dense"]["top5"], "storage": "dense"}
