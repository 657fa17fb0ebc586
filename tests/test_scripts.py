"""The embedded default (digits parquet + small ResNet), the Fashion-MNIST idx reader and the reference
model trainer (on synthetic idx files, so no download and a few seconds per architecture)."""

from __future__ import annotations

import gzip
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import load_script

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "hf_mixmatch" / "_default"


fm = load_script("fashion_mnist")
tr = load_script("train_reference")


# ---------------------------------------------------------------- embedded default

@pytest.fixture(scope="module")
def digits():
    import datasets

    files = {s: str(DEFAULT / "digits" / f"{s}.parquet") for s in ("train", "test")}
    return datasets.load_dataset("parquet", data_files=files)


def test_default_dataset_is_a_split_of_sklearn_digits(digits):
    import datasets
    from sklearn.datasets import load_digits

    assert set(digits) == {"train", "test"}
    for split in ("train", "test"):
        ds = digits[split]
        assert isinstance(ds.features["image"], datasets.Image)
        assert ds.features["label"].names == [str(i) for i in range(10)]
        assert sorted(set(ds["label"])) == list(range(10))
    assert len(digits["train"]) > 3 * len(digits["test"]) > 1000
    # Each 8x8 digit exactly once over both splits: the multiset of (pixels, label) equals sklearn's,
    # so no sample is in both splits and none is missing.
    seen = Counter()
    for split in ("train", "test"):
        for row in digits[split]:
            img = row["image"]
            assert img.mode == "L" and img.size == (32, 32)
            seen[np.asarray(img)[::4, ::4].tobytes(), row["label"]] += 1
    ref = load_digits()
    pixels = (ref.images / 16.0 * 255.0).round().astype(np.uint8)
    assert seen == Counter((a.tobytes(), int(y)) for a, y in zip(pixels, ref.target))
    # stratified: every class has ~20% of its images in test
    test_counts, all_counts = Counter(digits["test"]["label"]), Counter(ref.target.tolist())
    assert all(abs(test_counts[c] / all_counts[c] - 0.2) < 0.01 for c in range(10))


def test_default_model_loads_offline_and_is_accurate(digits):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = DEFAULT / "model"
    assert (folder / "model.safetensors").stat().st_size < 3_000_000
    model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    assert model.config.num_channels == 3 and model.config.num_labels == 10
    assert [model.config.id2label[i] for i in range(10)] == digits["test"].features["label"].names
    assert len(processor.image_mean) == len(processor.image_std) == 3
    # most prunable layers above the 10K-parameter line the rules treat specially
    big = [p.numel() >= 10_000 for n, p in model.named_parameters() if p.dim() == 4 and "shortcut" not in n]
    assert sum(big) >= len(big) - 1
    test = digits["test"]
    x = processor(images=list(test["image"]), return_tensors="pt")["pixel_values"]  # grayscale in, RGB out
    assert x.shape == (len(test), 3, 32, 32)
    with torch.no_grad():
        acc = (model(pixel_values=x).logits.argmax(-1) == torch.tensor(test["label"])).float().mean().item()
    assert acc >= 0.9
    logged = json.loads((folder / "train_log.json").read_text())["test_accuracy"]
    assert acc == pytest.approx(logged, abs=1e-6)  # the processor reproduces the training preprocessing


# ---------------------------------------------------------------- Fashion-MNIST idx files

def write_idx(path: Path, array: np.ndarray) -> None:
    """idx format: 0x0000, dtype code (0x08 = uint8), ndim, big-endian uint32 dims, then the data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_fashion_root(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> tuple[Path, dict]:
    """Synthetic Fashion-MNIST: class k is a bright horizontal band at rows 2k..2k+5, plus noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 * y : 2 * y + 6] = 230
        img_name, lbl_name = fm.SPLIT_FILES[split]
        write_idx(root / img_name, images)
        write_idx(root / lbl_name, labels)
        arrays[split] = (images, labels)
    return root, arrays


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    return make_fashion_root(tmp_path_factory.mktemp("fmnist"))


def test_read_idx_round_trip_and_bad_files(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", arr)
    write_idx(tmp_path / "a.idx.gz", arr)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "a.idx"), arr)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "a.idx.gz"), arr)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        fm.read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        fm.read_idx(tmp_path / "short.idx")


def test_load_fashion_mnist_parses_synthetic_files(fashion_root):
    import datasets

    root, arrays = fashion_root
    dd = fm.load_fashion_mnist(root)
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "test"}
    for split, (images, labels) in arrays.items():
        ds = dd[split]
        assert ds.features["label"].names == fm.CLASS_NAMES and len(fm.CLASS_NAMES) == 10
        assert isinstance(ds.features["image"], datasets.Image)
        assert ds["label"] == labels.tolist()
        for i in (0, 7, len(ds) - 1):
            img = ds[i]["image"]
            assert img.mode == "L" and img.size == (28, 28)
            np.testing.assert_array_equal(np.asarray(img), images[i])
    small = fm.load_fashion_mnist(root, train_samples=5, test_samples=3)
    assert (len(small["train"]), len(small["test"])) == (5, 3)
    np.testing.assert_array_equal(np.asarray(small["train"][4]["image"]), arrays["train"][0][4])


def test_load_fashion_mnist_missing_files_says_how_to_install(tmp_path):
    with pytest.raises(fm.FashionMnistNotFound, match="apt-get install dataset-fashion-mnist") as info:
        fm.load_fashion_mnist(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError) and "train-images-idx3-ubyte.gz" in str(info.value)
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        fm.main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])


