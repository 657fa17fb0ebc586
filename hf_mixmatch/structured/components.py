"""Components: sets of modules named by patterns (``fnmatch`` globs, or regexes prefixed ``re:``).

A coupled group whose members fall in two or more components is kept dense (see :mod:`.groups`).
"""

from __future__ import annotations

import fnmatch
import re

from torch import nn

from ..errors import ConfigError

_REST = "_rest"


def parse_components(specs) -> dict[str, list[str]]:
    """``["encoder=encoder.*", "decoder=decoder.*,head*"]`` or a dict → ``{name: [pattern, ...]}``.

    A bare pattern without ``name=`` is its own component, named by the pattern.
    """
    if specs is None:
        return {}
    if isinstance(specs, dict):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in specs.items()}
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, pats = str(spec).partition("=")
        if not sep:
            name, pats = spec, spec
        patterns = [p.strip() for p in pats.split(",") if p.strip()]
        if not name.strip() or not patterns:
            raise ConfigError(f"component '{spec}' is empty: write NAME=PATTERN[,PATTERN...] e.g. encoder=encoder.*")
        out.setdefault(name.strip(), []).extend(patterns)
    return out


def _match(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


_STEM = ("*embedder*", "*embeddings*", "*patch_embed*", "stem*", "conv1", "bn1", "*.stem*")
_HEAD = ("classifier*", "head*", "fc", "fc_norm", "norm", "*.pooler*", "pooler*", "*.layernorm", "global_pool*")


LAYOUTS = ("stem-stages-head", "body-head")


def derive_components(model: nn.Module, layout: str = "stem-stages-head") -> dict[str, list[str]]:
    """Components of a known layout: ``encoder``/``decoder`` for autoencoders, else ``stem``/``stages``/``head``.

    ``layout="body-head"``: the stem joins the stages in one ``body`` component, so the stream the stem writes
    (in a ResNet, the first stage's residual stream) becomes prunable too; only the head stays apart.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown component layout '{layout}': use one of {', '.join(LAYOUTS)}")
    top = dict(model.named_children())
    if "encoder" in top and "decoder" in top and len(top) <= 3:
        return {"encoder": ["encoder"], "decoder": ["decoder"]}
    if layout == "body-head":
        return {"head": list(_HEAD), "body": ["*"]}
    return {"stem": list(_STEM), "head": list(_HEAD), "stages": ["*"]}


def component_of(name: str, components: dict[str, list[str]]) -> str:
    """First component (in order) with a matching pattern, else ``_rest``."""
    for comp, patterns in components.items():
        if any(_match(name, p) for p in patterns):
            return comp
    return _REST
