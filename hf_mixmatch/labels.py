"""Labels that line up: map the dataset's label values into the model's class indices, or stop.

The dataset side is a ClassLabel (integer values with names), a plain integer column, or a string
column (values are names). The model side is ``id2label``. The rules, in order:

1. ``--label-map FILE`` (JSON ``{dataset_name_or_index: model_index_or_name}``) wins when given.
2. Either side has generic names (``LABEL_0``..., bare integers, none at all): by index, with a warning
   when the dataset has real class names the model cannot confirm.
3. Same names in the same order: identity. Same names in another order (or the dataset's classes are a
   subset of the model's): remap by name and say so. Otherwise: an error naming ``--label-map``.

:func:`check_labels` then verifies that every value used on a split lands in ``[0, num_labels)``.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError

__all__ = ["LabelAlignment", "align_labels", "check_labels", "load_label_map", "is_generic", "label_values",
           "num_classes_of", "dataset_alignment"]

_GENERIC = re.compile(r"^(label_?)?\d+$", re.IGNORECASE)
_FIX = "pass --label-map FILE (JSON {dataset_name_or_index: model_index_or_name})"


@dataclass
class LabelAlignment:
    """How dataset label values become model indices.

    ``how``: "identity" | "by_index" | "by_name" | "label_map". ``names`` are the dataset's class names
    by value (None for a plain integer column); ``lookup`` maps a dataset value (int or str) to a model index.
    """

    how: str
    lookup: dict | None = None  # None: the value is the index
    names: list[str] | None = None
    note: str = ""

    @property
    def remapped(self) -> bool:
        return self.lookup is not None and any(k != v for k, v in self.lookup.items())

    def to_dict(self) -> dict:
        """For results.json: how labels were matched and, when remapped, ``{dataset label: model index}``."""
        mapping = None
        if self.remapped:
            mapping = {str(self.names[k] if self.names and isinstance(k, int) else k): int(v)
                       for k, v in self.lookup.items()}
        return {"how": self.how, "mapping": mapping, "note": self.note or None}

    def map_values(self, values: np.ndarray) -> np.ndarray:
        """Dataset values -> model indices (int64); unmapped values become -1 (caught by check_labels)."""
        if self.lookup is None:
            return np.asarray(values, dtype=np.int64)
        return np.asarray([self.lookup.get(_key(v), -1) for v in values], dtype=np.int64)


def _key(v):
    return v if isinstance(v, str) else int(v)


def is_generic(names) -> bool:
    """True when names carry no meaning: none, ``LABEL_<i>`` / integers at their own index."""
    names = list(names or [])
    return not names or all(_GENERIC.match(str(n).strip()) and int(re.sub(r"\D", "", str(n))) == i
                            for i, n in enumerate(names))


def _norm(name) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def load_label_map(path: str | Path | None) -> dict | None:
    """Read a ``--label-map`` JSON file (a dict) or return None."""
    if path is None:
        return None
    p = Path(path).expanduser()
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        raise DatasetError(f"--label-map file {p} not found: pass an existing JSON file") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"--label-map file {p} is not valid JSON ({exc}): write a JSON object "
                           "{dataset_name_or_index: model_index_or_name}") from None
    if not isinstance(obj, dict) or not obj:
        raise DatasetError(f"--label-map file {p} must hold a non-empty JSON object "
                           "{dataset_name_or_index: model_index_or_name}")
    return obj


def _model_index(value, by_name: dict[str, int], num_labels: int) -> int:
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()
                                  and _norm(value) not in by_name):
        return int(value)
    if _norm(value) in by_name:
        return by_name[_norm(value)]
    raise DatasetError(f"--label-map target '{value}' is neither a model index (0..{num_labels - 1}) nor one of the "
                       f"model's label names: fix the file")


def _from_label_map(label_map: dict, dataset_names, by_name: dict[str, int], num_labels: int) -> LabelAlignment:
    ds_index = {_norm(n): i for i, n in enumerate(dataset_names or [])}
    lookup: dict = {}
    for k, v in label_map.items():
        target = _model_index(v, by_name, num_labels)
        if dataset_names is None and not str(k).strip().lstrip("-").isdigit():
            lookup[str(k)] = target  # string label column: keys are the values themselves
        elif _norm(k) in ds_index:
            lookup[ds_index[_norm(k)]] = target
        elif str(k).strip().lstrip("-").isdigit():
            lookup[int(k)] = target
        else:
            raise DatasetError(f"--label-map key '{k}' is neither a dataset class name nor an index: fix the file")
    return LabelAlignment("label_map", lookup, list(dataset_names) if dataset_names else None,
                          f"labels mapped by --label-map ({len(lookup)} entries)")


def align_labels(dataset_names: list[str] | None, id2label: dict[int, str] | None, num_labels: int, *,
                 string_labels: bool = False, label_map: dict | None = None) -> LabelAlignment:
    """Decide how dataset label values become model indices (see the module docstring)."""
    model_names = [str((id2label or {}).get(i, "")) for i in range(num_labels)] if id2label else []
    model_generic = is_generic(model_names)
    by_name = {} if model_generic else {_norm(n): i for i, n in enumerate(model_names)}
    if label_map is not None:
        return _from_label_map(label_map, dataset_names, by_name, num_labels)
    if string_labels:
        if model_generic:
            raise DatasetError("the label column holds strings but the model has no label names to match them: "
                               + _FIX)
        return LabelAlignment("by_name", _NameLookup(by_name), None, "string labels mapped by the model's names")
    if model_generic or is_generic(dataset_names):
        if id2label is not None and dataset_names and not is_generic(dataset_names):
            warnings.warn(f"the model has no label names: assuming dataset class i ({dataset_names[0]!r}, ...) is "
                          "model class i; " + _FIX + " if not", stacklevel=3)
            return LabelAlignment("by_index", None, list(dataset_names), "by index (the model has no label names)")
        return LabelAlignment("by_index", None, list(dataset_names) if dataset_names else None,
                              "by index (generic label names)")
    ds_norm = [_norm(n) for n in dataset_names]
    model_norm = [_norm(n) for n in model_names]
    if ds_norm == model_norm:
        return LabelAlignment("identity", None, list(dataset_names))
    if len(set(ds_norm)) == len(ds_norm) and set(ds_norm) <= set(model_norm):
        lookup = {i: by_name[n] for i, n in enumerate(ds_norm)}
        moved = sum(1 for i, j in lookup.items() if i != j)
        note = (f"dataset classes remapped to the model's label order by name ({moved} of {len(lookup)} moved"
                + (f"; the dataset has {len(lookup)} of the model's {num_labels} classes" if len(lookup) < num_labels
                   else "") + ")")
        warnings.warn(note, stacklevel=3)
        return LabelAlignment("by_name", lookup, list(dataset_names), note)
    missing = [n for n, k in zip(dataset_names, ds_norm) if k not in set(model_norm)]
    raise DatasetError(f"the dataset's classes ({_short(dataset_names)}) do not match the model's labels "
                       f"({_short(model_names)}; {len(missing)} dataset classes unknown to the model, e.g. "
                       f"{missing[:3]}): " + _FIX)


class _NameLookup(dict):
    """Name -> index lookup that normalises keys (case, spaces, underscores)."""

    def get(self, key, default=None):
        return super().get(_norm(key), default)


def _short(names, n: int = 5) -> str:
    names = list(names)
    return ", ".join(map(str, names[:n])) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def check_labels(mapped: np.ndarray, raw: np.ndarray, num_labels: int, split: str) -> None:
    """One-line error when a split's mapped labels fall outside ``[0, num_labels)``."""
    bad = (mapped < 0) | (mapped >= num_labels)
    if not bad.any():
        return
    values = sorted({_key(v) for v in np.asarray(raw)[bad]}, key=str)
    raise DatasetError(f"split '{split}' has {int(bad.sum())} rows whose label is outside the model's classes "
                       f"0..{num_labels - 1} (values {values[:8]}{' ...' if len(values) > 8 else ''}): " + _FIX
                       + " or use a split labelled for this model")


