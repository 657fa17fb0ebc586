"""Hostile images: corrupt, truncated, empty, not an image, decompression bombs."""

import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_mixmatch.data import load_data
from hf_mixmatch.datacache import BadImageError, open_image
from hf_mixmatch.errors import DatasetError
from hf_mixmatch.models import Preprocess

PRE = Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels=3)


def _png(h=12, w=17, value=120) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _noise(fmt: str, h=40, w=30) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


BAD = {
    "garbage": b"this is not an image at all",
    "empty": b"",
    "truncated-png": _noise("PNG")[:1500],
    "truncated-jpeg": _noise("JPEG")[:300],
}


def _dataset(path, test_cells):
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    path.mkdir(parents=True, exist_ok=True)
    good = [{"bytes": _png(value=30 * i), "path": None} for i in range(8)]
    for split, cells in (("train", good), ("test", test_cells)):
        datasets.Dataset.from_dict({"image": cells, "label": [i % 2 for i in range(len(cells))]},
                                   features=feats).to_parquet(str(path / f"{split}.parquet"))
    return path


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_image_names_split_and_row(tmp_path, kind):
    cells = [{"bytes": _png(), "path": None}] * 3 + [{"bytes": BAD[kind], "path": None}] + [{"bytes": _png(),
                                                                                             "path": None}]
    path = _dataset(tmp_path / "d", cells)
    with pytest.raises(DatasetError, match=r"image at split 'test' row 3 cannot be decoded .*--skip-bad-images") as e:
        load_data(path, PRE, calib_samples=4)
    assert "\n" not in str(e.value)
    data = load_data(path, PRE, calib_samples=4, skip_bad_images=True)
    assert data.eval_samples == 4 and data.skipped_images == {"test": 1}
    assert list(data.eval.rows) == [0, 1, 2, 4]
    assert data.eval.get_batch(range(4))[1].tolist() == [0, 1, 0, 0]  # labels follow the kept rows


def test_skipped_images_are_remembered_by_the_cache(tmp_path):
    path = _dataset(tmp_path / "d", [{"bytes": b"x", "path": None}, {"bytes": _png(), "path": None}])
    a = load_data(path, PRE, calib_samples=2, skip_bad_images=True)
    b = load_data(path, PRE, calib_samples=2, skip_bad_images=True)  # from the cache
    assert a.skipped_images == b.skipped_images == {"test": 1} and b.eval_samples == 1
    with pytest.raises(DatasetError, match="row 0"):  # without the flag the cached skip is not reused
        load_data(path, PRE, calib_samples=2)


def test_all_bad_is_an_error_even_when_skipping(tmp_path):
    path = _dataset(tmp_path / "d", [{"bytes": b"x", "path": None}] * 2)
    with pytest.raises(DatasetError, match="no decodable evaluation images"):
        load_data(path, PRE, calib_samples=2, skip_bad_images=True)


@pytest.mark.parametrize("pixels, kind", [(10 * 12, "error"), (150, "warning")])
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, pixels, kind):
    # 12 x 17 = 204 pixels: over 2x the limit is PIL's error, between 1x and 2x its warning; both refused
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    with pytest.raises(BadImageError, match=r"split 'test' row 5 is refused as a decompression bomb"):
        open_image({"bytes": _png(), "path": None}, split="test", row=5)


def test_decompression_bomb_in_a_run(tmp_path, monkeypatch):
    path = _dataset(tmp_path / "d", [{"bytes": _png(4, 4), "path": None}, {"bytes": _png(64, 64), "path": None}])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 64 x 64 image is a "bomb" at this limit
    with pytest.raises(DatasetError, match="row 1 is refused as a decompression bomb"):
        load_data(path, PRE, calib_samples=2)
    data = load_data(path, PRE, calib_samples=2, skip_bad_images=True)
    assert data.skipped_images == {"test": 1}


def test_corrupt_file_in_an_imagefolder(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = tmp_path / "imgs" / split / c
            d.mkdir(parents=True)
            for i in range(3):
                (d / f"{i}.png").write_bytes(_png(value=40 * i))
    (tmp_path / "imgs" / "test" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError, match=r"split 'test' row 4 cannot be decoded"):
        load_data(tmp_path / "imgs", PRE, calib_samples=2)


def test_cli_bad_image_one_line_exit_2_and_skip(tmp_path, capsys):
    from conftest import save_tiny_transformers

    from hf_mixmatch.cli import main

    path = _dataset(tmp_path / "d", [{"bytes": _png(), "path": None}, {"bytes": b"junk", "path": None},
                                     {"bytes": _png(), "path": None}])
    model = save_tiny_transformers(tmp_path / "m", "resnet", num_labels=2)
    out = tmp_path / "run"
    args = ["prune", str(model), "--dataset", str(path), "--output-dir", str(out), "--quiet", "--calib-samples", "4",
            "--signals", "magnitude", "--strategies", "balanced", "--save", "none", "--select-split", "none"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hf-mixmatch: error: image at split 'test' row 1 cannot be decoded")
    assert "--skip-bad-images" in err and not (out / "results.json").exists()
    assert main(args + ["--skip-bad-images", "--overwrite"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["skipped_images"] == {"test": 1} and res["eval_samples"] == 2


def test_every_image_mode_becomes_the_models_channels(tmp_path):
    from hf_mixmatch.data import preprocess_images

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (11, 7, 3), dtype=np.uint8))
    images = [rgb, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"), rgb.convert("CMYK"), rgb.convert("1"),
              Image.fromarray(rng.integers(0, 65535, (9, 13), dtype=np.uint16))]
    cells = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="TIFF" if im.mode == "CMYK" else "PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    path = _dataset(tmp_path / "d", cells)
    for channels, pre in ((3, PRE), (1, Preprocess(size=(8, 8), mean=(0.5,), std=(0.5,), channels=1))):
        data = load_data(path, pre, calib_samples=2)
        x, _ = data.eval.get_batch(range(len(images)))
        expected = preprocess_images([im.convert("RGB" if channels == 3 else "L") for im in images], pre)
        assert x.shape == (len(images), channels, 8, 8) and torch.equal(x, expected)


def test_bad_image_found_by_a_decoding_process(tmp_path):
    cells = [{"bytes": _png(), "path": None}] * 5 + [{"bytes": b"junk", "path": None}]
    path = _dataset(tmp_path / "d", cells)
    with pytest.raises(DatasetError, match=r"image at split 'test' row 5 cannot be decoded"):
        load_data(path, PRE, calib_samples=4, decode_workers=2)
    data = load_data(path, PRE, calib_samples=4, decode_workers=2, skip_bad_images=True)
    assert data.skipped_images == {"test": 1} and list(data.eval.rows) == [0, 1, 2, 3, 4]
