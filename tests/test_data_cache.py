"""The decoded-data cache: decode once, memory-mapped, exactly the transform's output, reused on a second run."""

import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import hf_mixmatch.datacache as datacache
from hf_mixmatch.data import load_data, preprocess_images
from hf_mixmatch.datacache import CachedSplit, default_cache_dir, tensors_of
from hf_mixmatch.evaluate import evaluate
from hf_mixmatch.models import Preprocess

PRE = Preprocess(size=(24, 24), resize=(28, 28), mean=(0.48, 0.45, 0.4), std=(0.23, 0.22, 0.25), channels=3,
                 interpolation="bicubic")


def _photos():
    """Crops of scikit-learn's two real photos at several sizes and aspect ratios."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = []
    for k, arr in enumerate(load_sample_images().images):
        for j, (h, w) in enumerate([(427, 640), (300, 120), (97, 211), (64, 64), (150, 401)]):
            top, left = (k * 37 + j * 11) % (427 - h + 1), (k * 53 + j * 29) % (640 - w + 1)
            out.append(Image.fromarray(arr[top:top + h, left:left + w]))
    return out


@pytest.fixture
def photo_dataset(tmp_path):
    """Parquet train/test of real photo crops; labels 0..2."""
    photos = _photos()
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    path = tmp_path / "photos"
    path.mkdir()
    for split, reps in (("train", 3), ("test", 1)):
        images = photos * reps
        datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(len(images))]},
                                   features=feats).to_parquet(str(path / f"{split}.parquet"))
    return path, photos


def test_eval_data_equals_the_transform_on_real_photos_exactly(photo_dataset):
    path, photos = photo_dataset
    data = load_data(path, PRE, calib_samples=4, seed=0)
    assert isinstance(data.eval, CachedSplit) and not isinstance(data.eval, TensorDataset)
    x, y = data.eval.get_batch(range(len(data.eval)))
    expected = preprocess_images(photos, PRE)
    assert x.dtype == torch.float32 and torch.equal(x, expected)  # float32 bit-exact, not float16
    assert y.dtype == torch.int64 and y.tolist() == [i % 3 for i in range(len(photos))]
    xi, yi = data.eval[3]
    assert torch.equal(xi, expected[3]) and int(yi) == 0 and yi.dtype == torch.int64
    xs, ys = data.eval.get_batch([7, 2, 7])  # any order, repeats
    assert torch.equal(xs, expected[[7, 2, 7]]) and ys.tolist() == [1, 2, 1]


def test_cache_is_memory_mapped_and_under_the_datasets_cache(photo_dataset, tmp_path):
    path, _ = photo_dataset
    data = load_data(path, PRE, calib_samples=4)
    assert Path(data.eval.path).parent == default_cache_dir()
    assert str(default_cache_dir()).startswith(os.environ["HF_DATASETS_CACHE"])
    assert type(data.eval._table.data).__name__ == "MemoryMappedTable"
    assert isinstance(data.calib, TensorDataset)  # calibration stays small and in RAM


def test_second_run_skips_decoding_and_a_new_transform_does_not(photo_dataset, monkeypatch, tmp_path):
    path, _ = photo_dataset
    calls = []
    real = datacache.apply_transform
    monkeypatch.setattr(datacache, "apply_transform", lambda pre, imgs: calls.append(len(imgs)) or real(pre, imgs))
    cache = tmp_path / "cache"
    a = load_data(path, PRE, calib_samples=4, cache_dir=cache)
    assert sum(calls) == 4 + len(a.eval)
    calls.clear()
    b = load_data(path, PRE, calib_samples=4, cache_dir=cache)
    assert calls == []  # everything came from the cache
    assert torch.equal(tensors_of(a.eval)[0], tensors_of(b.eval)[0])
    assert torch.equal(a.calib.tensors[0], b.calib.tensors[0])
    other = Preprocess(size=(24, 24), resize=(28, 28), mean=PRE.mean, std=PRE.std, interpolation="bilinear")
    c = load_data(path, other, calib_samples=4, cache_dir=cache)
    assert sum(calls) == 4 + len(c.eval) and c.eval.path != a.eval.path
    assert not torch.equal(tensors_of(a.eval)[0], tensors_of(c.eval)[0])


class _CallableTransform:
    """Interface 1: a batched callable with a key and an input size (here: centre pixels, scaled)."""

    key = "toy-transform-v1"
    input_size = (3, 8, 10)
    channels = 3

    def __call__(self, images):
        arrs = [np.asarray(im.convert("RGB").resize((10, 8)), dtype=np.float32) / 255.0 for im in images]
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) * 2 - 1


def test_callable_transform_protocol(photo_dataset):
    path, photos = photo_dataset
    t = _CallableTransform()
    data = load_data(path, t, calib_samples=3)
    x, _ = data.eval.get_batch(range(len(data.eval)))
    assert x.shape == (len(photos), 3, 8, 10) and torch.equal(x, t(photos))
    assert data.calib.tensors[0].shape == (3, 3, 8, 10)


def test_batches_through_dataloader_workers_and_evaluate(photo_dataset):
    path, photos = photo_dataset
    data = load_data(path, PRE, calib_samples=4)
    loader = DataLoader(data.eval, batch_size=4, num_workers=1)
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(xs), preprocess_images(photos, PRE)) and torch.cat(ys).shape == (len(photos),)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 3))
    m = evaluate(model, data.eval, batch_size=3)
    assert m["samples"] == len(photos)
    x, y = tensors_of(data.eval)
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).float().mean().item()
    assert m["accuracy"] == pytest.approx(acc)


def test_unwritable_cache_dir_is_a_clear_error(photo_dataset, tmp_path):
    from hf_mixmatch.errors import DatasetError

    path, _ = photo_dataset
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatasetError, match="--data-cache-dir"):
        load_data(path, PRE, calib_samples=2, cache_dir=blocker / "sub")
    assert blocker.read_text() == "not a folder"



def test_full_disk_while_caching_is_a_clear_error(photo_dataset, tmp_path, monkeypatch):
    from hf_mixmatch.errors import DatasetError

    path, _ = photo_dataset

    def no_space(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "map", no_space)
    with pytest.raises(DatasetError, match=r"No space left on device\): pass --data-cache-dir"):
        load_data(path, PRE, calib_samples=2, cache_dir=tmp_path / "c")


def test_in_memory_dataset_is_cached_on_disk_too(tmp_path):
    from PIL import Image

    from hf_mixmatch.data import prepare_splits

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    imgs = [Image.fromarray(np.full((5 + i, 9, 3), 20 * i, dtype=np.uint8)) for i in range(6)]
    split = datasets.Dataset.from_dict({"image": imgs, "label": [0, 1] * 3}, features=feats)
    dd = datasets.DatasetDict({"train": split, "test": split})
    data = prepare_splits(dd, PRE, calib_split="train", eval_split="test", calib_samples=2, image_column="image",
                          label_column="label", cache_dir=tmp_path / "c")
    assert type(data.eval._table.data).__name__ == "MemoryMappedTable" and Path(data.eval.path).parent == tmp_path / "c"
    assert torch.equal(tensors_of(data.eval)[0], preprocess_images(imgs, PRE))


_WORKER = """
import sys, torch
from hf_mixmatch.data import load_data
from hf_mixmatch.models import Preprocess
pre = Preprocess(size=(24, 24), resize=(28, 28), mean=(0.48, 0.45, 0.4), std=(0.23, 0.22, 0.25),
                 interpolation="bicubic")