# ------------------------------------------------------------------------------ the dataset side


def num_classes_of(ds, label_column: str) -> int:
    """Classes of the label column: ClassLabel's count, distinct strings, or max integer + 1."""
    import datasets

    feat = next(iter(ds.values())).features[label_column]
    if isinstance(feat, datasets.ClassLabel):
        return int(feat.num_classes)
    values = [label_values(split, label_column) for split in ds.values() if len(split)]
    if any(v.dtype.kind in "OUS" for v in values):
        return len({str(x) for v in values for x in v if x is not None})
    return int(max(int(v.max()) for v in values if len(v))) + 1


def label_values(split_ds, label_column: str) -> np.ndarray:
    """The whole label column as numpy (ints; strings as objects; missing ints as -1)."""
    import pyarrow as pa

    col = split_ds.with_format("arrow", columns=[label_column])[:][label_column]
    if pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
        return col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_floating(col.type):
        arr = col.fill_null(-1).to_numpy(zero_copy_only=False)
        if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise DatasetError(f"label column '{label_column}' holds non-integer numbers: pass --label-column with "
                               "class labels")
        return arr.astype(np.int64)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    raise DatasetError(f"label column '{label_column}' has type {col.type}, not class labels: pass --label-column NAME")


def dataset_alignment(ds, label_column: str, num_labels: int | None, id2label, label_map) -> tuple[LabelAlignment, int]:
    """How this dataset's labels become the model's indices, and the dataset's number of classes."""
    import datasets

    feat = next(iter(ds.values())).features[label_column]
    names = list(feat.names) if isinstance(feat, datasets.ClassLabel) else None
    string_labels = isinstance(feat, datasets.Value) and feat.dtype in ("string", "large_string")
    n_classes = num_classes_of(ds, label_column)
    if num_labels is None:
        return LabelAlignment("identity", None, names), n_classes
    alignment = align_labels(names, id2label, num_labels, string_labels=string_labels, label_map=label_map)
    if alignment.how == "by_index" and names is not None and n_classes != num_labels:  # ints: checked per split
        raise DatasetError(
            f"the dataset has {n_classes} classes but the model predicts {num_labels}: use a dataset with the"
            " model's label set (or a model fine-tuned on this dataset), or pass --label-map FILE"
        )
    return alignment, n_classes
