"""The model card of a structurally pruned model (``hf-mixmatch structured``), rendered from
``cards/structured_card.md`` like the variant cards (:mod:`hf_mixmatch.card`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .card import TASK, common_metadata, eval_results, pct, template_path
from .errors import ConfigError
from .provenance import base_hub_id, cli_arg, dataset_id, hub_tag, public_ref

STRUCTURED_TEMPLATE = "structured_card.md"
STRUCTURED_TAGS = ["pruned", "structured", "hf-mixmatch", "structured-pruning"]


def _num(x, fmt: str = "{:,}") -> str:
    return "–" if x is None else fmt.format(x)


def _ratio(a, b) -> str:
    return "–" if a is None or not b else f"{float(a) / float(b):.2f}×"


def _structured_reproduce(recipe: dict, results: dict) -> str:
    opts = recipe.get("options") or {}
    parts = ["hf-mixmatch structured", cli_arg(public_ref(recipe.get("base_model") or results.get("model")), "BASE_MODEL"),
             f"--dataset {cli_arg(public_ref(recipe.get('dataset') or results.get('dataset')), 'DATASET')}",
             f"--sparsity {recipe.get('target_sparsity', results.get('target_sparsity'))}"]
    if recipe.get("tolerance") is not None:
        parts.append(f"--tolerance {recipe['tolerance']}")
    if recipe.get("metric_floor") is not None:
        parts.append(f"--metric-floor {recipe['metric_floor']}")
    if opts.get("flops_weight") is None and recipe.get("flops_weight") is not None:
        opts = {**opts, "flops_weight": recipe["flops_weight"]}
    for key, flag in (("search", "--search"), ("steps", "--steps"), ("finetune_steps", "--finetune-steps"),
                      ("flops_weight", "--flops-weight"), ("round_to", "--round-to"),
                      ("layout", "--layout"),
                      ("calib_split", "--calib-split"), ("eval_split", "--eval-split"),
                      ("calib_samples", "--calib-samples"), ("eval_samples", "--eval-samples"), ("seed", "--seed")):
        if opts.get(key) is not None:
            parts.append(f"{flag} {opts[key]}")
    if opts.get("bn_recalibrate") is False:
        parts.append("--no-bn-recalibrate")
    if opts.get("components"):
        parts.append("--components " + " ".join(f"'{c}'" for c in opts["components"]))
    parts.append("--output-dir reproduce")
    return " \\\n  ".join([" ".join(parts[:2])] + parts[2:])


def _structured_rows(recipe: dict) -> tuple[list[dict], list[dict], int]:
    """(per component and kind, per pruned group, number of groups kept whole) from ``recipe["groups"]``."""
    comp: dict[tuple[str, str], dict] = {}
    groups, fixed = [], 0
    for g in recipe.get("groups") or []:
        if not g.get("prunable"):
            fixed += 1
            continue
        name = ", ".join(g.get("components") or ["–"])
        n_rem = len(g.get("removed") or [])
        row = comp.setdefault((name, g.get("kind", "channels")), {"groups": 0, "removed": 0, "units": 0})
        row["groups"] += int(n_rem > 0)
        row["removed"] += n_rem
        row["units"] += int(g.get("units", 0))
        if n_rem:
            groups.append({"root": g["root"], "component": name, "kind": g.get("kind", "channels"),
                           "units": g.get("units"), "removed": n_rem, "kept": int(g.get("units", 0)) - n_rem})
    rows = [{"component": c, "kind": k, "groups": v["groups"], "removed": v["removed"], "units": v["units"],
             "kept": v["units"] - v["removed"]} for (c, k), v in comp.items()]
    return rows, groups, fixed


def structured_card(results: dict, recipe: dict, *, repo_id: str | None = None):
    """The model card of a structurally pruned model (a ``huggingface_hub.ModelCard``).

    ``results`` is the ``results.json`` dict of ``hf-mixmatch structured`` (``dense`` / ``pruned`` with
    ``params``, ``flops``, ``latency_ms``, ``accuracy``) and ``recipe`` the model's ``structured.json``.
    Loaders read ``hf_mixmatch.params`` (checked against the weights), ``.sparsity`` (share of parameters
    removed) and the metric from the model-index.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    dense, pruned = results.get("dense") or {}, results.get("pruned") or {}
    base = public_ref(recipe.get("base_model") or results.get("model"))
    meta_src = {"base_model": base, "library": results.get("library"), "license": results.get("license"),
                "dataset": results.get("dataset") or recipe.get("dataset")}
    meta = common_metadata(meta_src)
    base_id = base_hub_id(meta_src)
    name = repo_id.split("/")[-1] if repo_id else (
        f"{(base_id or cli_arg(base, 'model').removeprefix('path/to/')).split('/')[-1]}-structured-{round(100 * float(results.get('achieved_sparsity', 0)))}")
    dataset = dataset_id(meta_src)
    split = results.get("eval_split")
    metric_name = results.get("metric_name") or recipe.get("metric_name") or "accuracy"
    is_acc = metric_name == "accuracy"
    metric, metric_dense = pruned.get(metric_name), dense.get(metric_name)
    if metric is None:
        raise ConfigError(f"results.json has no pruned '{metric_name}': pass the results of hf-mixmatch structured")
    if is_acc:
        evals = eval_results(name, dataset, split, metric, pruned.get("top5"))
    else:
        evals = [EvalResult(task_type=TASK, task_name="Image Classification", dataset_type=dataset,
                            dataset_name=dataset, dataset_split=split, metric_type=hub_tag(metric_name),
                            metric_name=metric_name, metric_value=float(metric))]
    searches = recipe.get("search") or results.get("search") or {}
    block = {
        "version": recipe.get("hf_mixmatch_version"),
        "method": "structured",
        "sparsity": float(results["achieved_sparsity"]),
        "target_sparsity": results.get("target_sparsity"),
        "params": int(pruned["params"]),
        "params_dense": int(dense["params"]),
        "flops": int(pruned["flops"]),
        "flops_dense": int(dense["flops"]),
        "latency_ms": {"dense": dict(dense.get("latency_ms") or {}), "pruned": dict(pruned.get("latency_ms") or {}),
                       "threads": pruned.get("threads"), "memory_format": pruned.get("memory_format")},
        "search": {"winner": results.get("winner") or recipe.get("winner"),
                   **{k: {kk: v.get(kk) for kk in ("metric", "sparsity", "seconds")} for k, v in searches.items()}},
        "metric_name": metric_name,
        "metric": float(metric),
        "metric_dense": None if metric_dense is None else float(metric_dense),
        "metric_floor": results.get("metric_floor"),
    }
    data = ModelCardData(**meta, tags=list(STRUCTURED_TAGS), model_name=name, eval_results=evals, hf_mixmatch=block)
    label = "top-1 accuracy" if is_acc else metric_name
    fmt = pct if is_acc else (lambda x: _num(x, "{:.4f}"))
    lat_d, lat_p = dense.get("latency_ms") or {}, pruned.get("latency_ms") or {}
    size_rows = [
        {"name": "parameters", "dense": _num(dense["params"]), "pruned": _num(pruned["params"]),
         "ratio": _ratio(pruned["params"], dense["params"])},
        {"name": "FLOPs (MAC / image)", "dense": _num(dense["flops"]), "pruned": _num(pruned["flops"]),
         "ratio": _ratio(pruned["flops"], dense["flops"])},
        *({"name": f"CPU latency, batch {b[1:]} (ms)", "dense": _num(lat_d.get(b), "{:.2f}"),
           "pruned": _num(lat_p.get(b), "{:.2f}"), "ratio": _ratio(lat_p.get(b), lat_d.get(b))} for b in ("b1", "b32")),
        {"name": label, "dense": fmt(metric_dense), "pruned": fmt(metric),
         "ratio": "–" if metric_dense is None else (f"{100 * (metric - metric_dense):+.2f} pp" if is_acc
                                                   else f"{metric - metric_dense:+.4f}")},
    ]
    if is_acc and pruned.get("top5") is not None:
        size_rows.append({"name": "top-5 accuracy", "dense": pct(dense.get("top5")), "pruned": pct(pruned["top5"]),
                          "ratio": "–" if dense.get("top5") is None else f"{100 * (pruned['top5'] - dense['top5']):+.2f} pp"})
    component_rows, group_rows, fixed = _structured_rows(recipe)
    ctx = {
        "model_name": name, "ref": repo_id or "path/to/model", "base_model": base, "base_is_hub": base_id is not None,
        "library": results.get("library"), "version": recipe.get("hf_mixmatch_version"),
        "sparsity": pct(results["achieved_sparsity"]), "target": pct(results.get("target_sparsity")),
        "winner": block["search"]["winner"], "metric_label": label,
        "metric_floor": None if results.get("metric_floor") is None else fmt(results["metric_floor"]),
        "finetune_steps": recipe.get("finetune_steps"), "dataset": dataset, "eval_split": split,
        "eval_samples": results.get("eval_samples"), "threads": pruned.get("threads", "?"),
        "latency_runs": pruned.get("latency_runs"), "memory_format": pruned.get("memory_format"), "size_rows": size_rows, "component_rows": component_rows,
        "group_rows": group_rows, "n_fixed": fixed, "reproduce": _structured_reproduce(recipe, results),
        "bn_recalibration": recipe.get("bn_recalibration"),
    }
    return ModelCard.from_template(data, template_path=str(template_path(STRUCTURED_TEMPLATE)), **ctx)


def write_structured_card(model_dir: str | os.PathLike, results: dict, recipe: dict | None = None, *,
                          repo_id: str | None = None) -> Path:
    """Render the structured model's card into ``model_dir/README.md`` (recipe read from ``structured.json``)."""
    model_dir = Path(model_dir)
    if recipe is None:
        recipe = json.loads((model_dir / "structured.json").read_text())
    path = model_dir / "README.md"
    structured_card(results, recipe, repo_id=repo_id).save(str(path))
    return path
