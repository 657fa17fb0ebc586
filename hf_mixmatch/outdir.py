"""Run directories that remember what hf-mixmatch wrote into them.

Every run directory carries ``.hf-mixmatch-manifest.json``: the paths (relative to the directory) the tool
created, each recorded *before* it is written, so an interrupted write is still known to be ours. ``--overwrite``
removes exactly those entries (caches excepted) and nothing else; a non-empty directory without the manifest is
refused, and so are the working directory, the home directory and a filesystem root.

A folder that must appear whole or not at all (a structured model) is written by :func:`staged_dir` into a
recorded hidden sibling and renamed into place once complete; the earlier run's entries are cleared only then.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputDirError

MANIFEST = ".hf-mixmatch-manifest.json"
_TAG = "hf-mixmatch run directory"


def _protected(out: Path) -> str | None:
    """Why ``out`` may never be cleared (working dir, home, filesystem root), or None."""
    real = out.resolve()
    if real == Path(real.anchor) or real.parent == real:
        return "a filesystem root"
    if real == Path.cwd().resolve():
        return "the working directory"
    if real == Path.home().resolve():
        return "your home directory"
    return None


def read_manifest(out: Path) -> dict | None:
    """The manifest of ``out`` (``{"entries": {path: {"cache": bool}}}``), or None when absent or not ours."""
    try:
        data = json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != _TAG or not isinstance(data.get("entries"), dict):
        return None
    return data


def _write_manifest(out: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f"{MANIFEST}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, out / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record(out: str | os.PathLike, *paths: str, cache: bool = False) -> None:
    """Add ``paths`` (relative to ``out``) to the manifest: call it before writing them."""
    from .failure import check_interrupt

    check_interrupt()  # no write starts after Ctrl-C, even if a library swallowed the KeyboardInterrupt
    out = Path(out)
    data = read_manifest(out) or {"written_by": _TAG, "entries": {}}
    new = {p: {"cache": cache} for p in paths if data["entries"].get(p) != {"cache": cache}}
    if new:
        data["entries"].update(new)
        _write_manifest(out, data)


def check_output_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Raise :class:`OutputDirError` if ``path`` cannot become a run dir; touches nothing (call it first)."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output-dir {out} is a file: pass a directory path")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    manifest = read_manifest(out)
    if manifest is None:
        raise OutputDirError(f"--output-dir {out} is not empty and was not written by hf-mixmatch (no {MANIFEST}); "
                             "nothing in it is deleted: pass a new or empty directory")
    entries = manifest["entries"]
    if all(c.name == MANIFEST or entries.get(c.name, {}).get("cache")
           or (entries.get(c.name, {}).get("dir") and c.is_dir() and not any(c.iterdir())) for c in out.iterdir()):
        return out  # only caches (and empty folders) of a run that stopped early: reuse them, no --overwrite needed
    if not overwrite:
        raise OutputDirError(f"--output-dir {out} holds an earlier run: pass --overwrite to replace it "
                             "(only files hf-mixmatch wrote are removed) or another directory")
    why = _protected(out)
    if why:
        raise OutputDirError(f"--output-dir {out} is {why}; refusing to --overwrite it: pass a subdirectory")
    return out


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def clear_run(out: Path, *, keep: Iterable[str] = ()) -> list[str]:
    """Remove the manifest's non-cache entries from ``out`` (never anything else) but those in ``keep``; returns
    what was removed."""
    data = read_manifest(out) or {"written_by": _TAG, "entries": {}}
    root = out.resolve()
    keep = set(keep)
    removed = []
    # deepest first, so a recorded folder is emptied of its recorded children before its own turn
    for rel in sorted(data["entries"], key=lambda p: p.count("/"), reverse=True):
        if data["entries"][rel].get("cache") or rel in keep:
            continue
        target = out / rel
        if root not in target.resolve().parents:  # an edited manifest never reaches outside the run dir
            continue
        if data["entries"][rel].get("dir") and target.is_dir() and any(target.iterdir()):
            continue  # a folder we created holds something we did not record: keep it
        _remove(target)
        removed.append(rel)
    data["entries"] = {k: v for k, v in data["entries"].items() if k not in removed}
    _write_manifest(out, data)
    return removed


def record_dir(out: str | os.PathLike, path: str) -> None:
    """Record a folder hf-mixmatch creates to hold recorded entries (removed only once empty)."""
    out = Path(out)
    data = read_manifest(out) or {"written_by": _TAG, "entries": {}}
    if path not in data["entries"]:
        data["entries"][path] = {"cache": False, "dir": True}
        _write_manifest(out, data)


def open_output_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Create ``path`` as a run dir with a manifest, clearing nothing: an earlier run's entries stay until
    :func:`staged_dir` (or :func:`clear_run`) replaces them. Refuses what :func:`check_output_dir` refuses."""
    out = check_output_dir(path, overwrite=overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if read_manifest(out) is None:
            _write_manifest(out, {"written_by": _TAG, "entries": {}})
    except OSError as exc:
        raise OutputDirError(f"cannot write to --output-dir {out} ({exc.strerror or exc}): pass a writable "
                             "directory") from exc
    return out


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Create ``path`` as a run dir with a manifest; with ``overwrite`` clear what an earlier run wrote there
    (caches kept). Refuses what :func:`check_output_dir` refuses."""
    out = open_output_dir(path, overwrite=overwrite)
    try:
        clear_run(out)
    except OSError as exc:
        raise OutputDirError(f"cannot write to --output-dir {out} ({exc.strerror or exc}): pass a writable "
                             "directory") from exc
    return out


def contains(root: str | os.PathLike, rel: str | os.PathLike) -> Path | None:
    """``root/rel`` resolved, if it lies inside ``root`` (symlinks followed); None otherwise."""
    base = Path(root).resolve()
    target = (base / rel).resolve()
    return target if target != base and base in target.parents else None


def _forget(out: Path, rel: str) -> None:
    """Remove ``out/rel`` (recorded by us) and its manifest entry."""
    _remove(out / rel)
    data = read_manifest(out)
    if data is not None and data["entries"].pop(rel, None) is not None:
        _write_manifest(out, data)


@contextmanager
def staged_dir(out: str | os.PathLike, name: str) -> Iterator[Path]:
    """Yield an empty folder to write ``out/name`` into; it appears at ``out/name`` only once the block completes.

    The folder is a hidden sibling ``.<name>.partial-<id>`` inside ``out``, recorded in the manifest before it is
    created; on an error it is removed. On success the earlier run's entries are cleared (but its ``name``),
    then two renames swap the earlier ``name`` (ours, recorded) aside and the new one into place, and the earlier
    one is removed. A ``name`` hf-mixmatch did not record is never touched: the run stops before writing."""
    out = Path(out)
    final = out / name
    entries = (read_manifest(out) or {}).get("entries", {})
    if (final.exists() or final.is_symlink()) and (name not in entries or entries[name].get("cache")):
        raise OutputDirError(f"{final} was not written by hf-mixmatch; nothing in it is replaced: move it away or "
                             "pass another --output-dir")
    token = uuid.uuid4().hex[:12]
    partial = f".{name}.partial-{token}"
    record(out, partial)
    try:
        (out / partial).mkdir()
        yield out / partial
    except BaseException:
        try:
            _forget(out, partial)
        except OSError:
            pass  # still recorded: the next --overwrite removes it
        raise
    clear_run(out, keep={name, partial})  # no stale results beside the new folder; the earlier one still whole
    old = None
    if final.exists() or final.is_symlink():
        old = f".{name}.old-{token}"
        record(out, old)
        os.replace(final, out / old)
    record(out, name)
    os.replace(out / partial, final)
    data = read_manifest(out)
    data["entries"].pop(partial, None)
    _write_manifest(out, data)
    if old is not None:
        _forget(out, old)
