"""Loading published (or local) hf-mixmatch variants and checking their claims (``hf-mixmatch verify``:
:mod:`hf_mixmatch.verification`).

``from_pretrained`` returns the plain transformers or timm model the base used, with two attributes:
``mixmatch_recipe`` (the ``mixmatch.json`` dict) and ``mixmatch_claims`` (sparsity and accuracy the card
states). Only safetensors are read; a repo or folder whose weights are pickles only is refused.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

from torch import nn

from .errors import HubError, ModelLoadError, SparsityMismatchError, UnsafeWeightsError
from .storage import COMPACT_FILE

SAFE_PATTERNS = ("*.json", "*.safetensors", "*.md", "*.png", "*.txt")
UNSAFE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")
SPARSITY_TOLERANCE = 1e-4


def _is_unsafe(name: str) -> bool:
    return any(fnmatch.fnmatch(name.lower(), pat) for pat in UNSAFE_PATTERNS)


def _check_weights_present(folder: Path, names: list[str], where: str) -> None:
    if any(n.endswith(".safetensors") for n in names):
        return
    unsafe = sorted(n for n in names if _is_unsafe(n))
    if unsafe:
        raise UnsafeWeightsError(
            f"{where} only has pickle weights ({', '.join(unsafe[:3])}); hf_mixmatch loads safetensors only "
            "(pickles can run code when loaded): convert them with safetensors or ask the author for model.safetensors")
    raise ModelLoadError(f"{where} has no model.safetensors / {COMPACT_FILE}: pass a variant folder or repo")


def _local_files(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]


def resolve_variant_dir(repo_id_or_path: str | os.PathLike, *, revision: str | None = None,
                        token: str | None = None) -> Path:
    """A local folder holding the variant's safe files: the path itself, or a Hub snapshot (pickles skipped)."""
    path = Path(repo_id_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file: pass the variant's folder (with config.json)")
        _check_weights_present(path, _local_files(path), str(path))
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    repo_id = str(repo_id_or_path).removeprefix("hf-hub:")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=list(SAFE_PATTERNS),
                                        ignore_patterns=list(UNSAFE_PATTERNS)))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelLoadError(f"'{repo_id}' (revision {revision or 'main'}) not found on the Hub: check the id, "
                             "the revision and your token") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise HubError(f"cannot download '{repo_id}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                       " (offline? pass a local folder or retry with network access)") from exc
    names = _local_files(folder)
    if not any(n.endswith(".safetensors") for n in names):
        try:  # find out whether pickles are what the repo holds instead (never downloaded)
            from huggingface_hub import HfApi

            names = names + HfApi(token=token).list_repo_files(repo_id, revision=revision)
        except Exception:  # noqa: BLE001 - offline: report what we have
            pass
    _check_weights_present(folder, names, repo_id)
    return folder


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}): re-download the variant") from exc


def build_model(folder: Path) -> tuple[nn.Module, str]:
    """(model in eval mode, library) from a variant folder, dense or compact; the adapter is chosen by config.json."""
    from .adapters import adapter_for_config

    cfg = _read_json(folder / "config.json")
    if cfg is None:
        raise ModelLoadError(f"{folder} has no config.json: pass a folder written by hf-mixmatch (save_variant)")
    adapter = adapter_for_config(cfg, f"{folder}/config.json")
    return adapter.build(folder, cfg).eval(), adapter.name