d = load_data(sys.argv[1], pre, calib_samples=5, select_samples=None, cache_dir=sys.argv[2])
torch.save({"calib": d.calib.tensors, "eval": d.eval.get_batch(range(len(d.eval))),
            "select": d.select.get_batch(range(len(d.select)))}, sys.argv[3])
"""


def test_two_processes_decoding_at_once_share_one_cache(photo_dataset, tmp_path):
    import subprocess
    import sys

    path, _ = photo_dataset
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_MIXMATCH_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", _WORKER, str(path), str(tmp_path / "cache")]
    procs = [subprocess.Popen(cmd + [str(tmp_path / f"{i}.pt")], env=env, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    a, b = (torch.load(tmp_path / f"{i}.pt") for i in range(2))
    for k in ("calib", "eval", "select"):
        assert all(torch.equal(u, v) for u, v in zip(a[k], b[k]))
    assert len(list((tmp_path / "cache").glob("*.arrow"))) == 3  # calibration, evaluation, selection
    mine = load_data(path, PRE, calib_samples=5, select_samples=None, cache_dir=tmp_path / "cache")
    assert torch.equal(mine.calib.tensors[0], a["calib"][0])


class _LibraryTransform:
    """A library's own preprocessing behind the transform protocol (what the adapters provide)."""

    def __init__(self, fn, key, input_size):
        self.fn, self.key, self.input_size, self.channels = fn, key, input_size, input_size[0]

    def __call__(self, images):
        return self.fn(images)


def _timm_transform():
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    cfg = {**resolve_data_config(model=model), "input_size": (3, 40, 40), "crop_pct": 0.875}
    t = create_transform(**cfg)
    return _LibraryTransform(lambda ims: torch.stack([t(im) for im in ims]), f"timm:{sorted(cfg.items())}", (3, 40, 40))


def _transformers_transform():
    from transformers import ConvNextImageProcessor

    proc = ConvNextImageProcessor(size={"shortest_edge": 48}, crop_pct=0.875)
    return _LibraryTransform(lambda ims: proc(ims, return_tensors="pt")["pixel_values"],
                             f"ConvNextImageProcessor:{proc.to_json_string()}", (3, 48, 48))


@pytest.mark.parametrize("make", [_timm_transform, _transformers_transform], ids=["timm", "transformers"])
def test_library_transforms_are_cached_bit_exactly(photo_dataset, make):
    path, photos = photo_dataset
    t = make()
    data = load_data(path, t, calib_samples=3)
    x, _ = tensors_of(data.eval)
    assert x.shape == (len(photos), *t.input_size) and torch.equal(x, t(photos).float())


def test_decoding_in_several_processes_gives_the_same_tensors(photo_dataset, tmp_path):
    path, photos = photo_dataset
    one = load_data(path, PRE, calib_samples=30, cache_dir=tmp_path / "a")
    two = load_data(path, PRE, calib_samples=30, cache_dir=tmp_path / "b", decode_workers=2)
    assert len(list((tmp_path / "b").glob("*_of_00002.arrow"))) == 4  # calibration and evaluation, 2 shards each
    assert torch.equal(one.calib.tensors[0], two.calib.tensors[0])
    assert torch.equal(one.calib.tensors[1], two.calib.tensors[1])
    assert torch.equal(tensors_of(one.eval)[0], tensors_of(two.eval)[0]) and len(two.eval) == len(photos)
    again = load_data(path, PRE, calib_samples=30, cache_dir=tmp_path / "b", decode_workers=3)  # shards reused
    assert torch.equal(again.calib.tensors[0], one.calib.tensors[0])
    assert not list((tmp_path / "b").glob("*_of_00003.arrow"))
