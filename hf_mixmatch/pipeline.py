"""The Mix-and-Match run: load -> layers -> scores -> ranges -> strategies -> masks -> evaluate ->
Pareto front -> variant folders, report and ``results.json`` (written last, atomically)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__
from .data import PreparedData, load_data
from .errors import ConfigError
from .evaluate import BatchSizeProbe, agree_batch_size, evaluate
from .layers import LayerInfo, list_prunable, used_by_forward
from .masks import WeightStash, apply_sparsities, measure_sparsity
from .outdir import check_output_dir, prepare_output_dir, record, record_dir  # noqa: F401 - re-exported
from .models import LoadedModel, load_model
from .pareto import pareto_front
from .precision import PRECISIONS
from .racing import EVAL_MODES
from .ranges import DEFAULT_TARGETS, RangeTable, resolve_ranges
from .signals import SELECTABLE_SIGNALS, SIGNALS, compute_scores, fingerprint, load_scores, save_scores
from .strategies import DEFAULT_STRATEGIES, STRATEGIES, strategy_sparsities
from .variant_eval import Measurer, evaluate_variants

logger = logging.getLogger(__name__)

SAVE_CHOICES = ("pareto", "all", "none")
CACHE_FILES = ("scores.safetensors",)
RESULTS_FILE = "results.json"


@dataclass
class PruneConfig:
    """Everything a run needs; the CLI parses its arguments into exactly this."""

    model: str
    dataset: str | None = None
    dataset_name: str | None = None  # what cards and recipes call the dataset (default: Hub id / local name+fingerprint)
    output_dir: str = "runs/mixmatch"
    signals: tuple[str, ...] = SIGNALS
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    ranges: str = "observed"
    range_targets: tuple[float, ...] = DEFAULT_TARGETS
    calib_split: str | None = None
    eval_split: str | None = None
    calib_samples: int = 256
    eval_samples: int | None = None
    batch_size: int = 64
    seed: int = 0
    image_column: str | None = None
    label_column: str | None = None
    save: str = "pareto"
    overwrite: bool = False
    grad_train_mode: bool = False
    revision: str | None = None
    progress: bool = True
    baselines: tuple[str, ...] = ()
    baseline_match: str = "pareto"  # match baselines to the Pareto variants or to "all" variants
    rd_grid_step: float = 0.02
    rd_reduction: str = "mean"
    finetune_steps: int | None = None
    finetune_epochs: int | None = None
    finetune_lr: float = 1e-4
    finetune_patience: int = 3
    finetune_samples: int = 2048
    finetune_batch_size: int = 64
    storage: str = "dense"  # "dense" (drop-in loading) | "compact" (bitmask + nonzeros; hf_mixmatch.from_pretrained)
    select_split: str | None = None  # split the front is chosen on (None: validation or a held-out train slice)
    select_samples: int | None = None  # None: min(2000, available)
    label_map: str | None = None  # JSON file {dataset_name_or_index: model_index_or_name}
    skip_bad_images: bool = False
    data_cache_dir: str | None = None  # decoded-data cache (None: under HF_DATASETS_CACHE)
    decode_workers: int = 1  # processes that decode + preprocess images into the cache
    eval: str = "racing"  # "racing" (drop variants dominated with confidence on a growing sample) | "full"
    eval_batch_size: int | None = None  # None: the fastest per image of EVAL_BATCH_CANDIDATES, probed on the dense model
    precision: str | None = None  # fp32 | bf16 | fp16; None: the accelerator's mixed_precision (fp32 when "no")
    reconstruct: str = "none"  # "none" | "sparsegpt": layer-wise reconstruction (hf_mixmatch.reconstruct)
    reconstruct_depth: int = 2  # candidates: one-shot variants on the first N non-dominated layers

    @property
    def finetune(self) -> bool:
        return bool(self.finetune_steps) or bool(self.finetune_epochs)

    def __post_init__(self) -> None:
        _check_numbers(self)
        self.signals = tuple(self.signals)
        self.strategies = tuple(self.strategies)
        self.range_targets = tuple(float(t) for t in self.range_targets)
        if self.save not in SAVE_CHOICES:
            raise ConfigError(f"save must be one of {SAVE_CHOICES}, got '{self.save}'")
        bad = [s for s in self.signals if s not in SELECTABLE_SIGNALS]
        if bad or not self.signals:
            raise ConfigError(f"unknown signal(s) {bad}: choose from {list(SELECTABLE_SIGNALS)}")
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ConfigError(f"unknown strategy(ies) {bad}: choose from {list(STRATEGIES)}")
        if self.calib_samples is None or self.calib_samples <= 0:
            raise ConfigError(f"--calib-samples must be > 0, got {self.calib_samples}")
        if self.eval_samples is not None and self.eval_samples <= 0:
            raise ConfigError(f"--eval-samples must be > 0, got {self.eval_samples}")
        if self.batch_size <= 0:
            raise ConfigError(f"--batch-size must be > 0, got {self.batch_size}")
        if any(not 0.0 < t < 1.0 for t in self.range_targets):
            raise ConfigError(f"--range-targets must lie in (0, 1), got {self.range_targets}")
        from .allocators import ALLOCATORS

        self.baselines = tuple(self.baselines)
        bad = [b for b in self.baselines if b not in ALLOCATORS]
        if bad:
            raise ConfigError(f"unknown baseline(s) {bad}: choose from {sorted(ALLOCATORS)}")
        if self.storage not in ("dense", "compact"):
            raise ConfigError(f"storage must be 'dense' or 'compact', got '{self.storage}'")
        if self.baseline_match not in ("pareto", "all"):
            raise ConfigError(f"baseline_match must be 'pareto' or 'all', got '{self.baseline_match}'")
        from .reconstruct import RECONSTRUCT_CHOICES

        if self.reconstruct not in RECONSTRUCT_CHOICES or self.reconstruct_depth < 1:
            raise ConfigError(f"--reconstruct must be one of {list(RECONSTRUCT_CHOICES)} and --reconstruct-depth >= 1")
        if self.finetune_samples <= 0 or (self.finetune_steps or 0) < 0 or (self.finetune_epochs or 0) < 0:
            raise ConfigError("--finetune-steps/--finetune-epochs must be >= 0 and --finetune-samples > 0")
        if self.decode_workers < 1:
            raise ConfigError(f"--decode-workers must be >= 1, got {self.decode_workers}")
        if self.select_samples is not None and self.select_samples <= 0:
            raise ConfigError(f"--select-samples must be > 0, got {self.select_samples} (use --select-split none to "
                              "choose the front on the evaluation split)")
        if self.eval not in EVAL_MODES:
            raise ConfigError(f"--eval must be one of {'|'.join(EVAL_MODES)}, got '{self.eval}'")
        if self.eval_batch_size is not None and self.eval_batch_size <= 0:
            raise ConfigError(f"--eval-batch-size must be > 0 (or omitted for auto), got {self.eval_batch_size}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {'|'.join(PRECISIONS)}, got '{self.precision}'")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_numbers(c: PruneConfig) -> None:
    """Numeric options that would only fail (or silently misbehave) deep inside a run."""
    import math

    if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed < 2**32:
        raise ConfigError(f"--seed must be an integer in [0, 2**32), got {c.seed}")
    if not (isinstance(c.finetune_lr, (int, float)) and math.isfinite(c.finetune_lr) and c.finetune_lr > 0):
        raise ConfigError(f"--finetune-lr must be a finite number > 0, got {c.finetune_lr}")
    if c.finetune_patience < 1 or c.finetune_batch_size < 1:
        raise ConfigError("--finetune-patience and the fine-tuning batch size must be >= 1")
    if not (math.isfinite(c.rd_grid_step) and 0 < c.rd_grid_step < 1):
        raise ConfigError(f"--rd-grid-step must lie in (0, 1), got {c.rd_grid_step}")
    if c.rd_reduction not in ("mean", "worst"):
        raise ConfigError(f"--rd-reduction must be 'mean' or 'worst', got '{c.rd_reduction}'")


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


# ------------------------------------------------------------------------------------------ output dir


def write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ run


def _accelerator(accelerator):
    """The caller's Accelerator, or a new one. Under torchrun on a machine without a GPU, accelerate only
    goes multi-process with ``cpu=True`` (gloo), so ask for it there."""
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
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
    if config.ranges not in ("observed", "rd"):  # preset / range file: wrong names or layers fail here, not later
        resolve_ranges(config.ranges, layers)
    out = prepare_output_dir(config.output_dir, overwrite=config.overwrite) if is_main else Path(config.output_dir)
    acc.wait_for_everyone()

    timings: dict[str, float] = {}
    precision = _precision(config, acc)

    t0 = time.perf_counter()
    probe = BatchSizeProbe() if config.eval_batch_size is None else config.eval_batch_size
    dense = evaluate(model, data.eval, batch_size=probe, accelerator=acc, precision=precision,
                     progress=config.progress and is_main, desc="evaluate dense")
    eval_batch_size = agree_batch_size(probe, acc) if isinstance(probe, BatchSizeProbe) else probe
    timings["dense_eval_s"] = time.perf_counter() - t0

    scores, skipped = _scores(config, model, layers, data, acc, out, timings, precision)
    curves = _rd_curves(config, model, layers, data, acc, out, timings) if config.ranges == "rd" else None
    ranges = resolve_ranges(config.ranges, layers, scores, targets=config.range_targets, rd_curves=curves,
                            rd_grid=_rd_grid(config))
    finetuner = _Finetuner(config, model, layers, data, acc, eval_batch_size, precision) if config.finetune else None

    # ---- Mix-and-Match variants: raced (or fully evaluated) on the selection data, front measured on eval ----
    t0, cpu0 = time.perf_counter(), time.process_time()
    stash = WeightStash(model, layers)
    measurer = Measurer(model, layers, stash, acc, batch_size=eval_batch_size, precision=precision)
    allocations: dict[str, tuple[dict, dict]] = {}
    same_as: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    plan = [(sig, strat) for sig in config.signals for strat in config.strategies]
    for sig, strat in plan:
        sparsities = strategy_sparsities(strat, ranges, layers, scores=scores[sig])
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
        reconstruction, front = _reconstruct_candidates(config, measurer, layers, scores, variants, unique, data)
        timings["reconstruct_s"] = time.perf_counter() - t0

    # ---- baselines at matched sparsity ----
    baselines: list[dict] = []
    if config.baselines:
        t0 = time.perf_counter()
        baselines = _baselines(config, model, layers, scores, unique, front, data, measurer, out)
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
        "evaluation": {**race_log.to_dict(), "batch_size": eval_batch_size, "precision": precision,
                       "batch_size_probe": {} if isinstance(probe, int) else {str(k): t for k, t in probe.per_image.items()}},
        "hf_mixmatch_version": __version__,
        "run_id": uuid.uuid4().hex[:8],  # short id in the names of pushed repos (hub.repo_name_for)
        "dense": {"accuracy": dense["accuracy"], "top5": dense["top5"]},
        "ranges": ranges.to_dict(),
        "layer_roles": {layer.name: layer.role for layer in layers},
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
            elif v.get("reconstructed"):  # deterministic: the same calibration set gives the same weights
                _reconstructor(config, data, acc)(model, layers, v["target_layers"])
                record_dir(out, "variants")
                record(out, rel)
                save_variant(loaded, out / rel, recipe=recipe, storage=config.storage)
                stash.restore()
            else:
                apply_sparsities(model, layers, v["target_layers"], scores[v["signal"]])
                record_dir(out, "variants")
                record(out, rel)
                save_variant(loaded, out / rel, recipe=recipe, storage=config.storage)
                stash.restore()
            v["path"] = rel
    acc.wait_for_everyone()
    timings["total_s"] = time.perf_counter() - t_start
    results["timings"] = timings
    if is_main:
        _record_rd_caches(out, acc)
        record(out, "report.md", "pareto.png", RESULTS_FILE)
        _write_report(out, results)
        write_json_atomic(out / RESULTS_FILE, results)
    acc.wait_for_everyone()
    return RunResult(results=results, output_dir=out, layers=layers, ranges=ranges)


def _precision(config: PruneConfig, acc) -> str:
    """--precision, else the accelerator's mixed precision (``accelerate launch --mixed_precision bf16``)."""
    if config.precision is not None:
        return config.precision
    return {"bf16": "bf16", "fp16": "fp16"}.get(str(getattr(acc, "mixed_precision", "no")), "fp32")


