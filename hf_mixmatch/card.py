"""Model cards for pruned variants and for a whole run (the family), rendered from ``cards/*.md``.

Metadata goes through ``huggingface_hub``'s ``ModelCardData`` and ``EvalResult`` (never YAML by hand);
the body is a Jinja template fed with precomputed rows. Search code reads ``hf_mixmatch.sparsity``,
``.signal`` and ``.strategy`` from the card data and top-1/top-5 accuracy from the model-index.
Nothing time-dependent is written: the version comes from the recipe, so a card is reproducible.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from .errors import ConfigError

VARIANT_TEMPLATE = "variant_card.md"
FAMILY_TEMPLATE = "family_card.md"
TASK = "image-classification"
_LIBRARIES = ("transformers", "timm")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


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


def hub_tag(text: str) -> str:
    """A Hub-safe tag: lowercase ``[a-z0-9._-]``, other runs of characters become ``-``."""
    return re.sub(r"[^a-z0-9._-]+", "-", str(text).lower()).strip("-")


def is_hub_id(name: str | None) -> bool:
    """``org/name`` or ``name`` (not a local path, not ``default``)."""
    if not name or name == "default" or os.path.isabs(name) or name.startswith((".", "~")):
        return False
    return bool(_HUB_ID.match(name.removeprefix("hf-hub:")))


_SAMPLE_BYTES = 1 << 20


@functools.lru_cache(maxsize=64)
def _fingerprint_cached(resolved: str, state: tuple) -> str:  # noqa: ARG001 - the files' state is the cache key
    return _fingerprint(Path(resolved))


def local_fingerprint(path: str | os.PathLike) -> str:
    """See :func:`_fingerprint`; computed once per state (names, sizes, modification times) of the files."""
    real = Path(path).resolve()
    files = [real] if real.is_file() else sorted(p for p in real.rglob("*") if p.is_file())
    state = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint_cached(str(real), state)


def _fingerprint(path: Path) -> str:
    """12 hex digits of SHA-256 over every file's relative path, size and first MiB: identifies a local model or
    dataset folder (or file) by content without publishing where it lives."""
    import hashlib

    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        rel = f.name if f == root else f.relative_to(root).as_posix()
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()[:12]


def public_ref(spec: str | None) -> str | None:
    """What a public card or recipe may say about a model or dataset: a Hub id or ``default`` as given; a local
    folder or file as ``local:<name>@<content fingerprint>``, never its path."""
    if spec is None:
        return None
    text = str(spec)
    if text.startswith("local:") or text == "default":
        return text
    path = Path(text).expanduser()
    if path.exists():
        return f"local:{path.resolve().name}@{local_fingerprint(path)}"
    if is_hub_id(text):
        return text
    return f"local:{path.name or 'unnamed'}"  # a path that is gone: its name only


def _cli_arg(ref: str | None, placeholder: str) -> str:
    """A reproduce-command argument for ``ref``: Hub ids as they are, local refs as a path to fill in."""
    if not ref:
        return placeholder
    if ref.startswith("local:"):
        return "path/to/" + ref.removeprefix("local:").split("@")[0]
    return ref


def _dataset_id(results: dict) -> str:
    """The dataset as it may appear in a public card: ``dataset_name`` when set, a Hub id, or a local folder's
    name and fingerprint (no local paths)."""
    if results.get("dataset_name"):
        return str(results["dataset_name"])
    return public_ref(str(results.get("dataset") or "unknown")) or "unknown"


def _base_id(results: dict) -> str | None:
    base = str(results.get("base_model") or "")
    return base.removeprefix("hf-hub:") if is_hub_id(base) and not Path(base).exists() else None


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


def _eval_results(model_name: str, dataset: str, split: str | None, top1: float, top5: float | None):
    from huggingface_hub import EvalResult

    common = dict(task_type=TASK, task_name="Image Classification", dataset_type=dataset, dataset_name=dataset,
                  dataset_split=split)
    out = [EvalResult(metric_type="accuracy", metric_name="Top-1 accuracy", metric_value=float(top1), **common)]
    if top5 is not None:
        out.append(EvalResult(metric_type="top_5_accuracy", metric_name="Top-5 accuracy", metric_value=float(top5),
                              **common))
    return out


def _common_metadata(results: dict) -> dict:
    meta = {"pipeline_tag": TASK, "metrics": ["accuracy"]}
    base = _base_id(results)
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
    base = (_base_id(results) or Path(str(results.get("base_model") or "model")).name).split("/")[-1]
    return f"{base}-mixmatch-{variant['id']}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * float(x):.2f}%"


def _layer_rows(recipe: dict, numel: dict[str, int] | None) -> list[dict]:
    rows = []
    ranges = recipe.get("ranges") or {}
    for name, s in (recipe.get("layers") or {}).items():
        rng = ranges.get(name)
        rows.append({"name": name, "role": recipe.get("roles", {}).get(name, "–"), "sparsity": _pct(s),
                     "range": f"[{rng[0]:.2f}, {rng[1]:.2f}]" if rng else "–",
                     "numel": f"{numel[name]:,}" if numel and name in numel else "–"})
    return rows


FINETUNE_FLAGS = (("steps", "--finetune-steps"), ("epochs", "--finetune-epochs"), ("lr", "--finetune-lr"),
                  ("patience", "--finetune-patience"), ("samples", "--finetune-samples"))


def _reproduce_command(recipe: dict) -> str:
    parts = ["hf-mixmatch prune", _cli_arg(public_ref(recipe.get("base_model")), "BASE_MODEL")]
    if recipe.get("base_revision"):
        parts.append(f"--revision {recipe['base_revision']}")
    parts.append(f"--dataset {_cli_arg(public_ref(recipe.get('dataset')), 'DATASET')}")
    parts.append(f"--signals {recipe['signal']} --strategies {recipe['strategy']}")
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
    parts.append("--save all --output-dir reproduce")
    return " \\\n  ".join([" ".join(parts[:2])] + parts[2:])


def labels_line(results: dict):
    from .report import labels_line as line

    return line(results)


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
    dataset = _dataset_id(results)
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
    }
    tags = ["pruned", "sparse", "hf-mixmatch", "mixmatch", "unstructured-sparsity",
            hub_tag(f"signal-{signal}"), hub_tag(f"strategy-{strategy}")]
    data = ModelCardData(
        **_common_metadata(results), tags=tags, model_name=name,
        eval_results=_eval_results(name, dataset, split, variant["accuracy"], variant.get("top5")),
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
        "base_is_hub": _base_id(results) is not None,
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
        "sparsity": _pct(variant["sparsity"]),
        "accuracy": _pct(variant["accuracy"]),
        "top5": _pct(variant.get("top5")),
        "dense_accuracy": _pct(dense.get("accuracy")),
        "dense_top5": _pct(dense.get("top5")),
        "delta": "–" if dense.get("accuracy") is None else f"{100 * (variant['accuracy'] - dense['accuracy']):+.2f} pp",
        "delta5": ("–" if dense.get("top5") is None or variant.get("top5") is None
                   else f"{100 * (variant['top5'] - dense['top5']):+.2f} pp"),
        "on_front": variant["id"] in (results.get("pareto") or []),
        "role_rows": [{"role": r, "sparsity": _pct(s)} for r, s in per_role.items()],
        "per_role_weighted": bool(numel),
        "layer_rows": _layer_rows({**recipe, "layers": recipe.get("layers") or variant.get("layers") or {}}, numel),
        "range_source": recipe.get("range_source"),
        "strategy_description": _strategy_description(variant.get("strategy")),
        "reproduce": _reproduce_command(recipe),
        "version": recipe.get("hf_mixmatch_version"),
        "finetune": recipe.get("finetune") or variant.get("finetune"),
        "finetune_story": finetune_story(recipe.get("finetune") or variant.get("finetune")),
        "oneshot_accuracy": _pct((variant.get("oneshot") or {}).get("accuracy")) if variant.get("oneshot") else None,
        "oneshot_top5": _pct((variant.get("oneshot") or {}).get("top5")) if variant.get("oneshot") else None,
        "front_basis": results.get("pareto_basis", "oneshot"),
        "reconstruct": recipe.get("reconstruct") if recipe.get("reconstructed") else None,
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


def _layer_numel_from_folder(variant_dir: Path) -> dict[str, int] | None:
    """Layer weight counts read from the safetensors header (no tensor data is loaded)."""
    from safetensors import safe_open

    for fname in ("model.safetensors", "model.compact.safetensors"):
        path = variant_dir / fname
        if not path.is_file():
            continue
        with safe_open(str(path), framework="pt") as f:
            shapes = {}
            meta = f.metadata() or {}
            packed = json.loads(meta["hf_mixmatch.compact"])["tensors"] if "hf_mixmatch.compact" in meta else {}
            for key in f.keys():
                if "::" in key:
                    continue
                shapes[key] = f.get_slice(key).get_shape()
            shapes.update({k: v["shape"] for k, v in packed.items()})
        out = {}
        for key, shape in shapes.items():
            if key.endswith(".weight"):
                n = 1
                for s in shape:
                    n *= int(s)
                out[key[: -len(".weight")]] = n
        return out
    return None


def write_variant_card(variant_dir: str | os.PathLike, results: dict, variant: dict, recipe: dict | None = None, *,
                       repo_id: str | None = None) -> Path:
    """Render the variant's card into ``variant_dir/README.md`` (recipe read from ``mixmatch.json`` if omitted)."""
    variant_dir = Path(variant_dir)
    if recipe is None:
        recipe = json.loads((variant_dir / "mixmatch.json").read_text())
    numel = recipe.get("numel") or _layer_numel_from_folder(variant_dir)
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
             "strategy": v.get("strategy", "–"), "sparsity": _pct(v["sparsity"]), "accuracy": _pct(v["accuracy"]),
             "top5": _pct(v.get("top5")), "front": v["id"] in front, "same_as": v.get("same_as")} for v in order]
    tags = ["pruned", "sparse", "hf-mixmatch", "mixmatch", "model-family"]
    data = ModelCardData(**_common_metadata(results), tags=tags)
    dense = results.get("dense") or {}
    ctx = {"base_model": public_ref(results.get("base_model")), "base_revision": results.get("base_revision"),
           "base_is_hub": _base_id(results) is not None, "dataset": _dataset_id(results),
           "eval_split": results.get("eval_split"), "eval_samples": results.get("eval_samples"),
           "dense_accuracy": _pct(dense.get("accuracy")), "dense_top5": _pct(dense.get("top5")), "rows": rows,
           "n_variants": len(rows), "n_front": len(front), "version": results.get("hf_mixmatch_version")}
    return ModelCard.from_template(data, template_path=str(template_path(FAMILY_TEMPLATE)), **ctx)


