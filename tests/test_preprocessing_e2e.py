"""End to end: model folders through ``load_model`` give the library's own preprocessing (its pipeline / timm
transform), the README's prune command runs on real non-square photos, and transforms travel to workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_preprocessing import ATOL, _timm_reference, photos


def test_end_to_end_transformers_folder_matches_the_pipeline(tmp_path):
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor, pipeline

    from hf_mixmatch.models import load_model, logits

    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                          num_labels=3))
    model.save_pretrained(tmp_path / "m")
    ConvNextImageProcessor(size={"shortest_edge": 96}, crop_pct=0.875).save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    images = photos()
    ours = loaded.preprocess(images)
    pipe = pipeline("image-classification", model=str(tmp_path / "m"))
    theirs = torch.cat([pipe.preprocess(im)["pixel_values"] for im in images])
    assert ours.shape == (5, 3, 96, 96) and torch.allclose(ours, theirs, atol=ATOL, rtol=0)
    with torch.no_grad():
        assert torch.allclose(logits(loaded.model, ours), pipe.model(pixel_values=theirs).logits, atol=1e-5)


def test_end_to_end_timm_folder_matches_timm(tmp_path):
    import timm
    from timm.models import save_for_hf

    from hf_mixmatch.models import load_model

    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False, num_classes=3, layers=(1, 1, 1, 1))
    save_for_hf(model, str(tmp_path / "t"), model_args={"layers": [1, 1, 1, 1]}, safe_serialization=True)
    loaded = load_model(tmp_path / "t")
    own = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    images = photos()
    ours, theirs = loaded.preprocess(images), _timm_reference(own, images)
    assert ours.shape == (5, 3, 224, 224) and torch.allclose(ours, theirs, atol=ATOL, rtol=0)
    assert loaded.preprocess.input_size == (3, 224, 224)


def _photo_dataset(path, num_classes=3, n=12):
    """A parquet dataset of non-square real photos (crops of scikit-learn's samples) of varied sizes."""
    import datasets

    base = photos()
    rng = np.random.default_rng(0)
    rows = {"image": [], "label": []}
    for i in range(n):
        im = base[i % len(base)].convert("RGB")
        w, h = im.size
        cw, ch = int(rng.integers(w // 3, w + 1)), int(rng.integers(h // 3, h + 1))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        rows["image"].append(im.crop((left, top, left + cw, top + ch)))
        rows["label"].append(i % num_classes)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{i}" for i in range(num_classes)])})
    path.mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(path / f"{split}.parquet"))
    return path


@pytest.mark.parametrize("library", ["transformers", "timm"])
def test_quickstart_on_a_model_folder_with_non_square_photos(tmp_path, library):
    """The README's prune command, unchanged, on a transformers and a timm folder fed real non-square photos;
    the saved variant loads with the library's own loader and keeps the base's preprocessing."""
    import json

    from hf_mixmatch.cli import main
    from hf_mixmatch.models import load_model

    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    if library == "transformers":
        from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

        ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                      num_labels=3)).save_pretrained(model_dir)
        ConvNextImageProcessor(size={"shortest_edge": 48}, crop_pct=0.875).save_pretrained(model_dir)
    else:
        import timm
        from timm.models import save_for_hf

        model = timm.create_model("resnet18", pretrained=False, num_classes=3, layers=(1, 1, 1, 1))
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 48, 48)}
        save_for_hf(model, str(model_dir), safe_serialization=True)
    data = _photo_dataset(tmp_path / "photos")
    out = tmp_path / "run"
    code = main(["prune", str(model_dir), "--dataset", str(data), "--output-dir", str(out), "--quiet",
                 "--signals", "magnitude", "--strategies", "conservative,aggressive", "--calib-samples", "6",
                 "--range-targets", "0.5", "--save", "all"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["library"] == library and results["eval_samples"] == 12
    variant = out / results["variants"][0]["path"]
    base, saved = load_model(model_dir), load_model(variant)
    photo = photos()
    assert saved.preprocess.key == base.preprocess.key
    assert torch.equal(saved.preprocess(photo), base.preprocess(photo))


def test_transforms_pickle_for_worker_processes(tmp_path):
    # DataLoader workers and datasets.map(num_proc=...) send the transform to other processes
    import pickle

    from conftest import save_tiny_timm

    from hf_mixmatch.models import Preprocess, load_model

    transforms = [load_model("default").preprocess, load_model(save_tiny_timm(tmp_path / "t")).preprocess,
                  Preprocess(size=(10, 14), mean=(0.5,) * 3, std=(0.5,) * 3)]
    images = photos()
    for t in transforms:
        back = pickle.loads(pickle.dumps(t))
        assert back.key == t.key and torch.equal(back(images), t(images))
