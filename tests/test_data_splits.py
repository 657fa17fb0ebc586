"""Seeded, class-mixed draws on a class-sorted imagefolder, and the selection split."""

import numpy as np
import pytest
import torch
from conftest import make_image_dataset

from hf_mixmatch.data import load_data
from hf_mixmatch.datacache import tensors_of
from hf_mixmatch.datasplits import draw_rows
from hf_mixmatch.errors import DatasetError
from hf_mixmatch.models import Preprocess

PRE = Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels=3)
CLASSES = ("ant", "bee", "cow", "dog", "eel")


@pytest.fixture
def sorted_folder(tmp_path):
    """An imagefolder: train/<class>/*.png and test/<class>/*.png, so rows come class by class."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, n in (("train", 24), ("test", 6)):
        for c, name in enumerate(CLASSES):
            d = tmp_path / "imgs" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(5, 20, size=2)
                Image.fromarray(np.full((h, w, 3), 50 * c, dtype=np.uint8)).save(d / f"{i:03d}.png")
    return tmp_path / "imgs"


def test_the_folder_is_class_sorted(sorted_folder):
    import datasets

    labels = datasets.load_dataset(str(sorted_folder))["train"]["label"]
    assert list(labels) == sorted(labels)


def test_calibration_batches_mix_classes(sorted_folder):
    data = load_data(sorted_folder, PRE, calib_samples=64, seed=0)
    y = data.calib.tensors[1]
    batches = y.split(8)  # compute_scores' contiguous calibration batches
    assert all(len(set(b.tolist())) >= 3 for b in batches), [b.tolist() for b in batches]
    assert y.tolist() != sorted(y.tolist())
    again = load_data(sorted_folder, PRE, calib_samples=64, seed=0)
    assert torch.equal(again.calib.tensors[0], data.calib.tensors[0])  # seeded
    other = load_data(sorted_folder, PRE, calib_samples=64, seed=1)
    assert not torch.equal(other.calib.tensors[1], y)


def test_finetuning_samples_and_validation_slice_mix_classes(sorted_folder):
    from accelerate import Accelerator

    from hf_mixmatch.finetune import Finetuner
    from hf_mixmatch.pipeline import PruneConfig

    data = load_data(sorted_folder, PRE, calib_samples=8, train_samples=60, seed=0)
    y = tensors_of(data.train)[1]
    assert all(len(set(b.tolist())) >= 3 for b in y.split(10))
    cfg = PruneConfig(model="x", finetune_steps=1, finetune_samples=60, seed=0)
    ft = Finetuner(cfg, torch.nn.Linear(2, 2), [], data, Accelerator(cpu=True))
    val = torch.stack([ft.val[i][1] for i in range(len(ft.val))])
    train = torch.stack([ft.train[i][1] for i in range(len(ft.train))])
    assert len(val) == 6 and len(set(val.tolist())) >= 3
    assert sorted(val.tolist() + train.tolist()) == sorted(y.tolist())


def test_held_out_selection_is_disjoint_from_calibration_and_finetuning(sorted_folder):
    import datasets

    ds = datasets.load_dataset(str(sorted_folder))
    rows = draw_rows(ds, "train", "test", "train", True, seed=0, calib_samples=40, eval_samples=None,
                     train_samples=200, select_samples=None)
    assert len(rows.select) == 24 and list(rows.select) == sorted(rows.select)  # a fifth of 120
    assert not set(rows.select) & set(rows.calib) and not set(rows.select) & set(rows.train)
    no_select = draw_rows(ds, "train", "test", None, False, seed=0, calib_samples=40, eval_samples=None,
                          train_samples=None, select_samples=None)
    assert np.array_equal(no_select.calib, rows.calib)  # calibration rows do not depend on the selection
    data = load_data(sorted_folder, PRE, calib_samples=40, select_samples=None, seed=0)
    assert data.select_split == "train" and data.select_heldout and data.select_samples == 24
    assert np.array_equal(data.select.rows, rows.select)
    assert data.eval_split == "test" and data.eval_samples == 30
    x, y = data.select.get_batch(range(len(data.select)))
    assert x.shape == (24, 3, 8, 8) and len(set(y.tolist())) >= 3


def test_validation_split_is_the_default_when_there_is_also_test(tmp_path):
    import datasets

    base = make_image_dataset(tmp_path / "d", n_train=16, n_test=8)
    dd = datasets.load_dataset(str(base))
    dd["validation"] = dd["test"].select(range(6))
    dd.save_to_disk(str(tmp_path / "dd"))
    data = load_data(tmp_path / "dd", PRE, calib_samples=4, select_samples=None)
    assert data.select_split == "validation" and not data.select_heldout and data.select_samples == 6
    data = load_data(tmp_path / "dd", PRE, calib_samples=4, select_samples=3, select_split="train")
    assert data.select_split == "train" and data.select_heldout and data.select_samples == 3


def test_select_split_options(image_dataset):
    data = load_data(image_dataset, PRE, calib_samples=4, select_split="none", select_samples=None)
    assert data.select is None and data.select_split is None and data.select_samples == 0
    assert load_data(image_dataset, PRE, calib_samples=4).select is None  # the library default: none
    with pytest.warns(UserWarning, match="selection bias"):
        data = load_data(image_dataset, PRE, calib_samples=4, select_split="test", select_samples=None)
    assert data.select is None
    with pytest.raises(DatasetError, match="--select-split 'nope' not in the dataset"):
        load_data(image_dataset, PRE, calib_samples=4, select_split="nope", select_samples=None)
    with pytest.raises(DatasetError, match=">= 0"):
        load_data(image_dataset, PRE, calib_samples=4, select_samples=-2)


def test_cli_select_split_and_records_in_results(tmp_path, image_dataset, capsys):
    import json

    from conftest import save_tiny_transformers

    from hf_mixmatch.cli import main

    model = save_tiny_transformers(tmp_path / "m", "vit")
    out = tmp_path / "run"
    args = ["prune", str(model), "--dataset", str(image_dataset), "--output-dir", str(out), "--quiet",
            "--calib-samples", "8", "--signals", "magnitude", "--strategies", "balanced", "--save", "none"]
    capsys.readouterr()
    assert main(args + ["--select-split", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-mixmatch: error: --select-split 'nope'") and "\n" not in err
    assert not (out / "results.json").exists()
    assert main(args + ["--select-samples", "0"]) == 2
    assert "--select-samples must be > 0" in capsys.readouterr().err
    assert main(args + ["--decode-workers", "0"]) == 2
    assert "--decode-workers must be >= 1" in capsys.readouterr().err
    assert main(args + ["--select-samples", "5", "--overwrite", "--decode-workers", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (res["select_split"], res["select_samples"], res["select_heldout"]) == ("train", 5, True)
    assert res["skipped_images"] == {} and res["labels"]["how"] == "by_index"
