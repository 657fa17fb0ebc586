"""hf_mixmatch: Mix-and-Match pruning for Hugging Face transformers and timm vision classifiers."""

__version__ = "0.1.0"

from .data import PreparedData, load_data  # noqa: E402
from .hub import list_pruned, push_run  # noqa: E402
from .layers import LayerInfo, list_prunable  # noqa: E402
from .loading import from_pretrained, verify  # noqa: E402
from .models import LoadedModel, Preprocess, load_model  # noqa: E402
from .pipeline import PruneConfig, RunResult, run_mixmatch  # noqa: E402

__all__ = [
    "__version__",
    "LayerInfo",
    "LoadedModel",
    "PreparedData",
    "Preprocess",
    "PruneConfig",
    "RunResult",
    "from_pretrained",
    "list_prunable",
    "list_pruned",
    "push_run",
    "verify",
    "load_data",
    "load_model",
    "run_mixmatch",
]
