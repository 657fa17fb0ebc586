"""Find published variants on the Hugging Face Hub and download them safely; the ``push``, ``search`` and
``download`` commands.

``list_pruned`` finds published variants through the ``hf-mixmatch`` and ``base_model:`` tags and reads their
numbers from the card metadata (claims that are not numbers in range are skipped and counted); ``download``
fetches a variant's safetensors files and refuses pickle-only repos. Pushing lives in :mod:`hf_mixmatch.push`
(re-exported here), retries and error messages in :mod:`hf_mixmatch.hub_retry`.

The token comes from the standard places (``HF_TOKEN``, the ``hf auth login`` store) through ``HfApi``; it is
never printed, logged or written anywhere by this module.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import logging
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from .errors import ConfigError, HfMixmatchError, HubError, UnsafeWeightsError
from .hub_retry import RETRY_ATTEMPTS, _hub_error, _is_hub_exception, with_retries  # noqa: F401 - re-exported
from .push import (PushRecord, _cmd_push, add_push_naming, push_run, repo_name_for,  # noqa: F401 - re-exported
                   run_id_of)

logger = logging.getLogger(__name__)

UNSAFE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")
_SEARCH_CAP = 10_000  # most listings read from the Hub in one search


@dataclass
class PrunedModelInfo:
    """A published hf-mixmatch variant, with the numbers its card claims."""

    repo_id: str
    base_model: str | None
    signal: str | None
    strategy: str | None
    sparsity: float
    accuracy: float | None
    top5: float | None
    dataset: str | None
    last_modified: datetime | None
    kind: str = "unstructured"  # "structured": sparsity is the share of parameters removed, not of zeros

    def to_json(self) -> dict:
        out = asdict(self)
        out["last_modified"] = self.last_modified.isoformat() if self.last_modified else None
        return out


# ------------------------------------------------------------------------------------------------ search


def _metrics(card: dict) -> tuple[float | None, float | None, str | None]:
    """Top-1 and top-5 accuracy and the dataset, read from the card's model-index."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    index = card.get("model-index")
    if not index:
        return None, None, None
    try:
        _, results = model_index_to_eval_results(index)
    except (KeyError, TypeError, ValueError):
        return None, None, None
    top1 = top5 = dataset = None
    for r in results:
        label = f"{r.metric_type} {r.metric_name or ''}".lower().replace("-", "").replace("_", "")
        if "top5" in label or "top 5" in label:
            top5 = float(r.metric_value) if top5 is None else top5
        elif r.metric_type == "accuracy" and top1 is None:
            top1, dataset = float(r.metric_value), r.dataset_type
    return top1, top5, dataset


def _info_from_model(model) -> PrunedModelInfo | None:
    """The listing's claims, or None when it has no ``hf_mixmatch`` block; :class:`ClaimError` when a claim is
    not a number in range (NaN, inf, text, < 0 or > 1)."""
    from .claims import claim_number

    card = model.card_data.to_dict() if model.card_data is not None else {}
    block = card.get("hf_mixmatch")
    if not isinstance(block, dict):
        return None
    try:
        top1, top5, dataset = _metrics(card)
    except (TypeError, ValueError):  # a metric value that is not a number
        top1 = top5 = dataset = "not a number"
    where = str(model.id)
    sparsity = claim_number(block.get("sparsity"), "sparsity", where)
    top1 = None if top1 is None else claim_number(top1, "accuracy", where)
    top5 = None if top5 is None else claim_number(top5, "top5", where)
    base = card.get("base_model")
    base = base[0] if isinstance(base, list) and base else base
    return PrunedModelInfo(
        repo_id=model.id, base_model=base if isinstance(base, str) else None,
        signal=block.get("signal"), strategy=block.get("strategy"), sparsity=sparsity,
        accuracy=top1, top5=top5, dataset=dataset if dataset != "not a number" else None,
        last_modified=getattr(model, "last_modified", None),
        kind="structured" if block.get("method") == "structured" else "unstructured")


