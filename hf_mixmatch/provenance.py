"""What a public card or recipe may say about where a model or dataset comes from.

Hub ids are kept as given; a local folder or file becomes ``local:<name>@<content fingerprint>``, never its
path (:func:`public_ref`), and a reproduce command asks for a path to fill in instead (:func:`cli_arg`).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


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


def cli_arg(ref: str | None, placeholder: str) -> str:
    """A reproduce-command argument for ``ref``: Hub ids as they are, local refs as a path to fill in."""
    if not ref:
        return placeholder
    if ref.startswith("local:"):
        return "path/to/" + ref.removeprefix("local:").split("@")[0]
    return ref


def dataset_id(results: dict) -> str:
    """The dataset as it may appear in a public card: ``dataset_name`` when set, a Hub id, or a local folder's
    name and fingerprint (no local paths)."""
    if results.get("dataset_name"):
        return str(results["dataset_name"])
    return public_ref(str(results.get("dataset") or "unknown")) or "unknown"


def base_hub_id(results: dict) -> str | None:
    """The base model's Hub id (without ``hf-hub:``), or None when it is a local folder or file."""
    base = str(results.get("base_model") or "")
    return base.removeprefix("hf-hub:") if is_hub_id(base) and not Path(base).exists() else None
