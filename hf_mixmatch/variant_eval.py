"""Measuring allocations: apply masks in place, measure sparsity and accuracy, put the weights back; race the
Mix-and-Match variants on the selection data, choose the front there, and measure the front on the whole
evaluation split (when the selection data is a separate split)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from .evaluate import Hits, evaluate, predict_hits
from .layers import LayerInfo, get_weight
from .masks import WeightStash, apply_sparsities, measure_sparsity
from .pareto import pareto_front
from .racing import RaceConfig, RaceLog, race


class MaskCache:
    """The keep-masks of the raced variants, bit-packed (n/8 bytes per variant), so that a later round re-applies
    a variant's mask instead of ranking every layer again (a top-k per layer per round). Variants past
    ``budget_bytes`` are simply recomputed each round; either way the weights are the same."""

    def __init__(self, budget_bytes: int = 512 << 20):
        self.budget, self.used = int(budget_bytes), 0
        self.packed: dict[str, dict[str, np.ndarray]] = {}

    def apply(self, vid: str, model, layers: list[LayerInfo], sparsities: dict[str, float], score) -> None:
        packed = self.packed.get(vid)
        if packed is not None:
            with torch.no_grad():
                for layer in layers:
                    w = get_weight(model, layer)
                    keep = torch.from_numpy(np.unpackbits(packed[layer.name], count=w.numel()).astype(bool))
                    w.masked_fill_(~keep.to(w.device).view_as(w), 0)
            return
        masks = apply_sparsities(model, layers, sparsities, score)
        size = sum((m.numel() + 7) // 8 for m in masks.values())
        if self.used + size <= self.budget:
            self.packed[vid] = {name: np.packbits(m.reshape(-1).cpu().numpy()) for name, m in masks.items()}
            self.used += size


@dataclass
class Measurer:
    """How every allocation of a run is measured: one model, one weight stash, one batch size and precision."""

    model: torch.nn.Module
    layers: list[LayerInfo]
    stash: WeightStash
    accelerator: object = None
    batch_size: int = 256
    precision: str = "fp32"
    channels_last: bool | None = None  # NHWC batches (None: precision.wants_channels_last)
    recalibrate: Callable | None = None  # BatchNorm re-estimation after pruning (bn_recalibrate), or None
    bn_recalibrated: bool | None = None  # its outcome for the allocation applied last

    @contextlib.contextmanager
    def applied(self, sparsities: dict[str, float], score: dict[str, torch.Tensor] | None, apply=apply_sparsities,
                key: Hashable | None = None):
        """The model with this allocation's masks (``apply``: masking, or a reconstructor) and, with
        ``recalibrate``, its BatchNorm statistics re-estimated (kept under ``key``), then the original weights and
        statistics again."""
        try:
            apply(self.model, self.layers, sparsities, score)
            if self.recalibrate is not None:  # were the re-estimated statistics kept (bn_recalibrate's guard)?
                self.bn_recalibrated = self.recalibrate(self.model, key)
            yield
        finally:
            self.stash.restore()

    def hits(self, dataset, indices: Sequence[int] | None = None) -> Hits:
        return predict_hits(self.model, dataset, indices, batch_size=self.batch_size, accelerator=self.accelerator,
                            precision=self.precision, channels_last=self.channels_last)

    def measure(self, sparsities: dict[str, float], score: dict[str, torch.Tensor] | None, dataset, *,
                apply=apply_sparsities, key: Hashable | None = None) -> dict:
        """Sparsity and whole-``dataset`` accuracy of one allocation."""
        with self.applied(sparsities, score, apply, key):
            overall, per_layer = measure_sparsity(self.model, self.layers)
            metrics = evaluate(self.model, dataset, batch_size=self.batch_size, accelerator=self.accelerator,
                               precision=self.precision, channels_last=self.channels_last)
        bn = {"bn_recalibrated": self.bn_recalibrated} if self.recalibrate is not None else {}
        return {"sparsity": overall, **metrics, "layers": per_layer, "target_layers": dict(sparsities), **bn}


def evaluate_variants(
    m: Measurer,
    allocations: dict[str, tuple[dict[str, float], dict[str, torch.Tensor]]],
    data,
    *,
    mode: str = "racing",
    seed: int = 0,
    race_config: RaceConfig = RaceConfig(),
    progress: bool = False,
) -> tuple[dict[str, dict], list[str], RaceLog]:
    """Race (or fully evaluate) ``allocations`` (id -> (layer sparsities, score)) on ``data.select`` when present,
    else on ``data.eval``; choose the front among the survivors; with separate selection data, measure every
    front variant on the whole ``data.eval``. Returns (id -> metrics, front ids, race log)."""
    select = getattr(data, "select", None)
    chooser = select if select is not None else data.eval
    chooser_split = (getattr(data, "select_split", None) or "select") if select is not None else data.eval_split
    layer_sparsity: dict[str, tuple[float, dict[str, float]]] = {}
    masks = MaskCache()

    def measure(vid: str, indices: Sequence[int]) -> tuple[float, Hits]:
        sparsities, score = allocations[vid]
        with m.applied(sparsities, score, apply=lambda model, layers, sp, sc: masks.apply(vid, model, layers, sp, sc),
                       key=vid):
            if vid not in layer_sparsity:
                layer_sparsity[vid] = measure_sparsity(m.model, m.layers)
            hits = m.hits(chooser, indices)
        return layer_sparsity[vid][0], hits

    log = race(list(allocations), measure, len(chooser), mode=mode, config=race_config, seed=seed, progress=progress)
    rows: dict[str, dict] = {}
    for vid, lane in log.lanes.items():
        overall, per_layer = layer_sparsity[vid]
        rows[vid] = {"sparsity": overall, **lane.hits.metrics(), "split": chooser_split, "layers": per_layer,
                     "target_layers": dict(allocations[vid][0])}
        if lane.dropped_by is not None:
            rows[vid]["dropped_by"] = lane.dropped_by
        if m.recalibrate is not None:
            rows[vid]["bn_recalibrated"] = m.recalibrate.chosen.get(vid)
    front = pareto_front([{"id": vid, **rows[vid]} for vid in log.survivors])
    if select is not None:
        for vid in front:
            row = rows[vid]
            row["select"] = {k: row[k] for k in ("accuracy", "top5", "samples", "split")}
            full = m.measure(*allocations[vid], data.eval, key=vid)
            row.update(accuracy=full["accuracy"], top5=full["top5"], samples=full["samples"], split=data.eval_split)
    return rows, front, log
