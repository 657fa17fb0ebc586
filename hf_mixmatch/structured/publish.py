"""Publishing a structured run: ``hf-mixmatch push RUN_DIR`` on the output of ``hf-mixmatch structured``.

A structured run holds one model (``RUN_DIR/model``: safetensors, config.json, structured.json, README.md card
with parameters, MACs, measured latency and accuracy). It goes to ``<namespace>/<base>-structured-<pct>`` in one
commit; ``push_summary.json`` records the outcome exactly as for unstructured runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import ConfigError, HfMixmatchError

log = logging.getLogger(__name__)

RECIPE = "structured.json"


def _push_api():
    """The module holding the push helpers: ``hf_mixmatch.push`` where hub.py was split, else ``hf_mixmatch.hub``."""
    try:
        from .. import push as api
    except ImportError:
        from .. import hub as api
    return api


def is_structured_run(run_dir: Path) -> bool:
    """True for the output directory of ``hf-mixmatch structured`` (results.json naming a model with a recipe)."""
    try:
        results = json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(results, dict) and "variants" not in results and isinstance(results.get("model_dir"), str)


def structured_repo_name(results: dict, namespace: str) -> str:
    """``<namespace>/<base>-structured-<percent of parameters removed>``, sanitized like unstructured names."""
    api = _push_api()
    api.repo_name_for("x", "x", "x", namespace)  # validates the namespace with the same rule and message
    base = api._clean(str(results.get("model") or "model").rstrip("/").split("/")[-1]) or "model"
    name = api._clean(f"{base}-structured-{round(100 * float(results['achieved_sparsity']))}")[:api.MAX_REPO_NAME]
    return f"{namespace}/{name}"


def _model_dir(run_dir: Path, results: dict) -> Path:
    folder = Path(results["model_dir"])
    folder = folder if folder.is_dir() else run_dir / "model"  # a moved run keeps its layout
    if not folder.resolve().is_relative_to(Path(run_dir).resolve()):  # an edited results.json must not upload elsewhere
        raise ConfigError(f"{run_dir / 'results.json'} points at {folder}, outside the run directory: "
                          "push only pushes folders inside RUN_DIR")
    for name in ("model.safetensors", "config.json", RECIPE):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} has no {name}: pass the output directory of a finished "
                              "`hf-mixmatch structured` run")
    if not isinstance(results.get("achieved_sparsity"), (int, float)):
        raise ConfigError(f"{run_dir / 'results.json'} lacks 'achieved_sparsity': rerun `hf-mixmatch structured`")
    return folder


def push_structured(run_dir, *, namespace: str, private: bool = False, dry_run: bool = False,
                    token: str | None = None, endpoint: str | None = None):
    """Push the pruned model of a structured run (card rendered with its repo id); one ``PushRecord``."""
    from huggingface_hub import HfApi, constants, get_token

    from ..card_structured import write_structured_card
    from ..errors import HubError
    from ..hub_retry import _hub_error, with_retries

    helpers = _push_api()
    PushRecord, _load_summary, _write_summary = helpers.PushRecord, helpers._load_summary, helpers._write_summary

    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    folder = _model_dir(run_dir, results)
    repo_id = structured_repo_name(results, namespace)
    vid = "structured"
    if dry_run:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        log.info("dry run: would push %s to %s (%s)", folder, repo_id, ", ".join(files))
        return [PushRecord(vid, repo_id, "dry-run")]
    if token is None and get_token() is None:
        raise HubError("No Hugging Face token found: run `hf auth login` or set HF_TOKEN, then rerun push.")
    write_structured_card(folder, results, repo_id=repo_id)  # load snippets name the repo
    api = HfApi(endpoint=endpoint, token=token)
    records = _load_summary(run_dir)
    try:
        with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True))
        before = with_retries(lambda: api.repo_info(repo_id)).sha
        info = with_retries(lambda: api.upload_folder(
            repo_id=repo_id, folder_path=folder,
            commit_message=f"hf-mixmatch: structured, {results['achieved_sparsity']:.3f} of the parameters removed"))
        rec = PushRecord(vid, repo_id, "unchanged" if info.oid == before else "pushed", info.oid,
                         f"{api.endpoint}/{repo_id}")
    except Exception as exc:  # noqa: BLE001 - recorded in push_summary.json, then raised as one line
        err = exc if isinstance(exc, HfMixmatchError) else _hub_error(exc, f"pushing {folder} to {repo_id}",
                                                                       namespace=namespace)
        records[vid] = PushRecord(vid, repo_id, "failed", error=str(err))
        _write_summary(run_dir, records, api.endpoint or constants.ENDPOINT, namespace)
        raise err from exc
    records[vid] = rec
    _write_summary(run_dir, records, api.endpoint or constants.ENDPOINT, namespace)
    return [rec]
