"""The Mix-and-Match run: load -> layers -> scores -> ranges -> strategies -> masks -> evaluate ->
Pareto front -> variant folders, report and ``results.json`` (written last, atomically)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__
from .data import PreparedData, load_data
from .errors import ConfigError, OutputDirError
from .evaluate import evaluate, make_loader
from .layers import LayerInfo, list_prunable
from .masks import WeightStash, apply_sparsities, measure_sparsity
from .models import LoadedModel, load_model
from .pareto import pareto_front
from .ranges import DEFAULT_TARGETS, RangeTable, resolve_ranges
from .signals import SELECTABLE_SIGNALS, SIGNALS, compute_scores, fingerprint, load_scores, save_scores
from .strategies import DEFAULT_STRATEGIES, STRATEGIES, strategy_sparsities

logger = logging.getLogger(__name__)

SAVE_CHOICES = ("pareto", "all", "none")
CACHE_FILES = ("scores.safetensors",)
RESULTS_FILE = "results.json"


@dataclass
class PruneConfig:
    """Everything a run needs; the CLI parses its arguments into exactly this."""

    model: str
    dataset: str | None = None
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
    reconstruct: str = "none"  # "none" | "sparsegpt": layer-wise reconstruction (hf_mixmatch.reconstruct)
    reconstruct_depth: int = 2  # candidates: one-shot variants on the first N non-dominated layers

    @property
    def finetune(self) -> bool:
        return bool(self.finetune_steps) or bool(self.finetune_epochs)

    def __post_init__(self) -> None:
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

    def to_dict(self) -> dict:
        return asdict(self)


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


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Create ``path``; refuse a non-empty one unless ``overwrite`` (then clear it but keep caches)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output-dir {out} is a file: pass a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputDirError(f"--output-dir {out} exists and is not empty: pass --overwrite or another directory")
        for child in out.iterdir():
            if child.name in CACHE_FILES or child.name.startswith("rd_curves_"):
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"cannot write to --output-dir {out} ({exc.strerror}): pass a writable directory") from exc
    return out


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
    out = prepare_output_dir(config.output_dir, overwrite=config.overwrite) if is_main else Path(config.output_dir)
    acc.wait_for_everyone()

    loaded = loaded or load_model(config.model, revision=config.revision)
    dataset_spec = config.dataset or ("default" if config.model == "default" else None)
    if data is None:
        if dataset_spec is None:
            raise ConfigError("--dataset is required (a Hub id or a local folder) unless the model is 'default'")
        data = load_data(
            dataset_spec, loaded.preprocess, calib_split=config.calib_split, eval_split=config.eval_split,
            calib_samples=config.calib_samples, eval_samples=config.eval_samples, seed=config.seed,
            image_column=config.image_column, label_column=config.label_column, num_labels=loaded.num_labels,
            train_samples=config.finetune_samples if config.finetune else None,
        )
    if config.finetune and data.train is None:
        raise ConfigError("fine-tuning needs PreparedData.train: load the data with train_samples=...")
    model = loaded.model.to(acc.device).eval()
    layers = list_prunable(model, num_labels=loaded.num_labels)
    if not layers:
        raise ConfigError("the model has no Conv/Linear weights to prune")

    eval_loader = make_loader(data.eval, batch_size=config.batch_size, accelerator=acc)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    dense = evaluate(model, eval_loader, accelerator=acc, progress=config.progress, desc="evaluate dense")
    timings["dense_eval_s"] = time.perf_counter() - t0

    scores = _scores(config, model, layers, data, acc, out, timings)
    curves = _rd_curves(config, model, layers, data, acc, out, timings) if config.ranges == "rd" else None
    ranges = resolve_ranges(config.ranges, layers, scores, targets=config.range_targets, rd_curves=curves,
                            rd_grid=_rd_grid(config))
    finetuner = _Finetuner(config, model, layers, data, acc) if config.finetune else None

    # ---- Mix-and-Match variants ----
    t0 = time.perf_counter()
    stash = WeightStash(model, layers)
    variants: list[dict] = []
    seen: dict[tuple, dict] = {}
    plan = [(sig, strat) for sig in config.signals for strat in config.strategies]
    for sig, strat in tqdm(plan, desc="variants", unit="variant", disable=not (config.progress and is_main)):
        sparsities = strategy_sparsities(strat, ranges, layers, scores=scores[sig])
        key = (sig, tuple(round(sparsities[layer.name], 12) for layer in layers))
        if key in seen:  # same masks as an earlier strategy (e.g. balanced == percentile_50): reuse its numbers
            prev = seen[key]
            variants.append({**prev, "id": f"{sig}-{strat}", "strategy": strat, "path": None,
                             "same_as": prev.get("same_as") or prev["id"]})
            continue
        v = {"id": f"{sig}-{strat}", "method": "mixmatch", "signal": sig, "strategy": strat,
             **_measure(model, layers, sparsities, scores[sig], eval_loader, acc, stash), "path": None}
        variants.append(v)
        seen[key] = v
    timings["variants_s"] = time.perf_counter() - t0
    unique = [v for v in variants if "same_as" not in v]
    front = pareto_front(unique)

    # ---- layer-wise reconstruction of the one-shot candidates (--reconstruct) ----
    reconstruction = None
    if config.reconstruct != "none":
        t0 = time.perf_counter()
        reconstruction = _reconstruct_candidates(config, model, layers, variants, unique, data, eval_loader, acc, stash)
        front = pareto_front(unique)
        timings["reconstruct_s"] = time.perf_counter() - t0

    # ---- baselines at matched sparsity ----
    baselines: list[dict] = []
    if config.baselines:
        t0 = time.perf_counter()
        baselines = _baselines(config, model, layers, scores, unique, front, data, eval_loader, acc, stash, out)
        timings["baselines_s"] = time.perf_counter() - t0

    # ---- optional fine-tuning of the front and its matched baselines (same budget) ----
    if finetuner is not None:
        t0 = time.perf_counter()
        todo = [v for v in unique if v["id"] in front] + baselines
        for item in tqdm(todo, desc="fine-tuning", unit="model", disable=not (config.progress and is_main)):
            # after fine-tuning, accuracy/top5 describe the fine-tuned weights; the one-shot numbers stay in "oneshot"
            ft = finetuner(item, scores)
            item["oneshot"] = {"accuracy": item["accuracy"], "top5": item["top5"]}
            item.update(accuracy=ft.pop("accuracy"), top5=ft.pop("top5"), finetune=ft)
        timings["finetune_s"] = time.perf_counter() - t0

    results = {
        "base_model": loaded.source,
        "base_revision": loaded.revision,
        "library": loaded.library,
        "license": loaded.license,
        "dataset": data.dataset,
        "calib_split": data.calib_split,
        "eval_split": data.eval_split,
        "calib_samples": data.calib_samples,
        "eval_samples": data.eval_samples,
        "seed": config.seed,
        "hf_mixmatch_version": __version__,
        "dense": {"accuracy": dense["accuracy"], "top5": dense["top5"]},
        "ranges": ranges.to_dict(),
        "layer_roles": {layer.name: layer.role for layer in layers},
        "variants": variants,
        "pareto": front,
        "config": config.to_dict(),
        "processes": acc.num_processes,
    }
    if config.baselines:
        results["baselines"] = baselines
    if reconstruction is not None:
        results["reconstruct"] = reconstruction

    # ---- variant folders ----
    to_save = {"all": [v["id"] for v in unique], "pareto": front, "none": []}[config.save]
    if is_main and to_save:
        by_id = {v["id"]: v for v in variants}
        for vid in tqdm(to_save, desc="saving variants", unit="variant", disable=not config.progress):
            v = by_id[vid]
            if finetuner is not None and vid in finetuner.tuned:
                finetuner.load_finetuned(v)
            elif v.get("reconstructed"):  # deterministic: the same calibration set gives the same weights
                _reconstructor(config, data, acc)(model, layers, v["target_layers"])
            else:
                apply_sparsities(model, layers, v["target_layers"], scores[v["signal"]])
            rel = f"variants/{vid}"
            save_variant(loaded, out / rel, recipe=variant_recipe(results, v, layers), storage=config.storage)
            if finetuner is not None:
                finetuner.restore()
            else:
                stash.restore()
            v["path"] = rel
    acc.wait_for_everyone()
    timings["total_s"] = time.perf_counter() - t_start
    results["timings"] = timings
    if is_main:
        _write_report(out, results)
        write_json_atomic(out / RESULTS_FILE, results)
    acc.wait_for_everyone()
    return RunResult(results=results, output_dir=out, layers=layers, ranges=ranges)


def _scores(config: PruneConfig, model, layers, data: PreparedData, acc, out: Path, timings: dict) -> dict:
    """Compute the signals the run needs, or reuse the ones cached in the output dir."""
    needed = set(config.signals) | {"magnitude"}
    if config.ranges == "observed":
        needed |= {"snip", "grasp"}
    from .allocators import ALLOCATOR_SIGNALS

    needed |= {s for b in config.baselines for s in ALLOCATOR_SIGNALS.get(b, ())}
    t0 = time.perf_counter()
    fp = fingerprint(model, layers, data.calib, batch_size=config.batch_size, train_mode=config.grad_train_mode)
    cache = out / "scores.safetensors"
    scores = load_scores(cache, fingerprint=fp)
    timings["scoring_cached"] = scores is not None and needed <= set(scores)
    if not timings["scoring_cached"]:
        scores = compute_scores(model, layers, data.calib, signals=tuple(sorted(needed)), batch_size=config.batch_size,
                                accelerator=acc, train_mode=config.grad_train_mode, progress=config.progress)
        if acc.is_main_process:
            save_scores(scores, cache, fingerprint=fp)
    timings["scoring_s"] = time.perf_counter() - t0
    return scores


def _rd_grid(config: PruneConfig):
    from .rd import default_grid

    return default_grid(config.rd_grid_step)


def _rd_curves(config: PruneConfig, model, layers, data: PreparedData, acc, out: Path, timings: dict) -> dict:
    """RD/DP distortion curves on the calibration images (cached in the output dir), for ``--ranges rd``."""
    from .allocators import ALLOCATORS

    t0 = time.perf_counter()
    rd = ALLOCATORS["rd"].prepare(model, data.calib.tensors[0], grid=_rd_grid(config), reduction=config.rd_reduction,
                                  cache_dir=out if acc.is_main_process else None, batch_size=config.batch_size,
                                  layers=layers)
    timings["rd_curves_s"] = time.perf_counter() - t0
    return rd.curves


def _measure(model, layers, sparsities, score, eval_loader, acc, stash: WeightStash, apply=apply_sparsities) -> dict:
    """Apply one allocation (masking, or ``apply`` = a reconstructor), measure sparsity and accuracy, restore."""
    apply(model, layers, sparsities, score)
    overall, per_layer = measure_sparsity(model, layers)
    metrics = evaluate(model, eval_loader, accelerator=acc)
    stash.restore()
    return {"sparsity": overall, "accuracy": metrics["accuracy"], "top5": metrics["top5"], "layers": per_layer,
            "target_layers": dict(sparsities)}


def _baselines(config, model, layers, scores, unique, front, data, eval_loader, acc, stash, out) -> list[dict]:
    """Every baseline at the measured sparsity of every matched Mix-and-Match variant."""
    from tqdm.auto import tqdm

    from .allocators import ALLOCATORS
    from .layers import weights_of

    allocators = dict(ALLOCATORS)
    if "rd" in config.baselines:
        allocators["rd"] = ALLOCATORS["rd"].prepare(
            model, data.calib.tensors[0], grid=_rd_grid(config), reduction=config.rd_reduction,
            cache_dir=out if acc.is_main_process else None, batch_size=config.batch_size, layers=layers)
    matched = [v for v in unique if config.baseline_match == "all" or v["id"] in front]
    weights = weights_of(model, layers)
    rows = []
    plan = [(v, m) for v in matched for m in config.baselines]
    for v, method in tqdm(plan, desc="baselines", unit="eval", disable=not (config.progress and acc.is_main_process)):
        alloc = allocators[method](weights=weights, layers=layers, target=v["sparsity"], scores=scores)
        measured = _measure(model, layers, alloc.sparsities, scores[alloc.rank_by], eval_loader, acc, stash)
        if alloc.info.get("reconstruct") or config.reconstruct != "none":  # same treatment as the front
            masked = {"accuracy": measured["accuracy"], "top5": measured["top5"]}
            measured = {**_measure(model, layers, alloc.sparsities, None, eval_loader, acc, stash,
                                   apply=_reconstructor(config, data, acc)), "reconstructed": True, "masked": masked}
        rows.append({"id": f"{method}@{v['id']}", "method": method, "matched_to": v["id"], "rank_by": alloc.rank_by,
                     **measured})
    return rows


def _reconstructor(config: PruneConfig, data: PreparedData, acc):
    from .reconstruct import ReconstructSettings, make_reconstructor

    settings = ReconstructSettings(batch_size=config.batch_size)
    return make_reconstructor(settings, data.calib.tensors[0], accelerator=acc)


def _reconstruct_candidates(config, model, layers, variants, unique, data, eval_loader, acc, stash) -> dict:
    """Reconstruct the one-shot candidates in place of their masked numbers (kept under ``"masked"``)."""
    from tqdm.auto import tqdm

    from .reconstruct import ReconstructSettings, reconstruction_candidates

    cands = reconstruction_candidates(unique, config.reconstruct_depth)
    apply = _reconstructor(config, data, acc)
    by_id = {v["id"]: v for v in unique}
    done: dict[tuple, dict] = {}  # SparseGPT picks its own mask: one allocation, one result whatever the signal
    for vid in tqdm(cands, desc="reconstructing", unit="variant", disable=not (config.progress and acc.is_main_process)):
        v = by_id[vid]
        key = tuple(round(v["target_layers"][layer.name], 12) for layer in layers)
        if key not in done:
            done[key] = _measure(model, layers, v["target_layers"], None, eval_loader, acc, stash, apply=apply)
        m = done[key]
        v["masked"] = {"accuracy": v["accuracy"], "top5": v["top5"], "sparsity": v["sparsity"]}
        v.update(accuracy=m["accuracy"], top5=m["top5"], sparsity=m["sparsity"], layers=m["layers"], reconstructed=True)
    for v in variants:  # strategies that gave the same masks share the numbers
        if v.get("same_as") in cands:
            src = by_id[v["same_as"]]
            v.update({k: src[k] for k in ("accuracy", "top5", "sparsity", "layers", "masked", "reconstructed")})
    return {"method": config.reconstruct, "settings": ReconstructSettings(batch_size=config.batch_size).to_dict(),
            "rule": f"one-shot variants on the first {config.reconstruct_depth} non-dominated layers",
            "candidates": cands, "reconstructions": len(done)}


class _Finetuner:
    """Fine-tunes one allocation at a time with masks kept exact, then puts every parameter back."""

    def __init__(self, config: PruneConfig, model, layers, data: PreparedData, acc):
        self.config, self.model, self.layers, self.acc, self.data = config, model, layers, acc, data
        n = len(data.train)
        n_val = max(1, n // 10)
        x, y = data.train.tensors
        from torch.utils.data import TensorDataset

        self.train = TensorDataset(x[n_val:], y[n_val:])
        self.val = TensorDataset(x[:n_val], y[:n_val])
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.eval_loader = make_loader(data.eval, batch_size=config.batch_size, accelerator=acc)
        self.tuned: dict[str, dict] = {}

    def restore(self) -> None:
        self.model.load_state_dict(self.state)

    def __call__(self, item: dict, scores: dict) -> dict:
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
        overall, _ = measure_sparsity(self.model, self.layers)
        metrics = evaluate(self.model, self.eval_loader, accelerator=self.acc)
        if item.get("method") == "mixmatch":
            self.tuned[item["id"]] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.restore()
        return {"accuracy": metrics["accuracy"], "top5": metrics["top5"], "sparsity_after": overall,
                "steps": res.steps, "best_val_accuracy": res.best_val_accuracy, "lr": self.config.finetune_lr}

    def load_finetuned(self, variant: dict) -> None:
        self.model.load_state_dict(self.tuned[variant["id"]])


def variant_recipe(results: dict, variant: dict, layers: list[LayerInfo]) -> dict:
    """``mixmatch.json``: enough to re-derive the masks from the base model."""
    return {
        "hf_mixmatch_version": results["hf_mixmatch_version"],
        "base_model": results["base_model"],
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
        "dataset": results["dataset"],
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
