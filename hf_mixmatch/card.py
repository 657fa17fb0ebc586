"""Model cards for pruned variants and for a whole run (the family), rendered from ``cards/*.md``.

Metadata goes through ``huggingface_hub``'s ``ModelCardData`` and ``EvalResult`` (never YAML by hand);
the body is a Jinja template fed with precomputed rows. Search code reads ``hf_mixmatch.sparsity``,
``.signal`` and ``.strategy`` from the card data and top-1/top-5 accuracy from the model-index.
Nothing time-dependent is written: the version comes from the recipe, so a card is reproducible.
Structured models' cards: :mod:`hf_mixmatch.card_structured`; what a card may say about the base model
and dataset (Hub ids, local fingerprints): :mod:`hf_mixmatch.provenance`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ConfigError
from .provenance import base_hub_id, cli_arg, dataset_id, hub_tag, is_hub_id, public_ref
from .report import labels_line
from .strategies import CURVE_STRATEGIES

VARIANT_TEMPLATE = "variant_card.md"
FAMILY_TEMPLATE = "family_card.md"
TASK = "image-classification"
_LIBRARIES = ("transformers", "timm")


def templates_dir() -> Path:
    """The ``cards/`` folder: at the repository root (editable install) or under ``<prefix>/share/hf_mixmatch``
    (wheel install, from pyproject's data-files)."""
    env = os.environ.get("HF_MIXMATCH_CARDS_DIR")
    import sys

    candidates = ([Path(env)] if env else []) + [Path(__file__).resolve().parent.parent / "cards",
                                                 Path(__file__).resolve().parent / "cards",
                                                 Path(sys.prefix) / "share" / "hf_mixmatch" / "cards"]  # wheel data-files
    for path in candidates:
        if (path / VARIANT_TEMPLATE).is_file():
            return path
    raise ConfigError(
        f"card templates not found (looked in {', '.join(str(p) for p in candidates)}): install hf_mixmatch from its "
        "repository (pip install -e .) or set HF_MIXMATCH_CARDS_DIR to a folder with variant_card.md")


def template_path(name: str) -> Path:
    return templates_dir() / name


def sparsity_per_role(layers: dict[str, float], roles: dict[str, str], numel: dict[str, int] | None = None) -> dict[str, float]:
    """Zero fraction per role, weighted by layer size when ``numel`` is known (else a plain mean)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for name, s in layers.items():
        role = roles.get(name, "unknown")
        w = float(numel[name]) if numel and name in numel else 1.0
        sums[role] = sums.get(role, 0.0) + w * float(s)
        weights[role] = weights.get(role, 0.0) + w
    return {role: round(sums[role] / weights[role], 6) for role in sums if weights[role] > 0}


def eval_results(model_name: str, dataset: str, split: str | None, top1: float, top5: float | None):
    from huggingface_hub import EvalResult

    common = dict(task_type=TASK, task_name="Image Classification", dataset_type=dataset, dataset_name=dataset,
                  dataset_split=split)
    out = [EvalResult(metric_type="accuracy", metric_name="Top-1 accuracy", metric_value=float(top1), **common)]
    if top5 is not None:
        out.append(EvalResult(metric_type="top_5_accuracy", metric_name="Top-5 accuracy", metric_value=float(top5),
                              **common))
    return out


def common_metadata(results: dict) -> dict:
    meta = {"pipeline_tag": TASK, "metrics": ["accuracy"]}
    base = base_hub_id(results)
    if base:
        meta.update(base_model=base, base_model_relation="finetune")
    library = results.get("library")
    if library in _LIBRARIES:
        meta["library_name"] = library
    if results.get("license"):
        meta["license"] = str(results["license"])
    ds = str(results.get("dataset") or "")
    if is_hub_id(ds) and "/" in ds:
        meta["datasets"] = [ds]
    return meta


def _model_name(results: dict, variant: dict, repo_id: str | None) -> str:
    if repo_id:
        return repo_id.split("/")[-1]
    base = (base_hub_id(results) or Path(str(results.get("base_model") or "model")).name).split("/")[-1]
    return f"{base}-mixmatch-{variant['id']}"


def pct(x) -> str:
    return "–" if x is None else f"{100 * float(x):.2f}%"


def _layer_rows(recipe: dict, numel: dict[str, int] | None) -> list[dict]:
    rows = []
    ranges = recipe.get("ranges") or {}
    for name, s in (recipe.get("layers") or {}).items():
        rng = ranges.get(name)
        rows.append({"name": name, "role": recipe.get("roles", {}).get(name, "–"), "sparsity": pct(s),
                     "range": f"[{rng[0]:.2f}, {rng[1]:.2f}]" if rng else "–",
                     "numel": f"{numel[name]:,}" if numel and name in numel else "–"})
    return rows


FINETUNE_FLAGS = (("steps", "--finetune-steps"), ("epochs", "--finetune-epochs"), ("lr", "--finetune-lr"),
                  ("patience", "--finetune-patience"), ("samples", "--finetune-samples"))


def _reproduce_command(recipe: dict) -> str:
    parts = ["hf-mixmatch prune", cli_arg(public_ref(recipe.get("base_model")), "BASE_MODEL")]
    if recipe.get("base_revision"):
        parts.append(f"--revision {recipe['base_revision']}")
    parts.append(f"--dataset {cli_arg(public_ref(recipe.get('dataset')), 'DATASET')}")
    parts.append(f"--signals {recipe['signal']} --strategies {recipe['strategy']}")
    rd = recipe.get("rd")
    if recipe.get("strategy") in CURVE_STRATEGIES and rd:  # needs the curves, not only the ranges: re-measure them
        targets = ",".join(f"{t:g}" for t in recipe.get("range_targets") or ())
        parts.append(f"--ranges rd --range-targets {targets} --rd-distortion {rd['distortion']} "
                     f"--rd-grid-step {rd['grid_step']:g} --rd-reduction {rd['reduction']}")
    else:
        parts.append("--ranges ranges.json")
    for key, flag in (("calib_split", "--calib-split"), ("eval_split", "--eval-split"),
                      ("calib_samples", "--calib-samples"), ("eval_samples", "--eval-samples"),
                      ("batch_size", "--batch-size"), ("seed", "--seed")):
        if recipe.get(key) is not None:
            parts.append(f"{flag} {recipe[key]}")
    if recipe.get("grad_train_mode"):
        parts.append("--grad-train-mode")
    ft = recipe.get("finetune_config") or {}
    for key, flag in FINETUNE_FLAGS:
        if ft.get(key) is not None:
            parts.append(f"{flag} {ft[key]}")
    if recipe.get("storage") == "compact":
        parts.append("--storage compact")
    if recipe.get("reconstructed"):
        parts.append("--reconstruct sparsegpt")
        # recipes written before the target existed reconstructed towards the pruned model's own outputs
        parts.append(f"--reconstruct-target {(recipe.get('reconstruct') or {}).get('target', 'pruned')}")
        # recipes written before the refit existed kept SparseGPT's weights as they were
        parts.append(f"--reconstruct-refit {(recipe.get('reconstruct') or {}).get('refit', 0)}")
    if recipe.get("bn_recalibrate") is False:
        parts.append("--no-bn-recalibrate")
    parts.append("--save all --output-dir reproduce")
    return " \\\n  ".join([" ".join(parts[:2])] + parts[2:])


def variant_card(results: dict, variant: dict, recipe: dict, *, repo_id: str | None = None,
                 numel: dict[str, int] | None = None):
    """The model card of one variant (a ``huggingface_hub.ModelCard``).

    ``results`` is the run's ``results.json`` dict, ``variant`` its entry for this variant and ``recipe``
    the variant's ``mixmatch.json``. ``numel`` (layer name -> weight count) weights the per-role
    sparsity; defaults to ``recipe["numel"]`` when present, else a plain per-layer mean.
    """
    from huggingface_hub import ModelCard, ModelCardData

    numel = numel or recipe.get("numel")
    name = _model_name(results, variant, repo_id)
    dataset = dataset_id(results)
    split = results.get("eval_split") or recipe.get("eval_split")
    dense = results.get("dense") or {}
    signal, strategy = variant["signal"], variant["strategy"]
    storage = recipe.get("storage", "dense")
    per_role = sparsity_per_role(recipe.get("layers") or variant.get("layers") or {}, recipe.get("roles") or {}, numel)
    block = {
        "version": recipe.get("hf_mixmatch_version"),
        "method": variant.get("method", "mixmatch"),
        "signal": signal,
        "strategy": strategy,
        "sparsity": float(variant["sparsity"]),
        "sparsity_per_role": per_role,
        "dense_accuracy": dense.get("accuracy"),
        "accuracy": float(variant["accuracy"]),
        "top5": variant.get("top5"),
        "base_revision": results.get("base_revision"),
        "storage": storage,
        **({"reconstructed": True} if recipe.get("reconstructed") else {}),
        **({"bn_recalibrated": True} if recipe.get("bn_recalibration") and recipe.get("bn_recalibrated") else {}),
    }
    tags = ["pruned", "sparse", "hf-mixmatch", "mixmatch", "unstructured-sparsity",
            hub_tag(f"signal-{signal}"), hub_tag(f"strategy-{strategy}")]
    data = ModelCardData(
        **common_metadata(results), tags=tags, model_name=name,
        eval_results=eval_results(name, dataset, split, variant["accuracy"], variant.get("top5")),
        hf_mixmatch=block,
    )
    base = public_ref(results.get("base_model"))
    ref = repo_id or f"path/to/{variant['id']}"
    ctx = {
        "model_name": name,
        "repo_id": repo_id,
        "ref": ref,
        "variant": variant,
        "base_model": base,
        "base_is_hub": base_hub_id(results) is not None,
        "base_revision": results.get("base_revision"),
        "library": results.get("library"),
        "signal": signal,
        "strategy": strategy,
        "storage": storage,
        "dataset": dataset,
        "eval_split": split,
        "eval_samples": results.get("eval_samples"),
        "select_split": results.get("select_split"),
        "labels_line": labels_line(results),
        "sparsity": pct(variant["sparsity"]),
        "accuracy": pct(variant["accuracy"]),
        "top5": pct(variant.get("top5")),
        "dense_accuracy": pct(dense.get("accuracy")),
        "dense_top5": pct(dense.get("top5")),
        "delta": "–" if dense.get("accuracy") is None else f"{100 * (variant['accuracy'] - dense['accuracy']):+.2f} pp",
        "delta5": ("–" if dense.get("top5") is None or variant.get("top5") is None
                   else f"{100 * (variant['top5'] - dense['top5']):+.2f} pp"),
        "on_front": variant["id"] in (results.get("pareto") or []),
        "role_rows": [{"role": r, "sparsity": pct(s)} for r, s in per_role.items()],
        "per_role_weighted": bool(numel),
        "layer_rows": _layer_rows({**recipe, "layers": recipe.get("layers") or variant.get("layers") or {}}, numel),
        "range_source": recipe.get("range_source"),
        "strategy_description": _strategy_description(variant.get("strategy")),
        "reproduce": _reproduce_command(recipe),
        "version": recipe.get("hf_mixmatch_version"),
        "finetune": recipe.get("finetune") or variant.get("finetune"),
        "finetune_story": finetune_story(recipe.get("finetune") or variant.get("finetune")),
        "oneshot_accuracy": pct((variant.get("oneshot") or {}).get("accuracy")) if variant.get("oneshot") else None,
        "oneshot_top5": pct((variant.get("oneshot") or {}).get("top5")) if variant.get("oneshot") else None,
        "front_basis": results.get("pareto_basis", "oneshot"),
        "reconstruct": recipe.get("reconstruct") if recipe.get("reconstructed") else None,
        "bn_recalibration": recipe.get("bn_recalibration"),
        "bn_recalibrated": recipe.get("bn_recalibrated"),
        "not_applied_as_stored": results.get("not_applied_as_stored") or [],
    }
    return ModelCard.from_template(data, template_path=str(template_path(VARIANT_TEMPLATE)), **ctx)


def finetune_story(ft: dict | None) -> str | None:
    """One sentence saying what fine-tuning did (or None when there was none)."""
    if not ft:
        return None
    steps, best = ft.get("steps"), ft.get("best_step")
    if best == 0:
        return (f"fine-tuning ran {steps} steps, but no step beat the starting weights on the held-out validation "
                "samples, so early stopping restored step 0: these are the one-shot pruned weights")
    if best is None:
        return f"the remaining weights were fine-tuned for {steps} steps with the zeros kept"
    stop = " (stopped early)" if ft.get("stopped_early") else ""
    return (f"the remaining weights were fine-tuned with the zeros kept: {steps} steps{stop}; the weights of step "
            f"{best}, best on the held-out validation samples, were kept")


def _strategy_description(name: str | None) -> str:
    from .strategies import STRATEGY_DESCRIPTIONS

    return STRATEGY_DESCRIPTIONS.get(name or "", "")


def write_variant_card(variant_dir: str | os.PathLike, results: dict, variant: dict, recipe: dict | None = None, *,
                       repo_id: str | None = None) -> Path:
    """Render the variant's card into ``variant_dir/README.md`` (recipe read from ``mixmatch.json`` if omitted)."""
    variant_dir = Path(variant_dir)
    if recipe is None:
        recipe = json.loads((variant_dir / "mixmatch.json").read_text())
    from .storage import layer_numels

    numel = recipe.get("numel") or layer_numels(variant_dir)
    if numel:
        numel = {k: v for k, v in numel.items() if k in (recipe.get("layers") or variant.get("layers") or {})}
    card = variant_card(results, variant, recipe, repo_id=repo_id, numel=numel or None)
    path = variant_dir / "README.md"
    card.save(str(path))
    return path


def family_card(results: dict, *, repos: dict[str, str] | None = None):
    """The card of the whole run: every variant with its repo (if pushed), numbers and front membership."""
    from huggingface_hub import ModelCard, ModelCardData

    repos = repos or {}
    front = list(results.get("pareto") or [])
    variants = list(results.get("variants") or [])
    order = sorted(variants, key=lambda v: (v["id"] not in front, -float(v["sparsity"]), v["id"]))
    rows = [{"id": v["id"], "repo": repos.get(v["id"]), "signal": v.get("signal", "–"),
             "strategy": v.get("strategy", "–"), "sparsity": pct(v["sparsity"]), "accuracy": pct(v["accuracy"]),
             "top5": pct(v.get("top5")), "front": v["id"] in front, "same_as": v.get("same_as")} for v in order]
    tags = ["pruned", "sparse", "hf-mixmatch", "mixmatch", "model-family"]
    data = ModelCardData(**common_metadata(results), tags=tags)
    dense = results.get("dense") or {}
    ctx = {"base_model": public_ref(results.get("base_model")), "base_revision": results.get("base_revision"),
           "base_is_hub": base_hub_id(results) is not None, "dataset": dataset_id(results),
           "eval_split": results.get("eval_split"), "eval_samples": results.get("eval_samples"),
           "dense_accuracy": pct(dense.get("accuracy")), "dense_top5": pct(dense.get("top5")), "rows": rows,
           "n_variants": len(rows), "n_front": len(front), "version": results.get("hf_mixmatch_version")}
    return ModelCard.from_template(data, template_path=str(template_path(FAMILY_TEMPLATE)), **ctx)