# ------------------------------------------------------------------------------------------- structured

STRUCTURED_TEMPLATE = "structured_card.md"
STRUCTURED_TAGS = ["pruned", "structured", "hf-mixmatch", "structured-pruning"]


def _num(x, fmt: str = "{:,}") -> str:
    return "–" if x is None else fmt.format(x)


def _ratio(a, b) -> str:
    return "–" if a is None or not b else f"{float(a) / float(b):.2f}×"


def _structured_reproduce(recipe: dict, results: dict) -> str:
    opts = recipe.get("options") or {}
    parts = ["hf-mixmatch structured", _cli_arg(public_ref(recipe.get("base_model") or results.get("model")), "BASE_MODEL"),
             f"--dataset {_cli_arg(public_ref(recipe.get('dataset') or results.get('dataset')), 'DATASET')}",
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
    meta = _common_metadata(meta_src)
    base_id = _base_id(meta_src)
    name = repo_id.split("/")[-1] if repo_id else (
        f"{(base_id or _cli_arg(base, 'model').removeprefix('path/to/')).split('/')[-1]}-structured-{round(100 * float(results.get('achieved_sparsity', 0)))}")
    dataset = _dataset_id(meta_src)
    split = results.get("eval_split")
    metric_name = results.get("metric_name") or recipe.get("metric_name") or "accuracy"
    is_acc = metric_name == "accuracy"
    metric, metric_dense = pruned.get(metric_name), dense.get(metric_name)
    if metric is None:
        raise ConfigError(f"results.json has no pruned '{metric_name}': pass the results of hf-mixmatch structured")
    if is_acc:
        evals = _eval_results(name, dataset, split, metric, pruned.get("top5"))
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
    fmt = _pct if is_acc else (lambda x: _num(x, "{:.4f}"))
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
        size_rows.append({"name": "top-5 accuracy", "dense": _pct(dense.get("top5")), "pruned": _pct(pruned["top5"]),
                          "ratio": "–" if dense.get("top5") is None else f"{100 * (pruned['top5'] - dense['top5']):+.2f} pp"})
    component_rows, group_rows, fixed = _structured_rows(recipe)
    ctx = {
        "model_name": name, "ref": repo_id or "path/to/model", "base_model": base, "base_is_hub": base_id is not None,
        "library": results.get("library"), "version": recipe.get("hf_mixmatch_version"),
        "sparsity": _pct(results["achieved_sparsity"]), "target": _pct(results.get("target_sparsity")),
        "winner": block["search"]["winner"], "metric_label": label,
        "metric_floor": None if results.get("metric_floor") is None else fmt(results["metric_floor"]),
        "finetune_steps": recipe.get("finetune_steps"), "dataset": dataset, "eval_split": split,
        "eval_samples": results.get("eval_samples"), "threads": pruned.get("threads", "?"),
        "latency_runs": pruned.get("latency_runs"), "memory_format": pruned.get("memory_format"), "size_rows": size_rows, "component_rows": component_rows,
        "group_rows": group_rows, "n_fixed": fixed, "reproduce": _structured_reproduce(recipe, results),
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
