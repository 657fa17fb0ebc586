"""One adapter per library behind one small interface (:class:`Adapter`), registered by name.

Detection asks transformers (a ``model_type`` in config.json, timm_wrapper included), timm
(``architecture``), and last the fallback, plain torch (any other module).
"""

from . import transformers as _transformers  # noqa: F401  (registers "transformers")
from . import timm as _timm  # noqa: F401  (registers "timm")
from . import torch as _torch  # noqa: F401  (registers "torch"; last: it accepts any module)
from .base import (Adapter, LoadedModel, Transform, adapter_for_config, adapter_for_module, copy_model,
                   extract_logits, get_adapter, logits, register)
from .load import DEFAULT_DATASET_DIR, DEFAULT_MODEL_DIR, DEFAULT_NAME, load_model
from .torch import Preprocess

__all__ = ["Adapter", "DEFAULT_DATASET_DIR", "DEFAULT_MODEL_DIR", "DEFAULT_NAME", "LoadedModel", "Preprocess",
           "Transform", "adapter_for_config", "adapter_for_module", "copy_model", "extract_logits", "get_adapter", "load_model",
           "logits", "register"]
