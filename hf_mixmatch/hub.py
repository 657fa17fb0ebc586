"""Publish pruned variants to the Hugging Face Hub, find published ones, and download them safely.

``push_run`` makes one repo and one ``upload_folder`` commit per saved variant of a run (the folders already hold
their model card and weights) and records what happened in ``push_summary.json``; ``list_pruned`` finds
published variants through the ``hf-mixmatch`` and ``base_model:`` tags and reads their numbers from the card
metadata; ``download`` fetches a variant's safetensors files and refuses pickle-only repos.

The token comes from the standard places (``HF_TOKEN``, the ``hf auth login`` store) through ``HfApi``; it is
never printed, logged or written anywhere by this module.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from .errors import ConfigError, HfMixmatchError, HubError, UnsafeWeightsError

logger = logging.getLogger(__name__)

MAX_REPO_NAME = 96
SUMMARY_FILE = "push_summary.json"
UNSAFE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")
STATUSES = ("pushed", "unchanged", "failed", "dry-run")
_SEARCH_CAP = 10_000  # most listings read from the Hub in one search
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


@dataclass
class PushRecord:
    """What happened to one variant: ``status`` is ``pushed`` only once its commit exists on the Hub."""

    variant_id: str
    repo_id: str
    status: str
    commit: str | None = None
    url: str | None = None
    error: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


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


# ------------------------------------------------------------------------------------------------ names


def _clean(part: str) -> str:
    part = part.replace("+", "-plus")  # "uniform+" must not collide with "uniform"
    part = re.sub(r"[^A-Za-z0-9._-]+", "-", part)
    part = re.sub(r"[-._]*-[-._]*", "-", part)  # any run of separators holding a dash becomes one dash
    part = re.sub(r"\.{2,}", ".", part)
    return part.strip("-._")


def repo_name_for(base_model: str, signal: str, strategy: str, namespace: str) -> str:
    """``<namespace>/<base>-mixmatch-<signal>-<strategy>``: sanitized, at most 96 characters, deterministic."""
    if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace) or "--" in namespace \
            or ".." in namespace:
        raise ConfigError(f"Invalid namespace {namespace!r}: use your Hub user or organization name.")
    base = _clean(str(base_model).rstrip("/").split("/")[-1]) or "model"
    name = _clean(f"{base}-mixmatch-{_clean(signal)}-{_clean(strategy)}")
    if len(name) > MAX_REPO_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = _clean(name[:MAX_REPO_NAME - len(digest) - 1]) + "-" + digest
    return f"{namespace}/{name}"


# ------------------------------------------------------------------------------------------------ errors


def _is_network_error(exc: BaseException) -> bool:
    """Transport failures of the client's HTTP library, recognised without importing it."""
    for cls in type(exc).__mro__:
        root = cls.__module__.split(".")[0]
        if root in ("httpx", "httpx2", "requests", "urllib3") and cls.__name__ in (
                "TransportError", "NetworkError", "TimeoutException", "RemoteProtocolError", "ConnectionError",
                "ProtocolError", "Timeout"):
            return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def _hub_cause(exc: BaseException) -> BaseException | None:
    """The HTTP or network error behind ``exc`` (the client wraps upload failures in RuntimeError), if any."""
    from huggingface_hub.errors import HfHubHTTPError

    for _ in range(10):  # bounded walk down the exception chain
        if exc is None:
            return None
        if isinstance(exc, HfHubHTTPError) or _is_network_error(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _hub_error(exc: BaseException, what: str, *, namespace: str | None = None) -> HubError:
    """One-line :class:`HubError` saying what failed and how to fix it."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rerun = "retry (rerunning a push completes the remaining variants)"
    exc = _hub_cause(exc) or exc
    if isinstance(exc, RepositoryNotFoundError):
        hint = "repository not found or not accessible: check the repo id / --namespace and that you are " \
               "logged in (`hf auth login` or HF_TOKEN) with access to it"
    elif isinstance(exc, RevisionNotFoundError):
        hint = "revision not found: check --revision"
    elif isinstance(exc, EntryNotFoundError):
        hint = "file not found in the repository"
    elif isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if getattr(exc, "response", None) is not None else None
        if status == 401:
            hint = "not authenticated: run `hf auth login` or set HF_TOKEN to a token with write access"
        elif status == 403:
            hint = f"no write access to namespace {namespace!r}: check --namespace or use a token with write rights"
        elif status is not None and status >= 500:
            hint = f"the Hub answered HTTP {status} after retries: try again later and {rerun}"
        else:
            hint = f"the Hub answered HTTP {status}: {str(exc).splitlines()[0] if str(exc) else ''}"
    elif _is_network_error(exc):
        hint = f"network error ({type(exc).__name__}): check your connection and HF_ENDPOINT, then {rerun}"
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f"{type(exc).__name__}: {first}"
    return HubError(f"{what} failed: {hint}".replace("\n", " "))


# ------------------------------------------------------------------------------------------------ push


def _read_results(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: pass the output directory of a finished `hf-mixmatch prune` run.")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): rerun the pruning to regenerate it.")
    if not isinstance(results, dict) or not isinstance(results.get("variants"), list) \
            or not isinstance(results.get("base_model"), str):
        raise ConfigError(f"{path} lacks 'base_model'/'variants': rerun the pruning to regenerate it.")
    return results


def _write_summary(run_dir: Path, records: dict[str, PushRecord], endpoint: str, namespace: str):
    data = {"endpoint": endpoint, "namespace": namespace,
            "variants": [asdict(r) for r in records.values()]}
    tmp = run_dir / f".{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, run_dir / SUMMARY_FILE)


def _load_summary(run_dir: Path) -> dict[str, PushRecord]:
    try:
        data = json.loads((run_dir / SUMMARY_FILE).read_text())
        return {v["variant_id"]: PushRecord(**v) for v in data.get("variants", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _progress(iterable, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=os.environ.get("HF_MIXMATCH_NO_PROGRESS") == "1", **kwargs)


def push_run(run_dir, *, namespace: str, private: bool = False, only_pareto: bool = False, dry_run: bool = False,
             token: str | None = None, endpoint: str | None = None) -> list[PushRecord]:
    """Push every saved variant of ``run_dir`` to ``<namespace>/<base>-mixmatch-<signal>-<strategy>``.

    One repo and one commit per variant; an unchanged variant makes no new commit (status ``unchanged``).
    ``push_summary.json`` in ``run_dir`` is rewritten after every variant, so a failed or interrupted push
    records exactly what is on the Hub and a rerun completes the rest. Raises :class:`HubError` after trying
    every variant if any of them failed.
    """
    from huggingface_hub import HfApi, constants, get_token

    run_dir = Path(run_dir)
    from .structured.publish import is_structured_run, push_structured

    if is_structured_run(run_dir):  # `hf-mixmatch structured` output: one model, one repo
        return push_structured(run_dir, namespace=namespace, private=private, dry_run=dry_run, token=token,
                               endpoint=endpoint)
    results = _read_results(run_dir)
    pareto = set(results.get("pareto") or [])
    variants = [v for v in results["variants"] if v.get("path") and (not only_pareto or v.get("id") in pareto)]
    plan = []
    for v in variants:
        folder = run_dir / v["path"]
        if not folder.is_dir():
            raise ConfigError(f"variant folder {folder} is missing: rerun the pruning or fix 'path' in results.json.")
        plan.append((v, folder, repo_name_for(results["base_model"], v["signal"], v["strategy"], namespace)))
    if len({repo for _, _, repo in plan}) != len(plan):
        raise ConfigError("two variants map to the same repo name (same signal and strategy): "
                          "push them with --only-pareto or from separate runs.")

    api = HfApi(endpoint=endpoint, token=token)
    records = _load_summary(run_dir)
    if dry_run:
        out = [PushRecord(v["id"], repo, "dry-run") for v, _, repo in plan]
        for rec, (_, folder, _) in zip(out, plan):
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            logger.info("dry run: would push %s to %s (%s)", rec.variant_id, rec.repo_id, ", ".join(files))
        return out
    if token is None and get_token() is None:
        raise HubError("No Hugging Face token found: run `hf auth login` or set HF_TOKEN, then rerun push.")
    if (run_dir / "report.md").is_file():
        # a pipeline run: put each variant's repo id into its card (load snippets) and the family report
        from .report import write_report

        write_report(run_dir, results, repos={v["id"]: repo for v, _, repo in plan})

    pushed: list[PushRecord] = []
    first_error: HubError | None = None
    for v, folder, repo_id in _progress(plan, desc="push", unit="variant"):
        before = None
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            before = api.repo_info(repo_id).sha
            info = api.upload_folder(repo_id=repo_id, folder_path=folder,
                                     commit_message=f"hf-mixmatch: {v['id']} ({v['signal']}/{v['strategy']}, "
                                                    f"sparsity {float(v['sparsity']):.3f})")
            status = "unchanged" if info.oid == before else "pushed"
            rec = PushRecord(v["id"], repo_id, status, info.oid, f"{api.endpoint}/{repo_id}")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then reported once below
            err = _hub_error(exc, f"pushing {v['id']} to {repo_id}", namespace=namespace)
            if not isinstance(exc, (HfMixmatchError, ValueError, OSError)) and not _is_hub_exception(exc):
                records[v["id"]] = PushRecord(v["id"], repo_id, "failed", error=str(err))
                _write_summary(run_dir, records, api.endpoint or constants.ENDPOINT, namespace)
                raise
            rec = PushRecord(v["id"], repo_id, "failed", error=str(err))
            first_error = first_error or err
            logger.warning("%s", err)
        records[v["id"]] = rec
        pushed.append(rec)
        _write_summary(run_dir, records, api.endpoint or constants.ENDPOINT, namespace)
    if first_error is not None:
        failed = sum(r.status == "failed" for r in pushed)
        raise HubError(f"{failed} of {len(pushed)} variant(s) not pushed (see {run_dir / SUMMARY_FILE}); "
                       f"first error: {first_error}")
    return pushed


def _is_hub_exception(exc: BaseException) -> bool:
    return _hub_cause(exc) is not None


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
    card = model.card_data.to_dict() if model.card_data is not None else {}
    block = card.get("hf_mixmatch")
    if not isinstance(block, dict) or not isinstance(block.get("sparsity"), (int, float)):
        return None
    top1, top5, dataset = _metrics(card)
    base = card.get("base_model")
    base = base[0] if isinstance(base, list) and base else base
    return PrunedModelInfo(
        repo_id=model.id, base_model=base if isinstance(base, str) else None,
        signal=block.get("signal"), strategy=block.get("strategy"), sparsity=float(block["sparsity"]),
        accuracy=top1, top5=top5, dataset=dataset, last_modified=getattr(model, "last_modified", None),
        kind="structured" if block.get("method") == "structured" else "unstructured")


def list_pruned(base_model: str | None = None, *, author: str | None = None, min_accuracy: float | None = None,
                min_sparsity: float | None = None, sort: str = "accuracy", limit: int = 100,
                token: str | None = None, endpoint: str | None = None,
                kind: str | None = None) -> list[PrunedModelInfo]:
    """Published hf-mixmatch variants (of ``base_model`` if given), filtered and sorted best first.

    ``kind``: only ``structured`` (parameters removed) or ``unstructured`` (weights zeroed) models; with both,
    a sort by sparsity ranks each kind on its own (the two sparsities do not compare)."""
    from huggingface_hub import HfApi

    if kind not in (None, "structured", "unstructured"):
        raise ConfigError(f"kind must be 'structured' or 'unstructured', got {kind!r}.")

    if sort not in ("accuracy", "sparsity"):
        raise ConfigError(f"sort must be 'accuracy' or 'sparsity', got {sort!r}.")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}.")
    filters = ["hf-mixmatch"] + ([f"base_model:{base_model}"] if base_model else [])
    api = HfApi(endpoint=endpoint, token=token)
    found = []
    try:
        for model in itertools.islice(api.list_models(filter=filters, author=author, cardData=True), _SEARCH_CAP):
            info = _info_from_model(model)
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

    return sorted(found, key=key)[:limit]


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


def _cmd_push(args) -> int:
    records = push_run(args.run_dir, namespace=args.namespace, private=args.private, only_pareto=args.only_pareto,
                       dry_run=args.dry_run)
    for rec in records:
        if rec.status == "dry-run":
            print(f"would push {rec.variant_id} -> {rec.repo_id}")
        else:
            print(f"{rec.status:9s} {rec.repo_id} {rec.commit or ''}".rstrip())
    return 0


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
    infos = list_pruned(args.base_model, author=args.author, min_accuracy=args.min_accuracy,
                        min_sparsity=args.min_sparsity, sort=args.sort, limit=args.limit, kind=args.kind)
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
    p = subparsers.add_parser("push", help="push every saved variant of a run to the Hub")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                   help="output dir of `hf-mixmatch prune` or `hf-mixmatch structured`")
    p.add_argument("--namespace", required=True, help="Hub user or organization to push to")
    p.add_argument("--private", action="store_true", help="create the repos as private")
    p.add_argument("--only-pareto", action="store_true", help="push only the Pareto-optimal variants")
    p.add_argument("--dry-run", action="store_true", help="print what would be pushed, push nothing")
    p.set_defaults(func=_cmd_push)

    s = subparsers.add_parser("search", help="find published hf-mixmatch variants")
    s.add_argument("--base-model", default=None, help="only variants of this base model (Hub id)")
    s.add_argument("--author", default=None, help="only repos of this user or organization")
    s.add_argument("--min-accuracy", type=float, default=None, help="minimum top-1 accuracy (0-1) claimed by the card")
    s.add_argument("--min-sparsity", type=float, default=None, help="minimum sparsity (0-1) claimed by the card")
    s.add_argument("--sort", choices=("accuracy", "sparsity"), default="accuracy", help="sort key, descending")
    s.add_argument("--limit", type=int, default=100, help="at most this many results")
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
