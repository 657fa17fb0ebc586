"""hf_mixmatch: Mix-and-Match pruning for Hugging Face transformers and timm vision classifiers."""

__version__ = "0.1.0"

# Public names are imported on first use, so `hf-mixmatch --help` and a Ctrl-C during start-up stay cheap and are
# handled by the command line (torch, transformers and datasets load only when a command needs them).
_EXPORTS = {
    "PreparedData": ".data", "load_data": ".data",
    "list_pruned": ".hub", "push_run": ".hub",
    "LayerInfo": ".layers", "list_prunable": ".layers",
    "from_pretrained": ".loading", "verify": ".verification",
    "LoadedModel": ".models", "Preprocess": ".models", "load_model": ".models",
    "PruneConfig": ".pipeline", "RunResult": ".pipeline", "run_mixmatch": ".pipeline",
}


def __getattr__(name):
    import importlib

    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    try:  # submodules, e.g. ``hf_mixmatch.hub`` after a bare ``import hf_mixmatch``
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'hf_mixmatch' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


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
