"""Phase 1 of Mix-and-Match: a sparsity range [rho_min, rho_max] per layer, with a reason.

Two sources:
- ``observed`` (the paper): run global baseline criteria (magnitude, SNIP, GraSP) at global targets
  (default 0.7/0.8/0.9), record each layer's resulting sparsity, take min/max over the runs, then clamp
  with architecture rules (small layers, patch embeddings).
- ``preset`` (the authors' released code): declarative per-family rules in ``presets/*.json``.
A JSON file written by :meth:`RangeTable.save` can be passed back in as well.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .allocation_math import global_thresholds
from .errors import RangeError
from .layers import LayerInfo

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_TARGETS = (0.7, 0.8, 0.9)
OBSERVED_CRITERIA = ("magnitude", "snip", "grasp")
# Criteria the observed ranges do without when they could not be computed (GraSP needs a second derivative,
# which some operations lack, e.g. hardsigmoid): compute_scores warns, the run records it in results.json.
OPTIONAL_CRITERIA = ("grasp",)

# Architecture clamps applied to observed ranges (the paper's rules), first match wins.
SMALL_LAYER_PARAMS = 10_000
CLAMPS = (
    {"role": "patch_embed", "range": (0.15, 0.30), "reason": "patch embedding: paper's fixed range [0.15, 0.30]"},
    {"max_params": SMALL_LAYER_PARAMS, "range": (0.0, 0.10),
     "reason": "fewer than 10K weights: little to save, much to lose (paper's rule [0, 0.10])"},
)


@dataclass
class LayerRange:
    min: float
    max: float
    reason: str

    def __post_init__(self) -> None:
        if not (0.0 <= self.min <= self.max <= 1.0):
            raise RangeError(f"a range needs 0 <= min <= max <= 1, got [{self.min}, {self.max}] ({self.reason})")

    @property
    def delta(self) -> float:
        return self.max - self.min


@dataclass
class RangeTable:
    """Per-layer ranges plus where they came from."""

    ranges: dict[str, LayerRange]
    source: str  # "observed" | "preset:<family>" | "file:<path>"

    def __getitem__(self, name: str) -> LayerRange:
        return self.ranges[name]

    def to_dict(self) -> dict:
        return {"source": self.source, "ranges": {k: [v.min, v.max, v.reason] for k, v in self.ranges.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "RangeTable":
        try:
            ranges = {k: LayerRange(float(v[0]), float(v[1]), str(v[2]) if len(v) > 2 else "") for k, v in d["ranges"].items()}
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise RangeError('a range file needs {"ranges": {layer: [min, max, reason]}}') from exc
        return cls(ranges=ranges, source=d.get("source", "file"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "RangeTable":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RangeError(f"cannot read range file {path}: {exc}") from exc
        table = cls.from_dict(d)
        table.source = f"file:{path}"
        return table

    def check(self, layers: list[LayerInfo]) -> None:
        missing = [layer.name for layer in layers if layer.name not in self.ranges]
        if missing:
            raise RangeError(f"the range table has no entry for {len(missing)} layer(s), e.g. {missing[:3]}: add them")


# -------------------------------------------------------------------------------------------- observed


def observed_ranges(
    layers: list[LayerInfo],
    scores: dict[str, dict[str, torch.Tensor]],
    *,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    criteria: tuple[str, ...] = OBSERVED_CRITERIA,
    clamps: tuple[dict, ...] = CLAMPS,
) -> RangeTable:
    """The paper's Phase 1: min/max per layer over global criteria x targets, then the clamps.

    An optional criterion (GraSP) absent from ``scores`` is left out; the reasons name the criteria used.
    """
    criteria = tuple(c for c in criteria if c in scores or c not in OPTIONAL_CRITERIA)
    missing = [c for c in criteria if c not in scores]
    if missing:
        raise RangeError(f"observed ranges need the {missing} scores: compute them first (signals.compute_scores)")
    if not targets or any(not 0.0 < t < 1.0 for t in targets):
        raise RangeError(f"range targets must be in (0, 1), got {targets}")
    runs: dict[str, list[float]] = {layer.name: [] for layer in layers}
    for crit in criteria:
        per = {layer.name: scores[crit][layer.name] for layer in layers}
        for sparsities in global_thresholds(per, targets):  # one copy of the criterion's scores for every target
            for name, s in sparsities.items():
                runs[name].append(s)
    table: dict[str, LayerRange] = {}
    label = "/".join(criteria)
    tlabel = "/".join(f"{t:g}" for t in targets)
    for layer in layers:
        lo, hi = min(runs[layer.name]), max(runs[layer.name])
        rng = LayerRange(lo, hi, f"observed: min/max over global {label} at {tlabel}")
        for rule in clamps:
            if _clamp_matches(rule, layer):
                rng = LayerRange(*rule["range"], rule["reason"])
                break
        table[layer.name] = rng
    return RangeTable(table, source="observed")


def rd_range_table(layers: list[LayerInfo], curves: dict[str, torch.Tensor], *,
                   targets: tuple[float, ...] = DEFAULT_TARGETS, grid: torch.Tensor | None = None,
                   distortion: str = "magnitude") -> RangeTable:
    """RD-informed Phase 1: per layer, min/max of its RD/DP sparsity (seed 003) over the global ``targets``.

    The RD analogue of the observed ranges: the DP spends the sparsity where the logits move least, so
    sensitive layers (stem, shortcuts, classifier) get narrow low ranges without hand-written clamps.
    ``distortion``: how the curves were measured (recorded in the source: ``rd`` or ``rd:sparsegpt``).
    """
    from .rd_dp import rd_ranges

    if not targets or any(not 0.0 < t < 1.0 for t in targets):
        raise RangeError(f"range targets must be in (0, 1), got {targets}")
    missing = [layer.name for layer in layers if layer.name not in curves]
    if missing:
        raise RangeError(f"the RD curves have no entry for {len(missing)} layer(s), e.g. {missing[:3]}: recompute them")
    tlabel = "/".join(f"{t:g}" for t in targets)
    raw = rd_ranges(curves, layers, targets, grid=grid)
    source = "rd" if distortion == "magnitude" else f"rd:{distortion}"
    what = "" if distortion == "magnitude" else f" ({distortion}-reconstructed distortion)"
    return RangeTable({name: LayerRange(max(0.0, lo), min(1.0, hi), f"{source}: min/max of the RD/DP allocation{what} "
                                        f"at {tlabel}") for name, (lo, hi) in raw.items()}, source=source)


def _clamp_matches(rule: dict, layer: LayerInfo) -> bool:
    if "role" in rule and rule["role"] != layer.role:
        return False
    if "max_params" in rule and layer.numel >= rule["max_params"]:
        return False
    return True


# --------------------------------------------------------------------------------------------- presets


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def detect_family(layers: list[LayerInfo]) -> str | None:
    """The preset family whose ``detect`` rule the layers match (first in file order), or None.

    A preset's ``detect``: ``any_name`` (a regex at least one layer name matches), ``roles`` (roles that must
    all be present) and ``no_roles`` (roles that must all be absent).
    """
    names = [layer.name for layer in layers]
    roles = {layer.role for layer in layers}
    for family in available_presets():
        rule = json.loads((PRESET_DIR / f"{family}.json").read_text()).get("detect")
        if rule is None:
            continue
        if not any(re.search(rule["any_name"], n) for n in names):
            continue
        if set(rule.get("roles", ())) <= roles and not set(rule.get("no_roles", ())) & roles:
            return family
    return None


def _rule_matches(rule: dict, layer: LayerInfo) -> bool:
    if "role" in rule and layer.role != rule["role"]:
        return False
    if "stage" in rule and layer.stage != rule["stage"]:
        return False
    if "stage_min" in rule and layer.stage < rule["stage_min"]:
        return False
    if "name" in rule and not re.search(rule["name"], layer.name):
        return False
    return True


def preset_ranges(layers: list[LayerInfo], family: str | None = None) -> RangeTable:
    """Ranges from the family's declarative rule file (first matching rule wins)."""
    family = family or detect_family(layers)
    if family is None:
        raise RangeError(f"no preset matches this architecture: use --ranges observed, or force one with "
                         f"preset:<family> ({available_presets()})")
    path = PRESET_DIR / f"{family}.json"
    if not path.is_file():
        raise RangeError(f"no preset for family '{family}': choose from {available_presets()}")
    spec = json.loads(path.read_text())
    table = {}
    for layer in layers:
        rule = next((r for r in spec["rules"] if _rule_matches(r, layer)), spec["default"])
        table[layer.name] = LayerRange(rule["range"][0], rule["range"][1], f"preset {family}: {rule['reason']}")
    return RangeTable(table, source=f"preset:{family}")


