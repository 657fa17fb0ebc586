"""Compact storage: bit-exact round trips, packing by hand, sizes that shrink with sparsity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_mixmatch.storage import (COMPACT_FILE, compact_state_dict, compact_variant, is_compact, load_compact,
                                 pack_bits, save_compact, unpack_bits)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _pruned(shape, sparsity, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g).to(dtype)
    k = int(round(sparsity * w.numel()))
    idx = torch.randperm(w.numel(), generator=g)[:k]
    w.view(-1)[idx] = 0
    return w


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1001])
def test_pack_bits_matches_numpy_and_inverts(n):
    rng = np.random.default_rng(n)
    mask = rng.random(n) < 0.4
    packed = pack_bits(torch.from_numpy(mask))
    assert packed.dtype == torch.uint8
    assert packed.numpy().tolist() == np.packbits(mask).tolist()
    assert unpack_bits(packed, n).numpy().tolist() == mask.tolist()


def test_pack_bits_by_hand():
    mask = torch.tensor([1, 0, 1, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    assert pack_bits(mask).tolist() == [0b10100001, 0b10000000]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_round_trip_bit_identical_all_dtypes(tmp_path, dtype):
    w = _pruned((33, 17), 0.7, dtype)
    w[0, 0], w[0, 1], w[0, 2] = -0.0, float("nan"), float("inf")
    state = {"a.weight": w, "a.bias": torch.randn(33).to(dtype), "ids": torch.arange(5), "conv": _pruned((4, 3, 3, 3), 0.9, dtype)}
    path = save_compact(state, tmp_path / "m.safetensors")
    back = load_compact(path)
    assert back.keys() == state.keys()
    for k in state:
        assert back[k].dtype == state[k].dtype and back[k].shape == state[k].shape
        assert torch.equal(_bits(back[k]), _bits(state[k])), k
    assert torch.signbit(back["a.weight"][0, 0])  # -0.0 kept, not turned into +0.0


def test_only_sparse_float_matrices_are_packed():
    state = {"sparse": _pruned((20, 20), 0.5), "dense": torch.randn(20, 20), "vec": torch.zeros(400),
             "ints": torch.zeros(20, 20, dtype=torch.int64)}
    tensors, meta = compact_state_dict(state)
    packed = json.loads(meta["hf_mixmatch.compact"])["tensors"]
    assert set(packed) == {"sparse"}
    assert set(tensors) == {"sparse::mask", "sparse::values", "dense", "vec", "ints"}
    assert tensors["sparse::values"].numel() == 200 and tensors["sparse::mask"].numel() == 50


def test_smaller_at_70_percent_and_shrinks_with_sparsity(tmp_path):
    sizes = {}
    for s in (0.0, 0.5, 0.7, 0.9):
        state = {f"l{i}.weight": _pruned((128, 128), s, seed=i) for i in range(4)}
        save_file(state, str(tmp_path / f"dense{s}.safetensors"))
        save_compact(state, tmp_path / f"compact{s}.safetensors")
        sizes[s] = ((tmp_path / f"dense{s}.safetensors").stat().st_size,
                    (tmp_path / f"compact{s}.safetensors").stat().st_size)
    dense70, compact70 = sizes[0.7]
    # float32: 1 bit of mask + 32 bits per kept value -> ~ (0.3 + 1/32) of dense
    assert compact70 < 0.35 * dense70
    assert sizes[0.9][1] < sizes[0.7][1] < sizes[0.5][1] < sizes[0.5][0]
    assert sizes[0.0][1] <= sizes[0.0][0] + 1024  # dense tensors are not packed: no blow-up


def test_is_compact_and_plain_file_refused(tmp_path):
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    save_compact({"w": torch.zeros(2, 2)}, tmp_path / COMPACT_FILE)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    assert is_compact(tmp_path / COMPACT_FILE) and is_compact(tmp_path)
    assert not is_compact(tmp_path / "plain.safetensors")
    assert not is_compact(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="not an hf_mixmatch compact"):
        load_compact(tmp_path / "plain.safetensors")


def test_reserved_suffix_refused():
    with pytest.raises(ValueError, match="reserved suffix"):
        compact_state_dict({"w::mask": torch.zeros(2, 2)})


def test_compact_variant_converts_folder(tmp_path):
    state = {"l.weight": _pruned((64, 64), 0.8), "l.bias": torch.randn(64)}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "mixmatch.json").write_text(json.dumps({"storage": "dense", "sparsity": 0.8}))
    compact_variant(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "mixmatch.json").read_text())["storage"] == "compact"
    back = load_compact(tmp_path / COMPACT_FILE)
    assert all(torch.equal(_bits(back[k]), _bits(state[k])) for k in state)
    assert load_file(str(tmp_path / COMPACT_FILE)).keys() == {"l.weight::mask", "l.weight::values", "l.bias"}
