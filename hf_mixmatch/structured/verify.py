"""Proof that a physically pruned model computes what the gated model computes, and a one-call probe
(:func:`try_structured`) that prunes any model a little, checks it, saves it, reloads it and checks again.

The gated model is the dense model with the removed units' inputs scaled to zero at every consumer
(:class:`~.gates.GateHooks`): the reference the searches scored. A pruned model that does not run, or whose
outputs differ from that reference, is never saved: :class:`~hf_mixmatch.errors.StructuredUnsupported`.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..adapters import copy_model
from ..errors import HfMixmatchError, StructuredUnsupported
from ..models import logits
from .gates import GateHooks, masks_from_removed
from .groups import DISCOVERY_SECONDS, GroupPlan, find_groups
from .guard import first_line, unsupported_on_failure
from .measure import count_params

RTOL, ATOL = 1e-3, 1e-4  # float32 re-association across a smaller matmul stays far below these


def _outputs(model: nn.Module, example: torch.Tensor, what: str) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = logits(model.eval(), example)
        if not isinstance(out, torch.Tensor):
            raise StructuredUnsupported(f"not supported: {what} returns no logits tensor ({type(out).__name__})")
        return out
    except HfMixmatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a pruned model that does not run is the failure we report
        raise StructuredUnsupported(f"not supported: {what} does not run ({first_line(exc)})") from exc


def max_difference(ref: torch.Tensor, got: torch.Tensor, *, tight: bool = False) -> float:
    """Largest absolute difference relative to the tolerance (≤ 1 passes); inf when the shapes differ.
    ``tight``: float64 outputs, a tolerance a million times smaller."""
    if ref.shape != got.shape:
        return math.inf
    scale = 1e-6 if tight else 1.0
    bound = scale * (ATOL + RTOL * ref.abs().max())
    return float(((ref - got).abs().max() / bound).item()) if ref.numel() else 0.0


def _float64(model: nn.Module, example: torch.Tensor):
    """Float64 copies, so rounding noise cannot hide (or fake) a difference; None where a layer refuses."""
    try:
        m = copy_model(model).double()
        with torch.no_grad():
            logits(m.eval(), example.double())
        return m, example.double()
    except Exception:  # noqa: BLE001 - fall back to float32 and its looser tolerance
        return None


def check_equivalent(model: nn.Module, plan: GroupPlan, removed: dict[int, list[int]], pruned: nn.Module,
                     example: torch.Tensor) -> float:
    """Raise :class:`StructuredUnsupported` unless ``pruned`` outputs what ``model`` gated by ``removed``
    outputs on ``example`` (compared in float64 where every layer allows); returns the largest absolute
    difference."""
    got = _outputs(pruned, example, "the physically pruned model")
    pair = _float64(model, example)
    pruned64 = _float64(pruned, example) if pair else None
    tight = pair is not None and pruned64 is not None
    if tight:
        model, x = pair
        pruned, example = pruned64[0], x
        got = _outputs(pruned, example, "the physically pruned model")
    with GateHooks(model, plan) as gates:
        gates.values = masks_from_removed(plan, removed)
        ref = _outputs(model, example, "the gated model")
    ratio = max_difference(ref, got, tight=tight)
    if not ratio <= 1.0:
        diff = "shape" if math.isinf(ratio) else f"{float((ref - got).abs().max()):.3g}"
        raise StructuredUnsupported(
            f"not supported: the physically pruned model's outputs differ from the gated model's (max |diff| "
            f"{diff}); an operation couples the removed channels with the kept ones; nothing was saved")
    return float((ref - got).abs().max())


def require_prunable(plan: GroupPlan) -> None:
    """Raise :class:`StructuredUnsupported` naming why when no group of ``plan`` can be pruned."""
    if not plan.prunable:
        reasons = sorted({g.reason for g in plan.groups if g.reason}, key=lambda r: ("spans components" in r, r))
        raise StructuredUnsupported(f"not supported: no prunable group ({len(plan.groups)} groups; "
                                    f"{reasons[0] if reasons else 'none found'})")


def validate_plan(model: nn.Module, plan: GroupPlan, example: torch.Tensor, removed: dict[int, list[int]]) -> int:
    """Prune ``removed`` and check it against the gated model; when that fails, find the groups whose removal
    alone breaks the equivalence and keep them dense (``prunable=False`` with the reason), in place.

    Returns how many groups were turned dense. Raises :class:`StructuredUnsupported` when no prunable group is left.
    """
    from .prune import prune_physical

    def failure(groups: list[int]) -> str | None:
        part = {gi: removed[gi] for gi in groups}
        try:
            with unsupported_on_failure("cutting these units fails"):
                pruned = prune_physical(model, plan, part)[0]
            check_equivalent(model, plan, part, pruned, example)
        except StructuredUnsupported as exc:
            return str(exc).removeprefix("not supported: ")
        return None

    def bisect(groups: list[int], why: str) -> int:  # the groups that fail on their own, halving the set
        if len(groups) == 1:
            g = plan.groups[groups[0]]
            g.prunable, g.reason = False, why
            return 1
        half = len(groups) // 2
        found = 0
        for part in (groups[:half], groups[half:]):
            why_part = failure(part)
            if why_part is not None:
                found += bisect(part, why_part)
        return found

    everything = sorted(gi for gi in removed if removed[gi])
    why = failure(everything)
    if why is None:
        return 0
    turned = bisect(everything, why)
    if turned == 0:  # every half works alone, only the whole fails: keep it all dense
        for gi in everything:
            plan.groups[gi].prunable, plan.groups[gi].reason = False, why
        turned = len(everything)
    if not plan.prunable:
        raise StructuredUnsupported(f"not supported: no group can be removed without breaking the model "
                                    f"({plan.groups[min(removed)].reason})")
    return turned


@dataclass
class TryResult:
    """What :func:`try_structured` did: units removed, parameters before/after, output differences."""

    groups: int
    prunable: int
    dense_after_check: int  # groups found prunable, then kept dense because cutting them broke the model
    heads_pruned: int
    params_dense: int
    params_pruned: int
    max_diff: float
    reload_diff: float | None
    seconds: float
    model: nn.Module  # the pruned model
    plan: GroupPlan
    removed: dict[int, list[int]]


def probe_selection(plan: GroupPlan, model: nn.Module, ratio: float = 0.25) -> dict[int, list[int]]:
    """The lowest-L1 ``ratio`` of every prunable group's units, at least one, never all."""
    from .search import l1_importance

    with unsupported_on_failure("scoring the channels failed"):
        scores = l1_importance(plan, model)
    removed = {}
    for g in plan.prunable:
        n = min(max(1, int(ratio * g.size)), g.size - 1)
        removed[g.index] = sorted(int(i) for i in torch.argsort(scores[g.index], stable=True)[:n])
    return removed


