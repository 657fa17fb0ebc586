"""Batched reads from the decoded cache: the zero-copy chunk views give exactly what ``datasets``' own formatter
gives, for any index pattern (contiguous, shuffled, repeated, across chunk borders), in worker processes too, and
without copying the split into anonymous memory."""

import pickle

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hf_mixmatch.data import load_data
from hf_mixmatch.datacache import CachedSplit

from test_data_cache import PRE, _photos


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A train split of 70 real photo crops: the cache writes 32-row chunks, so reads cross chunk borders."""
    photos = _photos()
    path = tmp_path_factory.mktemp("photos")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c", "d"])})
    images = [photos[i % len(photos)] for i in range(70)]
    labels = [(i * 7) % 4 for i in range(70)]
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats).to_parquet(
            str(path / f"{split}.parquet"))
    data = load_data(path, PRE, calib_samples=4, seed=0, cache_dir=tmp_path_factory.mktemp("cache"))
    assert isinstance(data.eval, CachedSplit) and len(data.eval) == 70
    assert data.eval._table.data.column("x").num_chunks > 1
    return data.eval


def _reference(split: CachedSplit, idx):
    batch = split._table[[int(i) for i in idx]]  # datasets' own numpy formatter, row by row
    return torch.from_numpy(np.asarray(batch["x"])), torch.from_numpy(np.asarray(batch["y"], dtype=np.int64))


@pytest.mark.parametrize("idx", [range(0, 70), range(30, 35), range(69, 70), [69, 0, 33, 31, 32, 5, 5, 64],
                                 list(np.random.default_rng(3).permutation(70)), [40]])
def test_batches_equal_the_datasets_formatter(cached, idx):
    x, y = cached.get_batch(idx)
    ref_x, ref_y = _reference(cached, idx)
    assert x.dtype == torch.float32 and torch.equal(x, ref_x)
    assert y.dtype == torch.int64 and torch.equal(y, ref_y)
    x[:] = 0  # the batch is the caller's own copy: writing to it leaves the cache alone
    assert torch.equal(cached.get_batch(idx)[0], ref_x)


def test_single_items_empty_and_out_of_range(cached):
    ref_x, ref_y = _reference(cached, [33])
    xi, yi = cached[33]
    assert torch.equal(xi, ref_x[0]) and int(yi) == int(ref_y[0]) and yi.dtype == torch.int64
    x, y = cached.get_batch([])
    assert x.shape == (0, *ref_x.shape[1:]) and y.shape == (0,)
    for bad in ([70], [-1], [3, 1000]):
        with pytest.raises(IndexError):
            cached.get_batch(bad)


def test_pickled_for_workers_and_a_shuffled_loader(cached):
    cached.get_batch([1])  # build this process's views; the pickle must not carry them
    clone = pickle.loads(pickle.dumps(cached))
    assert clone._views is None
    assert torch.equal(clone.get_batch(range(70))[0], cached.get_batch(range(70))[0])
    loader = DataLoader(cached, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0),
                        num_workers=2)
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == sorted(_reference(cached, range(70))[1].tolist())


def test_reading_the_whole_split_keeps_it_file_backed(cached):
    """The chunk views are memory-mapped pages: no anonymous copy of the split is made by building them."""
    views, _, _ = cached._chunk_views()
    for v in views:
        assert not v.flags.owndata and not v.flags.writeable  # views into the Arrow buffers, not copies