def list_pruned(base_model: str | None = None, *, author: str | None = None, min_accuracy: float | None = None,
                min_sparsity: float | None = None, sort: str = "accuracy", limit: int = 100,
                token: str | None = None, endpoint: str | None = None, kind: str | None = None) -> list[PrunedModelInfo]:
    """Published hf-mixmatch variants (of ``base_model`` if given), filtered and sorted best first. Listings whose
    claims are not numbers in range are skipped (``search_pruned`` also returns how many).

    ``kind``: only ``structured`` (parameters removed) or ``unstructured`` (weights zeroed) models; with both,
    a sort by sparsity ranks each kind on its own (the two sparsities do not compare)."""
    return search_pruned(base_model, author=author, min_accuracy=min_accuracy, min_sparsity=min_sparsity, sort=sort,
                         limit=limit, token=token, endpoint=endpoint, kind=kind)[0]


def search_pruned(base_model: str | None = None, *, author: str | None = None, min_accuracy: float | None = None,
                  min_sparsity: float | None = None, sort: str = "accuracy", limit: int = 100,
                  token: str | None = None, endpoint: str | None = None,
                  kind: str | None = None) -> tuple[list[PrunedModelInfo], list[str]]:
    """(variants as :func:`list_pruned` returns them, repo ids skipped because a claim is not a number in range)."""
    from huggingface_hub import HfApi

    from .claims import claim_number
    from .errors import ClaimError

    for name, value in (("--min-accuracy", min_accuracy), ("--min-sparsity", min_sparsity)):
        if value is not None:
            try:
                claim_number(value, "accuracy", name)
            except ClaimError:
                raise ConfigError(f"{name} must be a number in [0, 1], got {value}") from None
    if kind not in (None, "structured", "unstructured"):
        raise ConfigError(f"kind must be 'structured' or 'unstructured', got {kind!r}.")
    if sort not in ("accuracy", "sparsity"):
        raise ConfigError(f"sort must be 'accuracy' or 'sparsity', got {sort!r}.")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}.")
    filters = ["hf-mixmatch"] + ([f"base_model:{base_model}"] if base_model else [])
    api = HfApi(endpoint=endpoint, token=token)
    found, skipped = [], []
    try:
        for model in itertools.islice(api.list_models(filter=filters, author=author, cardData=True), _SEARCH_CAP):
            try:
                info = _info_from_model(model)
            except ClaimError as exc:
                logger.warning("skipped: %s", exc)
                skipped.append(str(model.id))
                continue
            if info is None:
                continue
            if min_accuracy is not None and (info.accuracy is None or info.accuracy < min_accuracy):
                continue
            if min_sparsity is not None and info.sparsity < min_sparsity:
                continue
            if kind is not None and info.kind != kind:
                continue
            found.append(info)
    except Exception as exc:
        if _is_hub_exception(exc):
            raise _hub_error(exc, "searching the Hub") from exc
        raise

    def key(info: PrunedModelInfo):
        value = info.accuracy if sort == "accuracy" else info.sparsity
        return (info.kind if sort == "sparsity" else "", value is None, -(value or 0.0), info.repo_id)

    return sorted(found, key=key)[:limit], skipped


# ------------------------------------------------------------------------------------------------ download


def _is_unsafe(path: str) -> bool:
    return any(fnmatch.fnmatch(path.lower(), pat) for pat in UNSAFE_PATTERNS)


def download(repo_id: str, *, revision: str | None = None, local_dir=None, token: str | None = None,
             endpoint: str | None = None) -> Path:
    """Download a variant's files except pickle weights; refuse a repo whose only weights are pickles."""
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=endpoint, token=token)
    try:
        files = api.list_repo_files(repo_id, revision=revision)
        weights = [f for f in files if f.endswith(".safetensors")]
        unsafe = [f for f in files if _is_unsafe(f)]
        if not weights:
            if unsafe:
                raise UnsafeWeightsError(
                    f"{repo_id} only has pickle weights ({', '.join(unsafe[:3])}); hf_mixmatch loads safetensors "
                    "only: ask the author to publish model.safetensors.")
            raise HubError(f"{repo_id} has no .safetensors weights: check the repo id and --revision.")
        safe = [f for f in files if not _is_unsafe(f)]
        path = snapshot_download(repo_id, revision=revision, local_dir=local_dir, token=token, endpoint=endpoint,
                                 allow_patterns=safe, ignore_patterns=list(UNSAFE_PATTERNS))
    except HfMixmatchError:
        raise
    except Exception as exc:
        if _is_hub_exception(exc) or isinstance(exc, OSError):
            raise _hub_error(exc, f"downloading {repo_id}") from exc
        raise
    return Path(path)


