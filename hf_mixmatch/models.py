"""Loading models: a thin re-export of :mod:`hf_mixmatch.adapters` (one adapter per library), kept so
existing imports (``from hf_mixmatch.models import load_model, LoadedModel, Preprocess, logits``) work."""

from .adapters import (DEFAULT_DATASET_DIR, DEFAULT_MODEL_DIR, DEFAULT_NAME, LoadedModel, Preprocess, Transform,
                       load_model, logits)

__all__ = ["DEFAULT_DATASET_DIR", "DEFAULT_MODEL_DIR", "DEFAULT_NAME", "LoadedModel", "Preprocess", "Transform",
           "load_model", "logits"]