def _scores(config: PruneConfig, model, layers, data: PreparedData, acc, out: Path, timings: dict,
            precision: str = "fp32") -> tuple[dict, dict]:
    """Compute the signals the run needs, or reuse the ones cached in the output dir.

    Also returns ``{signal: why}`` for the optional signals that could not be computed (GraSP on a model
    with an operation that has no second derivative); the observed ranges are then built without them.
    """
    from .ranges import detect_family

    needed = set(config.signals) | {"magnitude"}
    if config.ranges == "observed" or (config.ranges == "preset" and detect_family(layers) is None):
        needed |= {"snip", "grasp"}
    from .allocators import ALLOCATOR_SIGNALS

    needed |= {s for b in config.baselines for s in ALLOCATOR_SIGNALS.get(b, ())}
    t0 = time.perf_counter()
    fp = fingerprint(model, layers, data.calib, batch_size=config.batch_size, train_mode=config.grad_train_mode,
                     **({} if precision == "fp32" else {"precision": precision}))
    cache = out / "scores.safetensors"
    scores = load_scores(cache, fingerprint=fp)
    timings["scoring_cached"] = scores is not None and needed <= set(scores)
    if not timings["scoring_cached"]:
        scores = compute_scores(model, layers, data.calib, signals=tuple(sorted(needed)), batch_size=config.batch_size,
                                accelerator=acc, train_mode=config.grad_train_mode, progress=config.progress,
                                precision=precision)
        if acc.is_main_process:
            record(out, cache.name, cache=True)
            save_scores(scores, cache, fingerprint=fp)
    timings["scoring_s"] = time.perf_counter() - t0
    missing = needed - set(scores)  # only optional criteria can be missing (compute_scores raises otherwise)
    if missing & set(config.baselines):
        raise ConfigError(f"the {sorted(missing & set(config.baselines))} baseline needs a second derivative that an "
                          "operation of this model lacks: drop it from --baselines")
    return scores, {s: "an operation of the model has no second derivative" for s in sorted(missing)}