def resolve_ranges(
    spec: str,
    layers: list[LayerInfo],
    scores: dict[str, dict[str, torch.Tensor]] | None = None,
    *,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    rd_curves: dict[str, torch.Tensor] | None = None,
    rd_grid: torch.Tensor | None = None,
    rd_distortion: str = "magnitude",
) -> RangeTable | None:
    """``observed`` | ``rd`` | ``preset`` | ``preset:<family>`` | path to a JSON range file.

    ``preset`` on an architecture no preset covers falls back to observed ranges (with a warning); called
    without ``scores`` (a check before scoring), that case returns None: the spec is valid, the table needs
    the scores.
    """
    if spec == "observed":
        if scores is None:
            raise RangeError("observed ranges need scores")
        table = observed_ranges(layers, scores, targets=targets)
    elif spec == "rd":
        if rd_curves is None:
            raise RangeError("rd ranges need RD/DP distortion curves (hf_mixmatch.rd.distortion_curves)")
        table = rd_range_table(layers, rd_curves, targets=targets, grid=rd_grid, distortion=rd_distortion)
    elif spec == "preset" and detect_family(layers) is None:
        if scores is None:
            return None
        logger.warning("no preset for this architecture (presets: %s): using observed ranges", available_presets())
        table = observed_ranges(layers, scores, targets=targets)
        table.source = "observed (no preset for this architecture)"
    elif spec == "preset":
        table = preset_ranges(layers)
    elif spec.startswith("preset:"):
        table = preset_ranges(layers, spec.split(":", 1)[1])
    elif Path(spec).is_file():
        table = RangeTable.load(spec)
    else:
        raise RangeError(f"--ranges must be observed, rd, preset, preset:<family> ({available_presets()}) or a JSON file; got '{spec}'")
    table.check(layers)
    return table


def as_dict(table: RangeTable) -> dict:
    return {k: asdict(v) for k, v in table.ranges.items()}
