"""The run's configuration: ``PruneConfig``, what the CLI parses its arguments into and the Python API takes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ConfigError
from .precision import PRECISIONS
from .racing import EVAL_MODES
from .ranges import DEFAULT_TARGETS
from .reconstruct import REFIT_DEFAULT
from .signals import SELECTABLE_SIGNALS, SIGNALS
from .strategies import CURVE_STRATEGIES, STRATEGIES, default_strategies

SAVE_CHOICES = ("pareto", "all", "none")
@dataclass
class PruneConfig:
    """Everything a run needs; the CLI parses its arguments into exactly this."""

    model: str
    dataset: str | None = None
    dataset_name: str | None = None  # what cards and recipes call the dataset (default: Hub id / local name+fingerprint)
    output_dir: str = "runs/mixmatch"
    signals: tuple[str, ...] = SIGNALS
    strategies: tuple[str, ...] | None = None  # None: the 13 defaults, + the curve-driven ones with ranges "rd"
    ranges: str | None = None  # None: "rd" with reconstruct="sparsegpt" (measured best there), else "observed"
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
    rd_distortion: str | None = None  # "magnitude" | "sparsegpt"; None: "sparsegpt" with reconstruct="sparsegpt"
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
    eval_resident: str = "auto"  # "auto": on CUDA, selection/eval images uploaded once when they fit | "never"
    reconstruct: str = "none"  # "none" | "sparsegpt": layer-wise reconstruction (hf_mixmatch.reconstruct)
    reconstruct_depth: int = 2  # candidates: one-shot variants on the first N non-dominated layers
    reconstruct_target: str = "dense"  # "dense": each layer fits the dense model's outputs | "pruned": W X (the paper)
    reconstruct_refit: int = REFIT_DEFAULT  # CG steps refitting the kept weights to their mask's optimum (0: off)
    bn_recalibrate: bool = True  # re-estimate BatchNorm statistics of every variant on the calibration images

    @property
    def finetune(self) -> bool:
        return bool(self.finetune_steps) or bool(self.finetune_epochs)

    def __post_init__(self) -> None:
        if self.ranges is None:
            self.ranges = "rd" if self.reconstruct == "sparsegpt" else "observed"
        if self.strategies is None:
            self.strategies = default_strategies(self.ranges)
        if self.rd_distortion is None:  # the curves measure what the run's variants will pay
            self.rd_distortion = "sparsegpt" if self.reconstruct == "sparsegpt" else "magnitude"
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
        curve = [s for s in self.strategies if s in CURVE_STRATEGIES]
        if curve and self.ranges != "rd":
            raise ConfigError(f"strategy(ies) {curve} need RD/DP distortion curves: add --ranges rd")
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
        from .reconstruct import RECONSTRUCT_CHOICES, RECONSTRUCT_TARGETS

        if self.reconstruct not in RECONSTRUCT_CHOICES or self.reconstruct_depth < 1:
            raise ConfigError(f"--reconstruct must be one of {list(RECONSTRUCT_CHOICES)} and --reconstruct-depth >= 1")
        if self.reconstruct_target not in RECONSTRUCT_TARGETS:
            raise ConfigError(f"--reconstruct-target must be one of {list(RECONSTRUCT_TARGETS)}, "
                              f"got {self.reconstruct_target!r}")
        if self.reconstruct_refit < 0:
            raise ConfigError(f"--reconstruct-refit must be >= 0 (0 turns the refit off), got {self.reconstruct_refit}")
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
        if self.eval_resident not in ("auto", "never"):
            raise ConfigError(f"--eval-resident must be auto|never, got '{self.eval_resident}'")
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
    if c.rd_distortion not in ("magnitude", "sparsegpt"):
        raise ConfigError(f"--rd-distortion must be 'magnitude' or 'sparsegpt', got '{c.rd_distortion}'")
