"""The Mix-and-Match run: load -> layers -> scores -> ranges -> strategies -> masks -> evaluate ->
Pareto front -> variant folders, report and ``results.json`` (written last, atomically)."""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .data import PreparedData, load_data
from .errors import ConfigError
from .evaluate import BatchSizeProbe, agree_batch_size, evaluate
from .precision import layout_candidates, warn_if_emulated
from .layers import LayerInfo, list_prunable, not_applied_as_stored, used_by_forward
from .masks import WeightStash, apply_sparsities
from .outdir import check_output_dir, prepare_output_dir, record, record_dir  # noqa: F401 - re-exported
from .models import LoadedModel, load_model
from .pareto import pareto_front
from .ranges import RangeTable, resolve_ranges
from .resident import make_resident
from .score_stage import rd_curves, rd_grid, record_rd_caches, run_scores
from .strategies import strategy_sparsities
from .variant_eval import Measurer, evaluate_variants
from .baselines import run_baselines
from .config import PruneConfig
from .finetune import Finetuner
from .reconstruct_stage import check_memory, reconstruct_candidates, reconstructor, statistics_key
from .bn_recalibrate import BatchNormRecalibrator, batchnorm_modules, check_calibration_size
from .saving import save_variant, variant_recipe, write_json_atomic  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

CACHE_FILES = ("scores.safetensors",)
RESULTS_FILE = "results.json"


@dataclass
class RunResult:
    """What a run produced: the ``results.json`` content and where it lives."""

    results: dict
    output_dir: Path
    layers: list[LayerInfo] = field(default_factory=list)
    ranges: RangeTable | None = None

    @property
    def variants(self) -> list[dict]:
        return self.results["variants"]

    @property
    def pareto(self) -> list[dict]:
        ids = set(self.results["pareto"])
        return [v for v in self.variants if v["id"] in ids]

    def best(self, *, min_accuracy: float | None = None, min_sparsity: float | None = None) -> dict | None:
        """The sparsest variant with accuracy >= min_accuracy (or the most accurate with sparsity >= min_sparsity)."""
        cands = self.pareto
        if min_accuracy is not None:
            cands = [v for v in cands if v["accuracy"] >= min_accuracy]
            return max(cands, key=lambda v: v["sparsity"], default=None)
        if min_sparsity is not None:
            cands = [v for v in cands if v["sparsity"] >= min_sparsity]
        return max(cands, key=lambda v: v["accuracy"], default=None)


# ------------------------------------------------------------------------------------------------ run


def _accelerator(accelerator):
    """The caller's Accelerator, or a new one. Under torchrun on a machine without a GPU, accelerate only
    goes multi-process with ``cpu=True`` (gloo), so ask for it there."""
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if multi and torch.cuda.is_available():
        per_node, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
        if per_node > gpus:  # accelerate would give a process a GPU index that does not exist
            raise ConfigError(f"{per_node} processes on this machine but {gpus} visible GPU(s): start at most "
                              f"{gpus} (torchrun --nproc_per_node {gpus}), or hide the GPUs "
                              "(CUDA_VISIBLE_DEVICES=) to run on CPU")
    return Accelerator(cpu=multi and not torch.cuda.is_available())