def card_claims(folder: Path, keys: tuple[str, ...] | None = ("sparsity", "accuracy", "top5", "signal", "strategy")) -> dict:
    """What ``README.md`` claims: the ``hf_mixmatch`` block (only ``keys``, or all of it when None), with
    accuracy and top5 from the model-index when it has them. Empty when there is no card."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict()
    except Exception as exc:  # noqa: BLE001 - a broken card is a failed claim, say so
        raise ModelLoadError(f"cannot parse {readme}: {exc}: re-download the model") from exc
    block = data.get("hf_mixmatch") if isinstance(data.get("hf_mixmatch"), dict) else {}
    claims = {k: v for k, v in block.items() if v is not None and (keys is None or k in keys)}
    top1, top5 = _model_index_accuracy(data.get("model-index"))
    if top1 is not None:
        claims["accuracy"] = top1
    if top5 is not None:
        claims["top5"] = top5
    return claims


def _model_index_accuracy(index) -> tuple[float | None, float | None]:
    if not index:
        return None, None
    from huggingface_hub.repocard_data import model_index_to_eval_results

    try:
        _, results = model_index_to_eval_results(index)
    except (KeyError, TypeError, ValueError):
        return None, None
    top1 = top5 = None
    for r in results:
        label = f"{r.metric_type} {r.metric_name or ''}".lower().replace("-", "").replace("_", "")
        if "top5" in label or "top 5" in label:
            top5 = float(r.metric_value) if top5 is None else top5
        elif r.metric_type == "accuracy" and top1 is None:
            top1 = float(r.metric_value)
    return top1, top5


def measure_model_sparsity(model: nn.Module, recipe: dict | None = None) -> float:
    """Zeros / all prunable weights (the pipeline's definition), over the recipe's layers when it lists them
    (the run's inventory leaves out layers the forward never uses)."""
    from .layers import list_prunable
    from .masks import measure_sparsity

    num_labels = getattr(getattr(model, "config", None), "num_labels", None) or getattr(model, "num_classes", None)
    layers = list_prunable(model, num_labels=num_labels)
    if recipe and recipe.get("numel"):
        layers = [layer for layer in layers if layer.name in recipe["numel"]]
    overall, _ = measure_sparsity(model, layers)
    return overall


def _check_sparsity(measured: float, card: dict, recipe: dict | None, where: str) -> None:
    for source, value in (("card", card.get("sparsity")), ("mixmatch.json", (recipe or {}).get("sparsity"))):
        if value is not None and abs(float(value) - measured) > SPARSITY_TOLERANCE:
            raise SparsityMismatchError(
                f"{where}: the weights are {measured:.6f} sparse but its {source} claims {float(value):.6f}; the "
                "files were altered or mixed up: re-download the variant, or pass check_sparsity=False to load anyway")


STRUCTURED_RECIPE = "structured.json"


def is_structured(folder: Path) -> bool:
    """A folder written by ``hf-mixmatch structured`` (``structured.json`` next to the weights)."""
    return (Path(folder) / STRUCTURED_RECIPE).is_file()


def structured_claims(folder: Path, recipe: dict) -> dict:
    """Claims of a structured model: the card's ``hf_mixmatch`` block and model-index, completed from
    ``structured.json`` (``params``, ``params_dense``, ``sparsity`` = share of parameters removed, metric)."""
    claims = card_claims(folder, keys=None)
    fallback = {"method": "structured", "params": recipe.get("params"), "params_dense": recipe.get("params_dense"),
                "sparsity": recipe.get("achieved_sparsity"), "metric_name": recipe.get("metric_name"),
                "metric": recipe.get("metric"), "metric_dense": recipe.get("dense_metric")}
    for k, v in fallback.items():
        if k not in claims and v is not None:
            claims[k] = v
    return claims


def _check_structured_params(model: nn.Module, recipe: dict, folder: Path, where: str) -> None:
    """Parameter count (and share removed) of the loaded model against the card and ``structured.json``."""
    params = sum(p.numel() for p in model.parameters())
    card = card_claims(folder, keys=None)
    for source, value in (("card", card.get("params")), (STRUCTURED_RECIPE, recipe.get("params"))):
        if value is not None and int(value) != params:
            raise SparsityMismatchError(
                f"{where}: the structured model has {params:,} parameters but its {source} claims {int(value):,}; the "
                "files were altered or mixed up: re-download the model, or pass check_sparsity=False to load anyway")
    for source, claim in (("card", card), (STRUCTURED_RECIPE, {"sparsity": recipe.get("achieved_sparsity"),
                                                               "params_dense": recipe.get("params_dense")})):
        dense, value = claim.get("params_dense"), claim.get("sparsity")
        if dense and value is not None and abs(float(value) - (1.0 - params / int(dense))) > SPARSITY_TOLERANCE:
            raise SparsityMismatchError(
                f"{where}: {1.0 - params / int(dense):.6f} of the {int(dense):,} dense parameters are removed but "
                f"its {source} claims {float(value):.6f}: re-download the model, or pass check_sparsity=False")


def _load_structured_folder(folder: Path, where: str, check: bool) -> nn.Module:
    from .structured.io import load_structured

    recipe = _read_json(folder / STRUCTURED_RECIPE) or {}
    cfg = _read_json(folder / "config.json") or {}
    model = load_structured(folder)
    from .claims import check_claims

    claims = check_claims(structured_claims(folder, recipe), where)
    if check:
        _check_structured_params(model, recipe, folder, where)
    model.mixmatch_recipe = recipe
    model.mixmatch_claims = claims
    model.mixmatch_library = cfg.get("_hfmm_library") or recipe.get("library")
    model.mixmatch_dir = str(folder)
    return model


def from_pretrained(repo_id_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None,
                    check_sparsity: bool = True) -> nn.Module:
    """Load a variant (local folder or Hub repo) as its transformers / timm model, dense or compact storage.

    Attaches ``model.mixmatch_recipe`` (``mixmatch.json`` or None), ``model.mixmatch_claims`` (card claims)
    and ``model.mixmatch_library``. Raises ``UnsafeWeightsError`` for pickle-only repos and, unless
    ``check_sparsity=False``, ``SparsityMismatchError`` when the weights' sparsity differs from a claim
    by more than 1e-4.

    Structured models (a ``structured.json`` in the folder, written by ``hf-mixmatch structured``) are
    rebuilt with their smaller shapes (``hf_mixmatch.structured.load_structured``); for them the check is
    that the parameter count (and share removed) equals the card's and the recipe's claim.
    """
    folder = resolve_variant_dir(repo_id_or_path, revision=revision, token=token)
    if is_structured(folder):
        return _load_structured_folder(folder, str(repo_id_or_path), check_sparsity)
    model, library = build_model(folder)
    recipe = _read_json(folder / "mixmatch.json")
    card = card_claims(folder)
    claims = {**{k: recipe[k] for k in ("sparsity", "accuracy", "top5", "signal", "strategy")
                 if recipe and recipe.get(k) is not None}, **card}
    from .claims import check_claims  # claims are numbers in range, or the load is refused

    claims = check_claims(claims, str(repo_id_or_path))
    card = check_claims(card, str(repo_id_or_path))
    if recipe:  # the recipe is checked on its own too (the card may override what it says)
        check_claims({k: recipe.get(k) for k in ("sparsity", "accuracy", "top5")}, f"{repo_id_or_path} mixmatch.json")
    if check_sparsity:
        _check_sparsity(measure_model_sparsity(model, recipe), card, recipe, str(repo_id_or_path))
    model.mixmatch_recipe = recipe
    model.mixmatch_claims = claims
    model.mixmatch_library = library
    model.mixmatch_dir = str(folder)
    return model