def try_structured(model: nn.Module, example: torch.Tensor, *, ratio: float = 0.25,
                   timeout: float | None = DISCOVERY_SECONDS, save: bool = True) -> TryResult:
    """Remove ``ratio`` (at least one unit) of every prunable group of ``model`` (by L1), check the pruned model
    against the gated one, then (``save``) save it, reload it and check the reload against the pruned one.

    Raises :class:`StructuredUnsupported` ("not supported: <why>", one line) when any step fails.
    """
    with unsupported_on_failure("structured pruning failed"):  # never a traceback
        return _try(model, example, ratio=ratio, timeout=timeout, save=save)


def _try(model: nn.Module, example: torch.Tensor, *, ratio: float, timeout: float | None, save: bool) -> TryResult:
    from .io import describe_base, load_structured, save_structured
    from .prune import prune_physical

    start = time.perf_counter()
    model.eval()
    _outputs(model, example, "the dense model")
    plan = find_groups(model, example, timeout=timeout)
    require_prunable(plan)
    removed = probe_selection(plan, model, ratio)
    dense_groups = validate_plan(model, plan, example, removed)
    if dense_groups:  # some groups break the model when cut: select again among the others
        removed = probe_selection(plan, model, ratio)
    pruned, part = prune_physical(model, plan, removed)
    diff = check_equivalent(model, plan, removed, pruned, example)
    reload_diff = None
    if save:
        recipe = {"format": "hf_mixmatch.structured/1", "example_shape": list(plan.example_shape), **part}
        with unsupported_on_failure("the pruned model could not be saved or reloaded"):
            base = describe_base(model)
            with tempfile.TemporaryDirectory() as tmp:
                save_structured(pruned, recipe, base, f"{tmp}/model")
                reloaded = load_structured(f"{tmp}/model")
        ref = _outputs(pruned, example, "the physically pruned model")
        got = _outputs(reloaded, example, "the reloaded model")
        if not max_difference(ref, got) <= 1.0:
            raise StructuredUnsupported("not supported: the reloaded model's outputs differ from the pruned model's")
        reload_diff = float((ref - got).abs().max())
    heads = sum(len(v) for gi, v in removed.items() if plan.groups[gi].kind == "heads")
    return TryResult(groups=len(plan.groups), prunable=len(plan.prunable), dense_after_check=dense_groups,
                     heads_pruned=heads,
                     params_dense=count_params(model), params_pruned=count_params(pruned), max_diff=diff,
                     reload_diff=reload_diff, seconds=time.perf_counter() - start, model=pruned,
                     plan=plan, removed=removed)
