"""Publish a run's variants: one repo and one ``upload_folder`` commit per saved variant (the folders already hold
their model card and weights), recorded in ``push_summary.json``.

Repo names carry the run id (or ``--repo-prefix``) so two runs never share repos; a repo holding another run's
commits is refused unless ``force``; only folders inside the run directory are pushed; every Hub call is retried
(:mod:`hf_mixmatch.hub_retry`). The token comes from the standard places (``HF_TOKEN``, ``hf auth login``) through
``HfApi``; it is never printed, logged or written anywhere by this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError, HfMixmatchError, HubError
from .hub_retry import _Exhausted, _hub_error, _is_hub_exception, with_retries

logger = logging.getLogger(__name__)

MAX_REPO_NAME = 96
SUMMARY_FILE = "push_summary.json"
STATUSES = ("pushed", "unchanged", "failed", "dry-run")
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


# ------------------------------------------------------------------------------------------------ names


def _clean(part: str) -> str:
    part = part.replace("+", "-plus")  # "uniform+" must not collide with "uniform"
    part = re.sub(r"[^A-Za-z0-9._-]+", "-", part)
    part = re.sub(r"[-._]*-[-._]*", "-", part)  # any run of separators holding a dash becomes one dash
    part = re.sub(r"\.{2,}", ".", part)
    return part.strip("-._")


def repo_name_for(base_model: str, signal: str, strategy: str, namespace: str, *, run_id: str | None = None,
                  prefix: str | None = None) -> str:
    """``<namespace>/<base>-mixmatch[-<run_id>]-<signal>-<strategy>``, or ``<namespace>/<prefix>-<signal>-<strategy>``
    with a ``prefix``: sanitized, at most 96 characters, deterministic. The run id keeps two runs on the same base
    model from pushing to the same repos."""
    if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace) or "--" in namespace \
            or ".." in namespace:
        raise ConfigError(f"Invalid namespace {namespace!r}: use your Hub user or organization name.")
    if prefix is not None and not _clean(prefix):
        raise ConfigError(f"Invalid --repo-prefix {prefix!r}: use letters, digits, '-', '_' or '.'.")
    base = _clean(str(base_model).rstrip("/").split("/")[-1]) or "model"
    head = _clean(prefix) if prefix else (f"{base}-mixmatch" + (f"-{_clean(run_id)}" if run_id else ""))
    name = _clean(f"{head}-{_clean(signal)}-{_clean(strategy)}")
    if len(name) > MAX_REPO_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = _clean(name[:MAX_REPO_NAME - len(digest) - 1]) + "-" + digest
    return f"{namespace}/{name}"


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


def run_id_of(results: dict) -> str:
    """The run's short id: ``results["run_id"]`` (written by prune), else a digest of its variants (older runs)."""
    if results.get("run_id"):
        return str(results["run_id"])
    text = json.dumps([[v.get("id"), v.get("sparsity"), v.get("accuracy")] for v in results["variants"]], default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _run_marker(run_id: str) -> str:
    return f"[hf-mixmatch run {run_id}]"


def _variant_folder(run_dir: Path, v: dict) -> Path:
    """The variant's folder, only if it and every file in it resolve inside the run directory."""
    from .outdir import contains

    folder = contains(run_dir, str(v["path"]))
    if folder is None:
        raise ConfigError(f"variant {v.get('id')!r}: its path {v['path']!r} in results.json points outside "
                          f"{run_dir}: only folders inside the run directory are pushed; fix 'path' or rerun prune.")
    if not folder.is_dir():
        raise ConfigError(f"variant folder {folder} is missing: rerun the pruning or fix 'path' in results.json.")
    outside = [p for p in folder.rglob("*") if p.is_file() and contains(run_dir, p.relative_to(run_dir.resolve()))
               is None]
    if outside:
        raise ConfigError(f"{outside[0]} in variant folder {folder} links outside {run_dir}: remove the link, "
                          "only files inside the run directory are pushed.")
    return folder


def _check_owner(api, repo_id: str, run_id: str, force: bool) -> tuple[str | None, bool]:
    """(the repo's head commit before this push or None when it does not exist, whether that head is a commit of
    this run). Refuses a repo that holds commits but none from this run (another run's variant, or someone
    else's files) unless ``force``."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        head = with_retries(lambda: api.repo_info(repo_id).sha)
    except RepositoryNotFoundError:
        return None, False
    commits = with_retries(lambda: api.list_repo_commits(repo_id))
    mine = [_run_marker(run_id) in (c.title or "") + (c.message or "") for c in commits]
    if len(commits) > 1 and not any(mine) and not force:
        raise ConfigError(f"{repo_id} already holds commits from another run or person: pass --repo-prefix to push "
                          "under other names, or --force to push over it")
    return head, bool(mine and mine[0])


def push_run(run_dir, *, namespace: str, private: bool = False, only_pareto: bool = False, dry_run: bool = False,
             token: str | None = None, endpoint: str | None = None, repo_prefix: str | None = None,
             force: bool = False) -> list[PushRecord]:
    """Push every saved variant of ``run_dir`` to ``<namespace>/<base>-mixmatch-<run id>-<signal>-<strategy>``
    (``<namespace>/<repo_prefix>-<signal>-<strategy>`` with a prefix).

    One repo and one commit per variant; an unchanged variant makes no new commit (status ``unchanged``).
    Every Hub call is retried on 429 / 5xx / connection errors with exponential back-off and jitter.
    ``push_summary.json`` in ``run_dir`` is rewritten after every variant, so a failed or interrupted push
    records exactly what is on the Hub and a rerun completes the rest (a commit whose response was lost is
    recognised then). Only folders inside ``run_dir`` are pushed; a repo holding another run's commits is
    refused unless ``force``. Raises :class:`HubError` after trying every variant if any of them failed.
    """
    from huggingface_hub import HfApi, constants, get_token

    from .outdir import read_manifest, record

    run_dir = Path(run_dir)
    from .structured.publish import is_structured_run, push_structured

    if is_structured_run(run_dir):  # `hf-mixmatch structured` output: one model, one repo
        return push_structured(run_dir, namespace=namespace, private=private, dry_run=dry_run, token=token,
                               endpoint=endpoint)
    results = _read_results(run_dir)
    run_id = run_id_of(results)
    named_run_id = run_id if results.get("run_id") else None  # older runs keep their names
    pareto = set(results.get("pareto") or [])
    variants = [v for v in results["variants"] if v.get("path") and (not only_pareto or v.get("id") in pareto)]
    plan = []
    for v in variants:
        folder = _variant_folder(run_dir, v)
        plan.append((v, folder, repo_name_for(results["base_model"], v["signal"], v["strategy"], namespace,
                                              run_id=named_run_id, prefix=repo_prefix)))
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
    if read_manifest(run_dir) is not None:  # a run dir hf-mixmatch made: the summary joins its manifest
        record(run_dir, SUMMARY_FILE)
    if (run_dir / "report.md").is_file():
        # a pipeline run: put each variant's repo id into its card (load snippets) and the family report
        from .report import write_report

        write_report(run_dir, results, repos={v["id"]: repo for v, _, repo in plan})

    pushed: list[PushRecord] = []
    first_error: HubError | None = None
    for v, folder, repo_id in _progress(plan, desc="push", unit="variant"):
        try:
            before, head_is_ours = _check_owner(api, repo_id, run_id, force)
            if before is None:
                with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True))
                before = with_retries(lambda: api.repo_info(repo_id).sha)
            message = (f"hf-mixmatch: {v['id']} ({v['signal']}/{v['strategy']}, sparsity {float(v['sparsity']):.3f}) "
                       f"{_run_marker(run_id)}")
            info = with_retries(lambda: api.upload_folder(repo_id=repo_id, folder_path=folder,
                                                          commit_message=message))
            status = "unchanged" if info.oid == before else "pushed"
            prev = records.get(v["id"])
            if status == "unchanged" and head_is_ours and prev is not None and prev.status == "failed" \
                    and prev.repo_id == repo_id:
                status = "pushed"  # this run's earlier commit went through although its response was lost
            rec = PushRecord(v["id"], repo_id, status, info.oid, f"{api.endpoint}/{repo_id}")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then reported once below
            err = exc if isinstance(exc, ConfigError) else _hub_error(exc, f"pushing {v['id']} to {repo_id}",
                                                                      namespace=namespace)
            if not isinstance(exc, (HfMixmatchError, ValueError, OSError, _Exhausted)) and not _is_hub_exception(exc):
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


# ------------------------------------------------------------------------------------------------ CLI


def _cmd_push(args) -> int:
    records = push_run(args.run_dir, namespace=args.namespace, private=args.private, only_pareto=args.only_pareto,
                       dry_run=args.dry_run, repo_prefix=args.repo_prefix, force=args.force)
    for rec in records:
        if rec.status == "dry-run":
            print(f"would push {rec.variant_id} -> {rec.repo_id}")
        else:
            print(f"{rec.status:9s} {rec.repo_id} {rec.commit or ''}".rstrip())
    return 0


def add_push_naming(p) -> None:
    """``--repo-prefix`` and ``--force``, shared by ``push`` and ``prune --push-to``."""
    p.add_argument("--repo-prefix", default=None,
                   help="name the repos <namespace>/<PREFIX>-<signal>-<strategy> (default: "
                        "<base>-mixmatch-<run id>-<signal>-<strategy>)")
    p.add_argument("--force", action="store_true",
                   help="push even over a repo that holds commits from another run or person")