def _rd_grid(config: PruneConfig):
    from .rd import default_grid

    return default_grid(config.rd_grid_step)


def _record_rd_caches(out: Path, acc) -> None:
    """The RD curve caches are named by the RD module: add the ones now in the run dir to its manifest."""
    if acc.is_main_process:
        record(out, *sorted(p.name for p in out.glob("rd_curves_*.safetensors")), cache=True)


def _rd_curves(config: PruneConfig, model, layers, data: PreparedData, acc, out: Path, timings: dict) -> dict:
    """RD/DP distortion curves on the calibration images (cached in the output dir), for ``--ranges rd``."""
    from .allocators import ALLOCATORS

    t0 = time.perf_counter()
    rd = ALLOCATORS["rd"].prepare(model, data.calib.tensors[0], grid=_rd_grid(config), reduction=config.rd_reduction,
                                  cache_dir=out if acc.is_main_process else None, batch_size=config.batch_size,
                                  layers=layers)
    timings["rd_curves_s"] = time.perf_counter() - t0
    _record_rd_caches(out, acc)
    return rd.curves


def _baselines(config, model, layers, scores, unique, front, data, measurer: Measurer, out) -> list[dict]:
    """Every baseline at the measured sparsity of every matched Mix-and-Match variant, on the whole eval split."""
    from tqdm.auto import tqdm

    from .allocators import ALLOCATORS
    from .layers import weights_of

    allocators = dict(ALLOCATORS)
    if "rd" in config.baselines:
        allocators["rd"] = ALLOCATORS["rd"].prepare(
            model, data.calib.tensors[0], grid=_rd_grid(config), reduction=config.rd_reduction,
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
            measured = {**measurer.measure(alloc.sparsities, None, data.eval, apply=_reconstructor(config, data, measurer.accelerator)),
                        "reconstructed": True, "masked": masked}
        rows.append({"id": f"{method}@{v['id']}", "method": method, "matched_to": v["id"], "rank_by": alloc.rank_by,
                     **measured, "split": data.eval_split})
    return rows


def _reconstructor(config: PruneConfig, data: PreparedData, acc):
    from .reconstruct import ReconstructSettings, make_reconstructor

    settings = ReconstructSettings(batch_size=config.batch_size)
    return make_reconstructor(settings, data.calib.tensors[0], accelerator=acc)


def _reconstruct_candidates(config, measurer: Measurer, layers, scores, variants, unique,
                            data) -> tuple[dict, list[str]]:
    """Reconstruct the one-shot candidates (their masked numbers kept under ``"masked"``) and choose the front again.

    Like the one-shot variants, candidates are measured on the selection data (``data.select``, else the
    evaluation split); the front is chosen there, and with separate selection data every front variant is then
    measured on the whole evaluation split (its selection numbers kept under ``"select"``)."""
    from tqdm.auto import tqdm

    from .reconstruct import ReconstructSettings, reconstruction_candidates

    acc = measurer.accelerator
    select = getattr(data, "select", None)
    chooser = select if select is not None else data.eval
    chooser_split = (data.select_split or "select") if select is not None else data.eval_split
    for v in unique:  # back to the selection basis: the front is chosen there
        if "select" in v:
            v.update(v.pop("select"))
    cands = reconstruction_candidates([v for v in unique if not v.get("dropped_by")], config.reconstruct_depth)
    apply = _reconstructor(config, data, acc)
    by_id = {v["id"]: v for v in unique}
    done: dict[tuple, dict] = {}  # SparseGPT picks its own mask: one allocation, one result whatever the signal
    for vid in tqdm(cands, desc="reconstructing", unit="variant", disable=not (config.progress and acc.is_main_process)):
        v = by_id[vid]
        key = tuple(round(v["target_layers"][layer.name], 12) for layer in layers)
        if key not in done:
            done[key] = measurer.measure(v["target_layers"], None, chooser, apply=apply)
        m = done[key]
        v["masked"] = {k: v[k] for k in ("accuracy", "top5", "sparsity", "samples", "split") if k in v}
        v.update(accuracy=m["accuracy"], top5=m["top5"], sparsity=m["sparsity"], layers=m["layers"],
                 samples=m["samples"], split=chooser_split, reconstructed=True)
    front = pareto_front([v for v in unique if not v.get("dropped_by")])
    if select is not None:
        for vid in front:
            v = by_id[vid]
            full = (measurer.measure(v["target_layers"], None, data.eval, apply=apply) if v.get("reconstructed")
                    else measurer.measure(v["target_layers"], scores[v["signal"]], data.eval))
            v["select"] = {k: v[k] for k in ("accuracy", "top5", "samples", "split")}
            v.update(accuracy=full["accuracy"], top5=full["top5"], samples=full["samples"], split=data.eval_split)
    keys = ("accuracy", "top5", "sparsity", "layers", "masked", "reconstructed", "samples", "split", "select")
    for v in variants:  # strategies that gave the same masks share the numbers
        src = by_id.get(v.get("same_as"))
        if src is not None:
            v.update({k: src[k] for k in keys if k in src})
            for k in set(keys) - set(src):
                v.pop(k, None)
    info = {"method": config.reconstruct, "settings": ReconstructSettings(batch_size=config.batch_size).to_dict(),
            "rule": f"one-shot variants on the first {config.reconstruct_depth} non-dominated layers "
                    f"(chosen on `{chooser_split}`)",
            "candidates": cands, "reconstructions": len(done)}
    return info, front


class _Finetuner:
    """Fine-tunes one allocation at a time with masks kept exact, then puts every parameter back. A Mix-and-Match
    variant's fine-tuned weights are written to its folder as soon as they are measured (none kept in memory)."""

    def __init__(self, config: PruneConfig, model, layers, data: PreparedData, acc, eval_batch_size: int = 256,
                 precision: str = "fp32"):
        self.config, self.model, self.layers, self.acc, self.data = config, model, layers, acc, data
        from torch.utils.data import Subset

        n = len(data.train)
        n_val = max(1, n // 10)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed)).tolist()  # class-mixed val
        self.train = Subset(data.train, order[n_val:])
        self.val = Subset(data.train, order[:n_val])
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.eval_data, self.eval_batch_size, self.precision = data.eval, eval_batch_size, precision
        self.saved: dict[str, Path] = {}  # variant id -> folder holding its fine-tuned weights

    def restore(self) -> None:
        self.model.load_state_dict(self.state)

    def __call__(self, item: dict, scores: dict, folder: Path | None = None, loaded: LoadedModel | None = None) -> dict:
        from .finetune import finetune

        rank_by = item.get("rank_by") or item["signal"]
        if item.get("reconstructed"):
            _reconstructor(self.config, self.data, self.acc)(self.model, self.layers, item["target_layers"])
        else:
            apply_sparsities(self.model, self.layers, item["target_layers"], scores[rank_by])
        res = finetune(self.model, self.layers, self.train, self.val, accelerator=self.acc,
                       steps=self.config.finetune_steps, epochs=self.config.finetune_epochs, lr=self.config.finetune_lr,
                       patience=self.config.finetune_patience, batch_size=self.config.finetune_batch_size,
                       seed=self.config.seed, progress=False)
        self.acc.free_memory()  # drop the optimizer state the accelerator holds before the next item
        overall, _ = measure_sparsity(self.model, self.layers)
        metrics = evaluate(self.model, self.eval_data, batch_size=self.eval_batch_size, accelerator=self.acc,
                           precision=self.precision)
        if folder is not None and loaded is not None and self.acc.is_main_process:
            out = folder.parent.parent
            record_dir(out, "variants")
            record(out, f"variants/{folder.name}")
            save_variant(loaded, folder, recipe={"finetune": "measured; recipe pending"}, storage=self.config.storage)
            self.saved[item["id"]] = folder
        self.restore()
        return {"accuracy": metrics["accuracy"], "top5": metrics["top5"], "sparsity_after": overall,
                "steps": res.steps, "best_step": res.best_step, "stopped_early": res.stopped_early,
                "best_val_accuracy": res.best_val_accuracy, "initial_val_accuracy": res.initial_val_accuracy,
                "lr": self.config.finetune_lr}


def variant_recipe(results: dict, variant: dict, layers: list[LayerInfo]) -> dict:
    """``mixmatch.json``: enough to re-derive the masks from the base model. Local models and datasets are named
    by folder name and content fingerprint, never by path (the recipe is published with the variant)."""
    from .card import public_ref

    cfg = results["config"]
    ft_config = ({"steps": cfg["finetune_steps"], "epochs": cfg["finetune_epochs"], "lr": cfg["finetune_lr"],
                  "patience": cfg["finetune_patience"], "samples": cfg["finetune_samples"]}
                 if cfg.get("finetune_steps") or cfg.get("finetune_epochs") else None)
    return {
        "hf_mixmatch_version": results["hf_mixmatch_version"],
        "base_model": public_ref(results["base_model"]),
        "base_revision": results["base_revision"],
        "library": results["library"],
        "method": variant["method"],
        "signal": variant["signal"],
        "strategy": variant["strategy"],
        "sparsity": variant["sparsity"],
        "layers": variant["layers"],
        "target_layers": variant["target_layers"],
        "roles": {layer.name: layer.role for layer in layers},
        "numel": {layer.name: layer.numel for layer in layers},
        "ranges": results["ranges"]["ranges"],
        "range_source": results["ranges"]["source"],
        "range_targets": list(results["config"]["range_targets"]),
        "dataset": results.get("dataset_name") or public_ref(results["dataset"]),
        "calib_split": results["calib_split"],
        "eval_split": results["eval_split"],
        "calib_samples": results["calib_samples"],
        "eval_samples": results["eval_samples"],
        "batch_size": results["config"]["batch_size"],
        "grad_train_mode": results["config"]["grad_train_mode"],
        "seed": results["seed"],
        "accuracy": variant["accuracy"],
        "top5": variant["top5"],
        "dense_accuracy": results["dense"]["accuracy"],
        "dense_top5": results["dense"]["top5"],
        "storage": "dense",
        "finetune": variant.get("finetune"),
        "finetune_config": ft_config,
        "oneshot": variant.get("oneshot"),
        "reconstructed": bool(variant.get("reconstructed")),
        "reconstruct": results.get("reconstruct", {}).get("settings") if variant.get("reconstructed") else None,
    }


def save_variant(loaded: LoadedModel, path: Path, *, recipe: dict, storage: str = "dense") -> None:
    """Write a variant folder in Hub layout; written to a temp dir first, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        loaded.save_pretrained(tmp)
        (tmp / "mixmatch.json").write_text(json.dumps(recipe, indent=1))
        if storage == "compact":
            from .storage import compact_variant

            compact_variant(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_report(out: Path, results: dict) -> None:
    from .report import write_report

    write_report(out, results)
