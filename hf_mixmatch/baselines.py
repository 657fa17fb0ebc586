"""Baselines at matched sparsity: every registered allocator at the measured sparsity of each matched variant."""

from __future__ import annotations

from .rd import default_grid
from .reconstruct_stage import reconstructor
from .variant_eval import Measurer


def run_baselines(config, model, layers, scores, unique, front, data, measurer: Measurer, out) -> list[dict]:
    """Every baseline at the measured sparsity of every matched Mix-and-Match variant, on the whole eval split."""
    from tqdm.auto import tqdm

    from .allocators import ALLOCATORS
    from .layers import weights_of

    allocators = dict(ALLOCATORS)
    if "rd" in config.baselines:
        allocators["rd"] = ALLOCATORS["rd"].prepare(
            model, data.calib.tensors[0], grid=default_grid(config.rd_grid_step), reduction=config.rd_reduction,
            cache_dir=out if measurer.accelerator.is_main_process else None, batch_size=config.batch_size,
            layers=layers)
    matched = [v for v in unique if config.baseline_match == "all" or v["id"] in front]
    weights = weights_of(model, layers)
    rows = []
    plan = [(v, m) for v in matched for m in config.baselines]
    is_main = measurer.accelerator.is_main_process
    for v, method in tqdm(plan, desc="baselines", unit="eval", disable=not (config.progress and is_main)):
        alloc = allocators[method](weights=weights, layers=layers, target=v["sparsity"], scores=scores)
        measured = measurer.measure(alloc.sparsities, scores[alloc.rank_by], data.eval)
        if alloc.info.get("reconstruct") or config.reconstruct != "none":  # same treatment as the front
            masked = {"accuracy": measured["accuracy"], "top5": measured["top5"]}
            measured = {**measurer.measure(alloc.sparsities, None, data.eval, apply=reconstructor(config, data, measurer.accelerator)),
                        "reconstructed": True, "masked": masked}
        rows.append({"id": f"{method}@{v['id']}", "method": method, "matched_to": v["id"], "rank_by": alloc.rank_by,
                     **measured, "split": data.eval_split})
    return rows