def run_mixmatch(
    config: PruneConfig,
    *,
    loaded: LoadedModel | None = None,
    data: PreparedData | None = None,
    accelerator=None,
) -> RunResult:
    """Run the whole Mix-and-Match pipeline described by ``config``."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    acc = _accelerator(accelerator)
    is_main = acc.is_main_process
    # validate everything (output dir, options, model, data) before the output dir is touched or anything computed
    if is_main:
        check_output_dir(config.output_dir, overwrite=config.overwrite)
    loaded = loaded or load_model(config.model, revision=config.revision)
    dataset_spec = config.dataset or ("default" if config.model == "default" else None)
    if data is None:
        if dataset_spec is None:
            raise ConfigError("--dataset is required (a Hub id or a local folder) unless the model is 'default'")
        data = load_data(
            dataset_spec, loaded.preprocess, calib_split=config.calib_split, eval_split=config.eval_split,
            calib_samples=config.calib_samples, eval_samples=config.eval_samples, seed=config.seed,
            image_column=config.image_column, label_column=config.label_column, num_labels=loaded.num_labels,
            train_samples=config.finetune_samples if config.finetune else None, id2label=loaded.id2label,
            label_map=config.label_map, select_split=config.select_split, select_samples=config.select_samples,
            skip_bad_images=config.skip_bad_images, cache_dir=config.data_cache_dir,
            decode_workers=config.decode_workers,
        )
    if config.finetune and data.train is None:
        raise ConfigError("fine-tuning needs PreparedData.train: load the data with train_samples=...")
    model = loaded.model.to(acc.device).eval()
    layers = list_prunable(model, num_labels=loaded.num_labels)
    layers = used_by_forward(model, layers, data.calib.tensors[0][:2].to(acc.device)) if layers else layers
    if not layers:
        raise ConfigError("the model has no Conv/Linear weights to prune")
    not_as_stored = not_applied_as_stored(model, layers, data.calib.tensors[0][:2].to(acc.device))
    if not_as_stored and is_main:
        logger.warning("%d layers compute with a transform of their stored weight (weight standardization): "
                       "their zeros are zeros of the stored tensor, not of the weight they compute with: %s",
                       len(not_as_stored), not_as_stored[:5] + (["..."] if len(not_as_stored) > 5 else []))
    if config.ranges not in ("observed", "rd"):  # preset / range file: wrong names or layers fail here, not later
        resolve_ranges(config.ranges, layers)
    if config.bn_recalibrate and batchnorm_modules(model):
        check_calibration_size(len(data.calib.tensors[0]))
    check_memory(config, model, layers, acc)  # reconstruction / SparseGPT curves: the largest layer's Hessians fit
    out = prepare_output_dir(config.output_dir, overwrite=config.overwrite) if is_main else Path(config.output_dir)
    acc.wait_for_everyone()

    timings: dict[str, float] = {}
    precision = _precision(config, acc)

    data, resident = make_resident(data, acc.device, mode=config.eval_resident)  # CUDA: images uploaded once
    t0 = time.perf_counter()
    layouts = layout_candidates(model, acc.device)
    probe = BatchSizeProbe(layouts=layouts) if config.eval_batch_size is None else config.eval_batch_size
    dense = evaluate(model, data.eval, batch_size=probe, accelerator=acc, precision=precision,
                     progress=config.progress and is_main, desc="evaluate dense", channels_last=layouts[0])
    eval_batch_size, nhwc = (agree_batch_size(probe, acc) if isinstance(probe, BatchSizeProbe)
                             else (probe, layouts[0]))
    timings["dense_eval_s"] = time.perf_counter() - t0

    scores, skipped = run_scores(config, model, layers, data, acc, out, timings, precision)
    curves = rd_curves(config, model, layers, data, acc, out, timings) if config.ranges == "rd" else None
    ranges = resolve_ranges(config.ranges, layers, scores, targets=config.range_targets, rd_curves=curves,
                            rd_grid=rd_grid(config), rd_distortion=config.rd_distortion)
    finetuner = Finetuner(config, model, layers, data, acc, eval_batch_size, precision) if config.finetune else None

    # ---- Mix-and-Match variants: raced (or fully evaluated) on the selection data, front measured on eval ----
    t0, cpu0 = time.perf_counter(), time.process_time()
    stash = WeightStash(model, layers)
    recalibrate = BatchNormRecalibrator(model, data.calib.tensors[0], data.calib.tensors[1],
                                        batch_size=config.batch_size, accelerator=acc, loss_batch_size=eval_batch_size,
                                        channels_last=nhwc) if config.bn_recalibrate else None
    measurer = Measurer(model, layers, stash, acc, batch_size=eval_batch_size, precision=precision,
                        channels_last=nhwc, recalibrate=recalibrate or None)
    if finetuner is not None:
        finetuner.recalibrate = measurer.recalibrate
    allocations: dict[str, tuple[dict, dict]] = {}
    same_as: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    plan = [(sig, strat) for sig in config.signals for strat in config.strategies]
    for sig, strat in plan:
        sparsities = strategy_sparsities(strat, ranges, layers, scores=scores[sig], curves=curves,
                                         grid=rd_grid(config))
        key = (sig, tuple(round(sparsities[layer.name], 12) for layer in layers))
        if key in seen:  # same masks as an earlier strategy (e.g. balanced == percentile_50): reuse its numbers
            same_as[f"{sig}-{strat}"] = seen[key]
            continue
        seen[key] = f"{sig}-{strat}"
        allocations[f"{sig}-{strat}"] = (sparsities, scores[sig])
    measured, front, race_log = evaluate_variants(measurer, allocations, data, mode=config.eval, seed=config.seed,
                                                  progress=config.progress and is_main)
    variants: list[dict] = []
    for sig, strat in plan:
        vid = f"{sig}-{strat}"
        if vid in same_as:
            prev = same_as[vid]
            variants.append({"id": vid, "method": "mixmatch", "signal": sig, "strategy": strat, **measured[prev],
                             "path": None, "same_as": prev})
        else:
            variants.append({"id": vid, "method": "mixmatch", "signal": sig, "strategy": strat, **measured[vid],
                             "path": None})
    timings["variants_s"] = time.perf_counter() - t0
    timings["variants_cpu_s"] = time.process_time() - cpu0  # CPU seconds of this process (robust to a busy machine)
    unique = [v for v in variants if "same_as" not in v]

    # ---- layer-wise reconstruction of the one-shot candidates (--reconstruct) ----
    reconstruction = None
    if config.reconstruct != "none":
        t0 = time.perf_counter()
        reconstruction, front = reconstruct_candidates(config, measurer, layers, scores, variants, unique, data)
        timings["reconstruct_s"] = time.perf_counter() - t0

    # ---- baselines at matched sparsity ----
    baselines: list[dict] = []
    if config.baselines:
        t0 = time.perf_counter()
        baselines = run_baselines(config, model, layers, scores, unique, front, data, measurer, out)
        timings["baselines_s"] = time.perf_counter() - t0

    # ---- optional fine-tuning of the front and its matched baselines (same budget) ----
    front_oneshot = None
    if finetuner is not None:
        t0 = time.perf_counter()
        todo = [v for v in unique if v["id"] in front] + baselines
        for item in tqdm(todo, desc="fine-tuning", unit="model", disable=not (config.progress and is_main)):
            # after fine-tuning, accuracy/top5 describe the fine-tuned weights; the one-shot numbers stay in "oneshot"
            ft = finetuner(item, scores, out / "variants" / item["id"] if item.get("method") == "mixmatch" else None,
                           loaded)
            item["oneshot"] = {"accuracy": item["accuracy"], "top5": item["top5"]}
            item.update(accuracy=ft.pop("accuracy"), top5=ft.pop("top5"), finetune=ft)
        timings["finetune_s"] = time.perf_counter() - t0
        # the front is chosen again on the fine-tuned accuracies, among the fine-tuned variants only
        front_oneshot = front
        front = pareto_front([v for v in unique if "finetune" in v])

    results = {
        "base_model": loaded.source,
        "base_revision": loaded.revision,
        "library": loaded.library,
        "license": loaded.license,
        "dataset": data.dataset,
        "dataset_name": config.dataset_name,
        "calib_split": data.calib_split,
        "eval_split": data.eval_split,
        "calib_samples": data.calib_samples,
        "eval_samples": data.eval_samples,
        # the split the front was chosen on (the evaluation split itself when there is no selection data)
        "select_split": data.select_split if getattr(data, "select", None) is not None else data.eval_split,
        "select_samples": data.select_samples,
        "select_heldout": data.select_heldout,
        "labels": data.labels,
        "skipped_images": data.skipped_images,
        "seed": config.seed,
        "evaluation": {**race_log.to_dict(), "batch_size": eval_batch_size, "channels_last": nhwc,
                       "precision": precision, "resident": resident,
                       "batch_size_probe": {} if isinstance(probe, int) else
                       {f"{size}{'-nhwc' if cl else ''}": t for (size, cl), t in probe.per_image.items()}},
        "hf_mixmatch_version": __version__,
        "run_id": uuid.uuid4().hex[:8],  # short id in the names of pushed repos (hub.repo_name_for)
        "dense": {"accuracy": dense["accuracy"], "top5": dense["top5"]},
        "ranges": ranges.to_dict(),
        "layer_roles": {layer.name: layer.role for layer in layers},
        "not_applied_as_stored": not_as_stored,
        "variants": variants,
        "pareto": front,
        "pareto_basis": "finetuned" if finetuner is not None else "oneshot",
        "pareto_oneshot": front_oneshot,  # with fine-tuning: the one-shot front that was fine-tuned
        "config": config.to_dict(),
        "processes": acc.num_processes,
    }
    if skipped:
        results["signals_skipped"] = skipped
    if config.baselines:
        results["baselines"] = baselines
    if reconstruction is not None:
        results["reconstruct"] = reconstruction
    results["bn_recalibration"] = recalibrate.info() if recalibrate is not None else None

    # ---- variant folders ----
    to_save = {"all": [v["id"] for v in unique], "pareto": front, "none": []}[config.save]
    if is_main:
        by_id = {v["id"]: v for v in variants}
        tuned = finetuner.saved if finetuner is not None else {}
        for vid in set(tuned) - set(to_save):  # fine-tuned weights written early but not kept
            shutil.rmtree(tuned[vid], ignore_errors=True)
        for vid in tqdm(to_save, desc="saving variants", unit="variant", disable=not config.progress):
            v = by_id[vid]
            rel = f"variants/{vid}"
            recipe = variant_recipe(results, v, layers)
            if vid in tuned:  # already on disk since it was measured: only its recipe gets the final numbers
                write_json_atomic(tuned[vid] / "mixmatch.json", {**recipe, "storage": config.storage})
            else:  # deterministic: the same calibration set gives the same weights and BatchNorm statistics
                recon = v.get("reconstructed")
                with measurer.applied(v["target_layers"], None if recon else scores[v["signal"]],
                                      apply=reconstructor(config, data, acc) if recon else apply_sparsities,
                                      key=statistics_key(v, layers)):
                    record_dir(out, "variants")
                    record(out, rel)
                    save_variant(loaded, out / rel, recipe=recipe, storage=config.storage)
            v["path"] = rel
    acc.wait_for_everyone()
    timings["total_s"] = time.perf_counter() - t_start
    results["timings"] = timings
    if is_main:
        record_rd_caches(out, acc)
        record(out, "report.md", "pareto.png", RESULTS_FILE)
        _write_report(out, results)
        write_json_atomic(out / RESULTS_FILE, results)
    acc.wait_for_everyone()
    return RunResult(results=results, output_dir=out, layers=layers, ranges=ranges)


def _precision(config: PruneConfig, acc) -> str:
    """--precision, else the accelerator's mixed precision (``accelerate launch --mixed_precision bf16``)."""
    precision = config.precision if config.precision is not None else \
        {"bf16": "bf16", "fp16": "fp16"}.get(str(getattr(acc, "mixed_precision", "no")), "fp32")
    warn_if_emulated(precision, acc.device)
    return precision


def _write_report(out: Path, results: dict) -> None:
    from .report import write_report

    write_report(out, results)
