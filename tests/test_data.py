import datasets
import numpy as np
import pytest
import torch
from conftest import make_image_dataset

from hf_mixmatch.data import load_data, load_image_dataset, preprocess_images
from hf_mixmatch.errors import DatasetError
from hf_mixmatch.models import Preprocess

PRE = Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels=3)


def test_detects_columns_and_splits(image_dataset):
    data = load_data(image_dataset, PRE, calib_samples=16, eval_samples=8, num_labels=4)
    assert data.calib_split == "train" and data.eval_split == "test"
    assert data.calib.tensors[0].shape == (16, 3, 8, 8) and data.eval.get_batch(range(8))[0].shape == (8, 3, 8, 8)
    assert data.num_classes == 4 and data.image_column == "image" and data.label_column == "label"


def test_subsampling_is_seeded(image_dataset):
    a = load_data(image_dataset, PRE, calib_samples=10, seed=3)
    b = load_data(image_dataset, PRE, calib_samples=10, seed=3)
    c = load_data(image_dataset, PRE, calib_samples=10, seed=4)
    assert torch.equal(a.calib.tensors[0], b.calib.tensors[0])
    assert not torch.equal(a.calib.tensors[0], c.calib.tensors[0])


def test_overridden_column_names(tmp_path):
    path = make_image_dataset(tmp_path / "d", image_column="pic", label_column="y")
    ds, img, lab = load_image_dataset(path)  # found by feature type
    assert (img, lab) == ("pic", "y")
    ds, img, lab = load_image_dataset(path, image_column="pic", label_column="y")
    assert (img, lab) == ("pic", "y")


def test_grayscale_into_three_channels_and_back():
    from PIL import Image

    gray = Image.fromarray(np.full((4, 4), 255, dtype=np.uint8), mode="L")
    rgb = Image.fromarray(np.full((4, 4, 3), 255, dtype=np.uint8), mode="RGB")
    x3 = preprocess_images([gray], PRE)
    assert x3.shape == (1, 3, 8, 8) and torch.allclose(x3, torch.ones_like(x3))
    x1 = preprocess_images([rgb], Preprocess(size=(4, 4), mean=(0.0,), std=(1.0,), channels=1))
    assert x1.shape == (1, 1, 4, 4) and torch.allclose(x1, torch.ones_like(x1))


def test_center_crop_path():
    from PIL import Image

    arr = np.zeros((10, 10, 3), dtype=np.uint8)
    arr[3:7, 3:7] = 255
    x = preprocess_images([Image.fromarray(arr)], Preprocess(size=(4, 4), mean=(0, 0, 0), std=(1, 1, 1), resize=(10, 10)))
    assert torch.allclose(x, torch.ones_like(x))


def test_calibrating_on_eval_split_warns(image_dataset):
    with pytest.warns(UserWarning, match="leakage"):
        load_data(image_dataset, PRE, calib_split="test", eval_split="test", calib_samples=4)


@pytest.mark.parametrize("kwargs, match", [
    ({"calib_samples": 0}, "must be > 0"),
    ({"eval_samples": -1}, "must be > 0"),
    ({"num_labels": 7}, "4 classes but the model predicts 7"),
    ({"eval_split": "nope"}, "not in the dataset"),
])
def test_bad_options(image_dataset, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        load_data(image_dataset, PRE, **kwargs)


def test_missing_columns_and_dataset(tmp_path):
    path = tmp_path / "noimg"
    path.mkdir()
    datasets.Dataset.from_dict({"x": [1, 2], "label": [0, 1]}).to_parquet(str(path / "train.parquet"))
    with pytest.raises(DatasetError, match="--image-column"):
        load_image_dataset(path)
    with pytest.raises(DatasetError, match="cannot open dataset|not found"):
        load_image_dataset(tmp_path / "does-not-exist")


def test_empty_split(tmp_path):
    from PIL import Image

    path = tmp_path / "empty"
    path.mkdir()
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    img = Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8))
    datasets.Dataset.from_dict({"image": [img, img], "label": [0, 1]}, features=feats).save_to_disk(str(path / "tr"))
    dd = datasets.DatasetDict({
        "train": datasets.load_from_disk(str(path / "tr")),
        "test": datasets.Dataset.from_dict({"image": [], "label": []}, features=feats),
    })
    dd.save_to_disk(str(path / "dd"))
    with pytest.raises(DatasetError, match="empty"):
        load_data(path / "dd", PRE, calib_samples=2)


def test_imagefolder_dataset(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            d = tmp_path / "imgs" / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (6, 6), (200 if c == "dog" else 10, 0, 0)).save(d / f"{i}.png")
    data = load_data(tmp_path / "imgs", PRE, calib_samples=4, num_labels=2)
    assert (data.image_column, data.label_column) == ("image", "label")
    x, y = data.eval.get_batch(range(len(data.eval)))
    assert x.shape == (6, 3, 8, 8) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
