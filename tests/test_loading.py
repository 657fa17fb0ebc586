"""from_pretrained / verify on local variant folders (tiny transformers and timm models, dense and compact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_timm, tiny_transformers
from hf_mixmatch.errors import ModelLoadError, SparsityMismatchError, UnsafeWeightsError
from hf_mixmatch.layers import get_weight, list_prunable
from hf_mixmatch.loading import from_pretrained
from hf_mixmatch.masks import measure_sparsity
from hf_mixmatch.storage import COMPACT_FILE, compact_variant
from hf_mixmatch.verification import add_cli, verify


def _prune_smallest(model, frac=0.6):
    """Zero the smallest-|w| fraction of every prunable weight; returns the measured overall sparsity."""
    layers = list_prunable(model)
    with torch.no_grad():
        for layer in layers:
            w = get_weight(model, layer)
            k = int(frac * w.numel())
            idx = w.abs().reshape(-1).argsort()[:k]
            w.view(-1)[idx] = 0.0
    overall, per_layer = measure_sparsity(model, layers)
    return overall, per_layer, {layer.name: layer.role for layer in layers}


def _variant_folder(path: Path, model, library: str, *, accuracy=0.5, top5=None, dataset="local-data") -> Path:
    from timm.models import save_for_hf

    from hf_mixmatch.card import write_variant_card

    sparsity, per_layer, roles = _prune_smallest(model)
    if library == "transformers":
        from transformers import ViTImageProcessor

        model.save_pretrained(path)
        ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    else:
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 16, 16), "mean": (0.5,) * 3,
                                "std": (0.5,) * 3, "crop_pct": 1.0, "num_classes": 4}
        save_for_hf(model, str(path), model_config={"num_classes": 4}, model_args={"layers": (1, 1, 1, 1)},
                    safe_serialization=True)
        assert not list(path.glob("*.bin"))
    recipe = {"hf_mixmatch_version": "0.0-test", "base_model": "org/base", "base_revision": "abc", "library": library,
              "method": "mixmatch", "signal": "magnitude", "strategy": "aggressive", "sparsity": sparsity, "layers": per_layer,
              "roles": roles, "ranges": {}, "range_source": "observed", "dataset": dataset, "calib_split": "train",
              "eval_split": "test", "calib_samples": 8, "eval_samples": None, "seed": 0, "accuracy": accuracy,
              "top5": top5, "dense_accuracy": 0.6, "dense_top5": None, "storage": "dense"}
    (path / "mixmatch.json").write_text(json.dumps(recipe))
    results = {"base_model": "org/base", "base_revision": "abc", "library": library, "dataset": dataset,
               "eval_split": "test", "dense": {"accuracy": 0.6, "top5": None}, "pareto": ["magnitude-aggressive"]}
    variant = {"id": "magnitude-aggressive", "method": "mixmatch", "signal": "magnitude", "strategy": "aggressive",
               "sparsity": sparsity, "accuracy": accuracy, "top5": top5, "layers": per_layer}
    write_variant_card(path, results, variant, recipe)
    return path


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k].reshape(-1).view(torch.uint8), sb[k].reshape(-1).view(torch.uint8)) for k in sa)


@pytest.fixture
def vit_variant(tmp_path):
    model = tiny_transformers("vit")
    _variant_folder(tmp_path / "vit", model, "transformers")
    return tmp_path / "vit", model


@pytest.fixture
def timm_variant(tmp_path):
    model = tiny_timm("resnet18")
    _variant_folder(tmp_path / "timm", model, "timm")
    return tmp_path / "timm", model


@pytest.mark.parametrize("compact", [False, True])
def test_transformers_variant_bit_identical(vit_variant, compact):
    path, original = vit_variant
    if compact:
        compact_variant(path)
        assert (path / COMPACT_FILE).is_file() and not (path / "model.safetensors").exists()
    model = from_pretrained(path)
    assert type(model).__name__ == "ViTForImageClassification"
    assert _same_weights(model, original)
    assert model.mixmatch_recipe["strategy"] == "aggressive"
    assert model.mixmatch_recipe["storage"] == ("compact" if compact else "dense")
    assert model.mixmatch_claims["sparsity"] == pytest.approx(original_sparsity(original))
    assert model.mixmatch_claims["accuracy"] == 0.5 and model.mixmatch_library == "transformers"


def original_sparsity(model) -> float:
    return measure_sparsity(model, list_prunable(model))[0]


@pytest.mark.parametrize("compact", [False, True])
def test_timm_variant_bit_identical(timm_variant, compact):
    path, original = timm_variant
    if compact:
        compact_variant(path)
    model = from_pretrained(path)
    assert type(model).__name__ == "ResNet" and model.mixmatch_library == "timm"
    assert _same_weights(model, original)
    assert model.mixmatch_recipe["signal"] == "magnitude"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), original.eval()(x))


def test_pickle_only_folder_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        from_pretrained(folder)


def test_no_weights_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        from_pretrained(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="is a file"):
        (tmp_path / "f").write_text("x")
        from_pretrained(tmp_path / "f")


def test_tampered_card_detected(vit_variant):
    path, _ = vit_variant
    readme = path / "README.md"
    text = readme.read_text()
    claimed = json.loads((path / "mixmatch.json").read_text())["sparsity"]
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)
    card.data.hf_mixmatch["sparsity"] = round(claimed + 0.05, 6)
    card.save(str(readme))
    assert readme.read_text() != text
    with pytest.raises(SparsityMismatchError, match="card claims"):
        from_pretrained(path)
    assert from_pretrained(path, check_sparsity=False).mixmatch_claims["sparsity"] == pytest.approx(claimed + 0.05)


def test_tampered_recipe_detected(timm_variant):
    path, _ = timm_variant
    (path / "README.md").unlink()
    recipe = json.loads((path / "mixmatch.json").read_text())
    recipe["sparsity"] -= 0.01
    (path / "mixmatch.json").write_text(json.dumps(recipe))
    with pytest.raises(SparsityMismatchError, match="mixmatch.json claims"):
        from_pretrained(path)


def test_tampered_weights_detected(vit_variant):
    from safetensors.torch import load_file, save_file

    path, _ = vit_variant
    state = load_file(str(path / "model.safetensors"))
    key = "vit.encoder.layer.0.intermediate.dense.weight"
    state[key] = torch.where(state[key] == 0, torch.full_like(state[key], 0.01), state[key])
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(SparsityMismatchError):
        from_pretrained(path)


def _measured_accuracy(path, dataset) -> tuple[float, float | None]:
    """Accuracy measured the way the pipeline measures it (core API), to write an honest claim."""
    from hf_mixmatch.data import load_data
    from hf_mixmatch.evaluate import evaluate
    from hf_mixmatch.models import load_model

    loaded = load_model(str(path))
    data = load_data(str(dataset), loaded.preprocess, calib_split="train", eval_split="test", calib_samples=1, seed=0)
    m = evaluate(loaded.model, data.eval)
    return m["accuracy"], m["top5"]


def _set_claim(path: Path, accuracy: float) -> None:
    from huggingface_hub import ModelCard

    from hf_mixmatch.card import write_variant_card

    recipe = json.loads((path / "mixmatch.json").read_text())
    recipe["accuracy"] = accuracy
    (path / "mixmatch.json").write_text(json.dumps(recipe))
    card = ModelCard.load(path / "README.md")
    block = card.data.hf_mixmatch
    results = {"base_model": "org/base", "base_revision": "abc", "library": recipe["library"], "dataset": "local-data",
               "eval_split": "test", "dense": {"accuracy": 0.6, "top5": None}, "pareto": []}
    variant = {"id": "magnitude-aggressive", "method": "mixmatch", "signal": block["signal"], "strategy": block["strategy"],
               "sparsity": block["sparsity"], "accuracy": accuracy, "top5": None, "layers": recipe["layers"]}
    write_variant_card(path, results, variant, recipe)


def test_verify_ok_then_mismatch_and_cli(vit_variant, image_dataset, capsys):
    import argparse

    path, _ = vit_variant
    acc, _ = _measured_accuracy(path, image_dataset)
    _set_claim(path, acc)
    report = verify(path, str(image_dataset), batch_size=16)
    assert report.ok and report.measured_accuracy == acc and report.claimed_accuracy == acc
    assert report.eval_split == "test" and report.eval_samples == 32
    assert report.measured_sparsity == pytest.approx(report.claimed_sparsity, abs=1e-9)

    _set_claim(path, acc + 0.1 if acc < 0.9 else acc - 0.1)
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["verify", str(path), "--dataset", str(image_dataset), "--json", "--tolerance", "0.05"])
    assert args.func(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["measured_accuracy"] == acc
    args = parser.parse_args(["verify", str(path), "--dataset", str(image_dataset), "--tolerance", "0.2"])
    assert args.func(args) == 0
    assert "OK" in capsys.readouterr().out


def test_verify_compact_timm(timm_variant, image_dataset):
    path, _ = timm_variant
    compact_variant(path)
    report = verify(path, str(image_dataset), eval_samples=8, tolerance=1.0)
    assert report.ok and report.eval_samples == 8 and 0.0 <= report.measured_accuracy <= 1.0


def test_hub_round_trip_compact_and_pickle_repo_refused(hub_server, tmp_path):
    from huggingface_hub import HfApi

    model = tiny_transformers("vit")
    folder = _variant_folder(tmp_path / "v", model, "transformers")
    compact_variant(folder)
    torch.save({"w": torch.zeros(1)}, folder / "stray.pt")  # a pickle next to safetensors: never downloaded
    api = HfApi(endpoint=hub_server.endpoint)
    api.create_repo("tester/vit-sparse")
    api.upload_folder(repo_id="tester/vit-sparse", folder_path=str(folder))
    loaded = from_pretrained("tester/vit-sparse")
    assert _same_weights(loaded, model)
    assert loaded.mixmatch_recipe["storage"] == "compact"
    assert not list(Path(loaded.mixmatch_dir).glob("*.pt"))

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    api.create_repo("tester/pickled")
    api.upload_folder(repo_id="tester/pickled", folder_path=str(pickled))
    with pytest.raises(UnsafeWeightsError, match="pytorch_model.bin"):
        from_pretrained("tester/pickled")
