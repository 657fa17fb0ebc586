"""Structured, component-aware pruning with soft coefficients (seed 002).

Whole channels, MLP units and attention heads are removed so models really shrink and run faster:

``find_groups`` (DepGraph groups split at component boundaries, attention heads; MLP units by name without a DepGraph) →
``grid_search`` / ``gradient_search`` (soft sigmoid gates under a parameter target, an application metric kept
above a floor) → ``prune_physical`` (Torch-Pruning, our head/unit slicing) → checked against the gated model →
``save_structured`` / ``load_structured`` (safetensors + recipe). ``try_structured`` probes any model.
"""

from .cli import add_cli
from .components import component_of, derive_components, parse_components
from .groups import GroupPlan, StructGroup, find_groups
from .io import describe_base, load_structured, save_structured
from .measure import count_flops, count_params, latency_interleaved, latency_ms, measure, measure_many
from .prune import StructuredResult, finetune, prune_physical, replay, structured_prune
from .cost import expected_macs, expected_params
from .reference import ConvAutoencoder, build_architecture, cifar_resnet, register_architecture, timm_model
from .gradient import gradient_search
from .search import SearchConfig, Selection, grid_search, l1_baseline
from .tasks import Task, accuracy, classification_task, psnr, reconstruction_task
from .attention import AttnSite, find_attention, prune_heads
from .mlp import MlpSite, find_mlps, prune_units
from .verify import TryResult, check_equivalent, try_structured
from ..errors import StructuredUnsupported

__all__ = [
    "ConvAutoencoder", "GroupPlan", "cifar_resnet", "expected_macs", "expected_params", "add_cli", "SearchConfig", "Selection", "StructGroup", "StructuredResult", "Task",
    "accuracy", "build_architecture", "classification_task", "count_flops", "count_params", "derive_components",
    "component_of", "describe_base", "find_groups", "finetune", "gradient_search", "grid_search", "l1_baseline", "latency_ms",
    "latency_interleaved", "load_structured", "measure", "measure_many", "parse_components", "prune_physical", "psnr", "reconstruction_task",
    "register_architecture", "replay", "timm_model", "save_structured", "structured_prune",
    "AttnSite", "find_attention", "prune_heads", "TryResult", "check_equivalent", "try_structured",
    "StructuredUnsupported", "MlpSite", "find_mlps", "prune_units",
]
