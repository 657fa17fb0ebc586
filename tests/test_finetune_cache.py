"""Fine-tuning samples come from the same memory-mapped decoded cache as evaluation/selection, and fine-tuning on
them gives the weights an in-RAM TensorDataset of the same tensors gives (same seed)."""

import dataclasses

import datasets
import pytest
import torch
from accelerate import Accelerator
from conftest import tiny_timm, tiny_transformers
from torch.utils.data import TensorDataset

from hf_mixmatch.data import load_data, preprocess_images
from hf_mixmatch.datacache import CachedSplit, tensors_of
from hf_mixmatch.finetune import Finetuner, finetune
from hf_mixmatch.layers import list_prunable, weights_of
from hf_mixmatch.models import Preprocess
from hf_mixmatch.pipeline import PruneConfig

PRE = Preprocess(size=(16, 16), resize=(18, 18), mean=(0.5, 0.45, 0.4), std=(0.25, 0.22, 0.26), channels=3,
                 interpolation="bicubic")


def _crops():
    """Crops of scikit-learn's two real photos at several sizes and aspect ratios."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = []
    for k, arr in enumerate(load_sample_images().images):
        for j, (h, w) in enumerate([(427, 640), (300, 120), (97, 211), (64, 64), (150, 401), (33, 300), (200, 41)]):
            top, left = (k * 41 + j * 13) % (427 - h + 1), (k * 59 + j * 31) % (640 - w + 1)
            out.append(Image.fromarray(arr[top:top + h, left:left + w]))
    return out


@pytest.fixture(scope="module")
def photos():
    return _crops()


@pytest.fixture
def photo_folder(tmp_path, photos):
    """Parquet train (photos x4, labels 0..3 class-sorted) and test splits of real photo crops."""
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))})
    path = tmp_path / "photos"
    path.mkdir()
    train = photos * 4
    labels = sorted(i % 4 for i in range(len(train)))
    datasets.Dataset.from_dict({"image": train, "label": labels}, features=feats).to_parquet(str(path / "train.parquet"))
    datasets.Dataset.from_dict({"image": photos, "label": [i % 4 for i in range(len(photos))]},
                               features=feats).to_parquet(str(path / "test.parquet"))
    return path, train, labels


def test_finetuning_samples_are_memory_mapped_from_the_decoded_cache(photo_folder, tmp_path):
    path, train, labels = photo_folder
    data = load_data(path, PRE, calib_samples=8, train_samples=40, seed=3, cache_dir=tmp_path / "cache")
    assert isinstance(data.train, CachedSplit) and not isinstance(data.train, TensorDataset)
    assert type(data.train) is type(data.eval)  # one code path for every split
    assert data.train.path is not None and data.train.path.is_file()
    assert data.train.path.parent == tmp_path / "cache"
    table = data.train._table.data  # the Arrow table behind the dataset: file-backed pages, not a copy in RAM
    assert isinstance(table, datasets.table.MemoryMappedTable), type(table)
    # exactly the transform's output of the drawn rows, with their labels
    rows = data.train.rows.tolist()
    assert len(rows) == 40 and len(set(rows)) == 40
    x, y = tensors_of(data.train)
    assert torch.equal(x, preprocess_images([train[r] for r in rows], PRE))
    assert y.tolist() == [labels[r] for r in rows]
    again = load_data(path, PRE, calib_samples=8, train_samples=40, seed=3, cache_dir=tmp_path / "cache")
    assert again.train.path == data.train.path  # a second run reads the same file, no decoding


def _models():
    return [("hf-vit", lambda: tiny_transformers("vit", num_labels=4, image_size=16)),
            ("hf-resnet", lambda: tiny_transformers("resnet", num_labels=4)),
            ("timm-resnet18", lambda: tiny_timm("resnet18", num_classes=4))]


def _forward(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("name,build", _models(), ids=[m[0] for m in _models()])
def test_finetuning_on_the_cache_equals_finetuning_in_ram(photo_folder, tmp_path, name, build):
    torch.set_num_threads(1)
    path, _, _ = photo_folder
    data = load_data(path, PRE, calib_samples=8, train_samples=48, seed=1, cache_dir=tmp_path / "cache")
    in_ram = dataclasses.replace(data, train=TensorDataset(*tensors_of(data.train)))
    cfg = PruneConfig(model="x", finetune_steps=5, finetune_samples=48, seed=1)
    weights = []
    for d in (data, in_ram):
        model = build()
        layers = list_prunable(model, num_labels=4)
        with torch.no_grad():  # half of every prunable weight zeroed, as a pruned variant
            for w in weights_of(model, layers).values():
                w.view(-1)[w.abs().reshape(-1).argsort()[: w.numel() // 2]] = 0
        acc = Accelerator(cpu=True)
        ft = Finetuner(cfg, model, layers, d, acc)
        res = finetune(model, layers, ft.train, ft.val, accelerator=acc, steps=5, lr=1e-3, batch_size=8,
                       patience=10, eval_every=1, seed=cfg.seed, forward=_forward, progress=False)
        assert res.steps == 5
        weights.append(({k: v.detach().clone() for k, v in model.state_dict().items()}, res.history))
    (cached, hist_c), (ram, hist_r) = weights
    assert repr(hist_c) == repr(hist_r)  # step 0's train_loss is NaN
    assert cached.keys() == ram.keys()
    for k in cached:
        assert torch.equal(cached[k], ram[k]), k
    start = build().state_dict()  # the run did train: weights moved
    assert any(not torch.equal(start[k], cached[k]) for k in cached if cached[k].is_floating_point())


@pytest.mark.slow
def test_two_processes_finetune_the_same_on_the_cache_as_in_ram(tmp_path, image_dataset):
    """accelerate's multi-process path (torchrun, gloo on CPU) shards the cached samples like in-RAM ones."""
    import os
    import subprocess
    import sys

    from conftest import save_tiny_transformers

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    worker = os.path.join(os.path.dirname(__file__), "_ft_cache_dist_worker.py")
    model_dir = save_tiny_transformers(tmp_path / "vit", "vit")
    # gloo on CPU, also on a GPU machine (2 processes on 1 GPU would share one device)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RANK", None)
    out = tmp_path / "two.pt"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", worker, str(model_dir),
                           str(image_dataset), str(tmp_path / "cache"), str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = torch.load(out)
    assert res["processes"] == 2
    assert repr(res["cached"]["history"]) == repr(res["in_ram"]["history"])  # step 0's train_loss is NaN
    assert len(res["cached"]["history"]) == 5
    for k, w in res["in_ram"]["weights"].items():
        assert torch.equal(res["cached"]["weights"][k], w), k


def test_memory_benchmark_measures_finetuning_samples_both_ways(tmp_path):
    """scripts/benchmark_memory.py --finetune-sizes: each size measured memory-mapped and in RAM, in fresh processes."""
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "benchmark_memory.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")}
    proc = subprocess.run([sys.executable, script, "--finetune-sizes", "30", "--finetune-steps", "1", "--workdir",
                           str(tmp_path), "--write", str(tmp_path / "page.md")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (tmp_path / "page.md").read_text()
    assert "| 30 | CachedSplit (memory-mapped) |" in page and "| 30 | TensorDataset in RAM (before) |" in page
    assert "--finetune-sizes 30 --finetune-steps 1" in page
