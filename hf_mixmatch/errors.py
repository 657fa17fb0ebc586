"""Every error hf_mixmatch raises on purpose.

Each class also inherits the matching builtin so callers can catch either, and every message says
how to fix the problem. The CLI turns any :class:`HfMixmatchError` into a one-line message and a
non-zero exit code.
"""

from __future__ import annotations


class HfMixmatchError(Exception):
    """Base class of all hf_mixmatch errors."""


class ModelLoadError(HfMixmatchError, ValueError):
    """The model id or path cannot be loaded, or is not an image classifier."""


class DatasetError(HfMixmatchError, ValueError):
    """The dataset cannot be opened, or lacks the columns / splits / samples needed."""


class ConfigError(HfMixmatchError, ValueError):
    """An option or configuration value is invalid."""


class OutputDirError(HfMixmatchError, OSError):
    """The output directory exists and is not empty, or cannot be written."""


class RangeError(HfMixmatchError, ValueError):
    """A range table is malformed or does not match the model's layers."""


class SparsityMismatchError(HfMixmatchError, ValueError):
    """Weights do not have the sparsity their card / recipe claims."""


class ClaimError(HfMixmatchError, ValueError):
    """A card or recipe states a number that cannot be true (NaN, infinite, out of range, not a number)."""


class UnsafeWeightsError(HfMixmatchError, ValueError):
    """A repository holds pickle weights; only safetensors are loaded."""


class HubError(HfMixmatchError, RuntimeError):
    """A Hub operation failed after retries."""


class MetricFloorError(HfMixmatchError, ValueError):
    """A structured-pruning target cannot be met above the requested metric floor."""


class StructuredUnsupported(HfMixmatchError, ValueError):
    """Structured pruning cannot handle this architecture; the message starts "not supported: <why>"."""