def test_fashion_mnist_cli_writes_parquet(fashion_root, tmp_path):
    import datasets

    root, arrays = fashion_root
    out = tmp_path / "fm"
    fm.main(["--root", str(root), "--out", str(out), "--train-samples", "12", "--test-samples", "4"])
    dd = datasets.load_dataset(str(out))
    assert (len(dd["train"]), len(dd["test"])) == (12, 4)
    assert dd["test"].features["label"].names == fm.CLASS_NAMES
    assert dd["test"]["label"] == arrays["test"][1][:4].tolist()


# ---------------------------------------------------------------- reference models

def _load_reference(arch: str, folder: Path):
    """The saved model through the plain library loaders, and its preprocessing applied to PIL images."""
    from PIL import Image

    if arch.startswith("resnet"):
        import timm

        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        cfg = timm.data.resolve_data_config({}, model=model)
        assert cfg["input_size"] == (3, 32, 32)
        transform = timm.data.create_transform(**cfg)
        return model, lambda arrays: torch.stack([transform(Image.fromarray(a, mode="L").convert("RGB"))
                                                 for a in arrays])
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    assert model.config.id2label[9] == "Ankle boot"
    return model, lambda arrays: processor(images=[Image.fromarray(a, mode="L") for a in arrays],
                                           return_tensors="pt")["pixel_values"]


@pytest.mark.parametrize("arch", ["resnet", "resnet_narrow", "vit", "swin"])
def test_train_reference_saves_a_loadable_model(arch, fashion_root, tmp_path):
    root, arrays = fashion_root
    out = tmp_path / arch
    log = tr.main(["--arch", arch, "--root", str(root), "--out", str(out), "--train-samples", "64",
                   "--epochs", "1", "--threads", "2"])
    assert json.loads((out / "train_log.json").read_text()) == log
    assert log["train_samples"] == 64 and log["test_samples"] == 32 and 0 <= log["test_accuracy"] <= 1
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    model, saved_preprocess = _load_reference(arch, out)
    images, labels = arrays["test"]
    # the saved preprocessing config reproduces what the model was trained on
    x_saved, x_train = saved_preprocess(images), tr.preprocess(images)
    assert x_saved.shape == x_train.shape == (len(images), 3, 32, 32)
    assert (x_saved - x_train).abs().max().item() < 1.01 / 255 / tr.STD
    # and the reloaded weights give the logged accuracy
    assert tr.accuracy(model, x_train, torch.from_numpy(labels.astype(np.int64))) == pytest.approx(log["test_accuracy"])


def test_train_reference_is_deterministic_and_restores_torch_state(fashion_root, tmp_path):
    from safetensors.torch import load_file

    root, _ = fashion_root
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(), torch.random.get_rng_state())
    for name in ("a", "b"):
        tr.train_reference("resnet", tmp_path / name, root=root, epochs=1, train_samples=32, seed=3, threads=1,
                           verbose=False)
    after = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(), torch.random.get_rng_state())
    assert before[:2] == after[:2] and torch.equal(before[2], after[2])
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_reference_rejects_bad_input(tmp_path):
    with pytest.raises(SystemExit):
        tr.main(["--arch", "alexnet", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        tr.main(["--arch", "vit", "--epochs", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        tr.main(["--arch", "vit", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")])


# ---------------------------------------------------------------- docs/BENCHMARKS.md assembly

def test_assemble_benchmarks_replaces_included_pages_only(tmp_path):
    ab = load_script("assemble_benchmarks")
    (tmp_path / "PAGE.md").write_text("# Title\n\ntext\n\n## sub\n\n```\n# not a heading\n```\n")
    overview = ("# Benchmarks\n\n## 1. Own\n\nkept\n\n## 2. Included\n\n"
                "*Written by `scripts/x.py` into `docs/PAGE.md`; included here verbatim.*\n\nstale copy\n### stale\n\n"
                "## 3. After\n\nkept too\n")
    new = ab.assemble(overview, docs=tmp_path)
    assert "stale" not in new and "kept\n" in new and "kept too" in new
    assert "### Title\n\ntext\n\n#### sub" in new and "```\n# not a heading\n```" in new  # code blocks untouched
    assert new.index("### Title") < new.index("## 3. After")
    assert ab.assemble(new, docs=tmp_path) == new  # idempotent
    with pytest.raises(SystemExit, match="does not exist"):
        ab.assemble(overview.replace("PAGE.md", "MISSING.md"), docs=tmp_path)


# ---------------------------------------------------------------- scripts/benchmark_layout.py

def test_layout_benchmark_times_both_layouts_on_the_models_own_input():
    """The embedded model is timed at the shape its own preprocessing produces, and a timm name at ``--size``;
    both layouts give the same predictions (the benchmark compares like with like)."""
    bl = load_script("benchmark_layout")
    model, shape, _ = bl._model_and_input("default", 0)
    from hf_mixmatch.models import load_model
    from PIL import Image

    assert shape == tuple(load_model("default").preprocess([Image.new("RGB", (50, 70))]).shape[1:])
    from hf_mixmatch.models import logits

    x = torch.randn(3, *shape)
    with torch.inference_mode():
        nhwc = x.contiguous(memory_format=torch.channels_last)
        assert torch.allclose(logits(model, x), logits(model, nhwc), atol=1e-4)
    row = bl.measure("resnet18", size=32, images=4, batch=2, repeats=1, weights=True)
    assert row["input"] == [3, 32, 32] and row["convs"] == 20 and row["images"] == 4
    assert row["nchw_img_per_s"] > 0 and row["speedup_nhwc_inputs"] > 0 and "speedup_nhwc_weights" in row