# ------------------------------------------------------------------------------------------------ CLI


def format_table(infos: list[PrunedModelInfo]) -> str:
    """An aligned text table: repo, signal, strategy, sparsity, accuracy."""
    rows = [("repo", "signal", "strategy", "sparsity", "accuracy")]
    for i in infos:
        rows.append((i.repo_id, i.signal or "-", i.strategy or "-", f"{i.sparsity:.4f}",
                     "-" if i.accuracy is None else f"{i.accuracy:.4f}"))
    if any(i.kind != "unstructured" for i in infos):  # structured sparsity removes parameters: say which is which
        rows = [(*r, "kind" if n == 0 else infos[n - 1].kind) for n, r in enumerate(rows)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[c].ljust(widths[c]) if c < 3 or c == 5 else r[c].rjust(widths[c]) for c in range(len(r))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _cmd_search(args) -> int:
    infos, skipped = search_pruned(args.base_model, author=args.author, min_accuracy=args.min_accuracy,
                                   min_sparsity=args.min_sparsity, sort=args.sort, limit=args.limit,
                                   kind=args.kind)
    if skipped:
        print(f"hf-mixmatch: skipped {len(skipped)} repo(s) whose card claims are not numbers in [0, 1]: "
              f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=2))
    elif infos:
        print(format_table(infos))
    else:
        print("no hf-mixmatch variants found", file=sys.stderr)
    return 0


def _cmd_download(args) -> int:
    print(download(args.repo, revision=args.revision, local_dir=args.local_dir))
    return 0


def add_cli(subparsers) -> None:
    """Register the ``push``, ``search`` and ``download`` subcommands on an argparse subparsers object."""
    from .argtypes import fraction, positive_int

    p = subparsers.add_parser("push", help="push every saved variant of a run to the Hub")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="output dir of `hf-mixmatch prune` or `hf-mixmatch structured`")
    p.add_argument("--namespace", required=True, help="Hub user or organization to push to")
    p.add_argument("--private", action="store_true", help="create the repos as private")
    p.add_argument("--only-pareto", action="store_true", help="push only the Pareto-optimal variants")
    p.add_argument("--dry-run", action="store_true", help="print what would be pushed, push nothing")
    add_push_naming(p)
    p.set_defaults(func=_cmd_push)

    s = subparsers.add_parser("search", help="find published hf-mixmatch variants")
    s.add_argument("--base-model", default=None, help="only variants of this base model (Hub id)")
    s.add_argument("--author", default=None, help="only repos of this user or organization")
    s.add_argument("--min-accuracy", type=fraction, default=None, help="minimum top-1 accuracy (0-1) claimed by the card")
    s.add_argument("--min-sparsity", type=fraction, default=None, help="minimum sparsity (0-1) claimed by the card")
    s.add_argument("--sort", choices=("accuracy", "sparsity"), default="accuracy", help="sort key, descending")
    s.add_argument("--limit", type=positive_int, default=100, help="at most this many results")
    s.add_argument("--kind", choices=("structured", "unstructured"), default=None,
                   help="only structured (parameters removed) or unstructured (weights zeroed) models")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_cmd_search)

    d = subparsers.add_parser("download", help="download a published variant (safetensors only)")
    d.add_argument("repo", metavar="REPO", help="Hub repo id of the variant")
    d.add_argument("--revision", default=None, help="branch, tag or commit")
    d.add_argument("--local-dir", default=None, type=Path, help="save here instead of the HF cache")
    d.set_defaults(func=_cmd_download)


__all__ = ["PrunedModelInfo", "PushRecord", "add_cli", "download", "format_table", "list_pruned", "push_run",
           "repo_name_for"]
