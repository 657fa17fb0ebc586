"""Compact storage: a safetensors file whose size shrinks with sparsity.

Unstructured zeros do not shrink a dense checkpoint. Here every floating-point tensor with >= 2
dimensions for which it pays off is stored as two tensors:

* ``<name>::mask``   uint8, the bitmask of stored elements packed 8 per byte (most significant bit
  first, like ``numpy.packbits``), ``ceil(numel / 8)`` bytes;
* ``<name>::values`` the stored elements in row-major order, same dtype as the original;

plus its shape and dtype in the file's metadata (key ``hf_mixmatch.compact``). A tensor is packed
only when ``ceil(n / 8) + nnz * itemsize < n * itemsize`` (for float32: fewer than ~97% nonzeros);
every other tensor is stored as is, so a compact file is never larger than the dense one by more
than its metadata.

Exactness: an element is "stored" when any bit of it is set, so ``-0.0`` (sign bit set) and NaN
payloads are kept as values and every tensor comes back bit-identical. The zeros restored are
all-bits-zero (``+0.0``). Note ``-0.0 == 0`` in torch, so ``-0.0`` counts as pruned for sparsity
measurement but costs a stored value here; pruning writes ``+0.0`` so this does not arise in practice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

COMPACT_FILE = "model.compact.safetensors"
DENSE_FILE = "model.safetensors"
_META_KEY = "hf_mixmatch.compact"
_STORAGE_KEY = "hf_mixmatch.storage"
_FORMAT_VERSION = 1
_MASK, _VALUES = "::mask", "::values"
_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
_SHIFTS = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a 1-D bool tensor into uint8, 8 per byte, most significant bit first (``numpy.packbits``)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BITS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` bits as a 1-D bool tensor."""
    bits = (packed.reshape(-1, 1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(-1)[:n].bool()


def _stored_mask(t: torch.Tensor) -> torch.Tensor:
    """True where any bit of an element is set (so -0.0 and NaN are values, only +0.0 is a zero)."""
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).view(-1, t.element_size()).ne(0).any(dim=1)


def _packs_smaller(n: int, nnz: int, itemsize: int) -> bool:
    return (n + 7) // 8 + nnz * itemsize < n * itemsize


def compact_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata :func:`save_compact` writes (exposed for size estimates and tests)."""
    tensors: dict[str, torch.Tensor] = {}
    packed: dict[str, dict] = {}
    seen_ptrs: set[int] = set()
    for name, t in state_dict.items():
        if _MASK in name or _VALUES in name:
            raise ValueError(f"tensor name {name!r} contains a reserved suffix ({_MASK!r}/{_VALUES!r}): rename it")
        t = t.detach().cpu()
        if t.dim() >= 2 and t.is_floating_point() and t.numel() > 0:
            mask = _stored_mask(t)
            nnz = int(mask.sum())
            if _packs_smaller(t.numel(), nnz, t.element_size()):
                tensors[name + _MASK] = pack_bits(mask)
                tensors[name + _VALUES] = t.contiguous().reshape(-1)[mask].clone()
                packed[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                continue
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen_ptrs:  # safetensors refuses shared storage: store a copy
            t = t.clone()
        if ptr is not None:
            seen_ptrs.add(ptr)
        tensors[name] = t
    metadata = {
        "format": "pt",
        _STORAGE_KEY: "compact",
        _META_KEY: json.dumps({"version": _FORMAT_VERSION, "tensors": packed}, sort_keys=True),
    }
    return tensors, metadata


def save_compact(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write ``state_dict`` to ``path`` in compact form (see the module docstring); returns the path."""
    from safetensors.torch import save_file

    tensors, metadata = compact_state_dict(state_dict)
    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def is_compact(path: str | os.PathLike) -> bool:
    """True when ``path`` (a file, or a folder holding ``model.compact.safetensors``) is compact storage."""
    path = Path(path)
    if path.is_dir():
        path = path / COMPACT_FILE
    if not path.is_file():
        return False
    try:
        return _read_metadata(path).get(_STORAGE_KEY) == "compact"
    except Exception:  # noqa: BLE001 - not a safetensors file at all
        return False


def load_compact(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_compact` back into the exact dense tensors."""
    from safetensors.torch import load_file

    meta = _read_metadata(path)
    if meta.get(_STORAGE_KEY) != "compact" or _META_KEY not in meta:
        raise ValueError(f"{path} is not an hf_mixmatch compact safetensors file: load it with safetensors.load_file")
    info = json.loads(meta[_META_KEY])
    if info.get("version") != _FORMAT_VERSION:
        raise ValueError(f"{path} uses compact format version {info.get('version')}; this hf_mixmatch reads "
                         f"version {_FORMAT_VERSION}: upgrade hf_mixmatch")
    raw = load_file(str(path))
    out: dict[str, torch.Tensor] = {}
    for name, spec in info["tensors"].items():
        shape = tuple(spec["shape"])
        values = raw.pop(name + _VALUES)
        n = 1
        for s in shape:
            n *= s
        mask = unpack_bits(raw.pop(name + _MASK), n)
        if int(mask.sum()) != values.numel() or str(values.dtype).removeprefix("torch.") != spec["dtype"]:
            raise ValueError(f"{path}: tensor {name!r} is corrupt (mask and values disagree): re-download the file")
        dense = torch.zeros(n, dtype=values.dtype)
        dense[mask] = values
        out[name] = dense.view(shape)
    out.update(raw)
    return out


def layer_numels(variant_dir: Path) -> dict[str, int] | None:
    """Layer weight counts of a variant folder (dense or compact), read from the safetensors header: no tensor
    data is loaded."""
    from safetensors import safe_open

    for fname in (DENSE_FILE, COMPACT_FILE):
        path = variant_dir / fname
        if not path.is_file():
            continue
        with safe_open(str(path), framework="pt") as f:
            shapes = {}
            meta = f.metadata() or {}
            packed = json.loads(meta[_META_KEY])["tensors"] if _META_KEY in meta else {}
            for key in f.keys():
                if "::" in key:
                    continue
                shapes[key] = f.get_slice(key).get_shape()
            shapes.update({k: v["shape"] for k, v in packed.items()})
        out = {}
        for key, shape in shapes.items():
            if key.endswith(".weight"):
                n = 1
                for s in shape:
                    n *= int(s)
                out[key[: -len(".weight")]] = n
        return out
    return None


def compact_variant(variant_dir: str | os.PathLike) -> Path:
    """Convert a dense variant folder in place: ``model.safetensors`` -> ``model.compact.safetensors``.

    Writes the compact file first, checks it restores the exact tensors, then removes the dense file
    and sets ``"storage": "compact"`` in ``mixmatch.json``. Returns the compact file's path.
    """
    from safetensors.torch import load_file

    variant_dir = Path(variant_dir)
    dense_path = variant_dir / DENSE_FILE
    if not dense_path.is_file():
        raise FileNotFoundError(f"{dense_path} not found: pass a variant folder written with dense storage")
    state = load_file(str(dense_path))
    compact_path = save_compact(state, variant_dir / COMPACT_FILE)
    restored = load_compact(compact_path)
    if restored.keys() != state.keys() or not all(_bit_equal(state[k], restored[k]) for k in state):
        compact_path.unlink()
        raise RuntimeError(f"compact round trip of {dense_path} was not exact; kept dense storage")
    dense_path.unlink()
    recipe_path = variant_dir / "mixmatch.json"
    if recipe_path.is_file():
        recipe = json.loads(recipe_path.read_text())
        recipe["storage"] = "compact"
        recipe_path.write_text(json.dumps(recipe, indent=1))
    return compact_path


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))
