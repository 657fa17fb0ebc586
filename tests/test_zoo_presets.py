"""Presets across the zoo: each family's preset claims its own architectures only; the others say so and
get observed ranges instead of borrowing another family's rules."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from zoo_data import prepared
from zoo_models import NUM_LABELS, ZOO, build

from hf_mixmatch.errors import RangeError
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.ranges import detect_family, preset_ranges, resolve_ranges

# case id -> the preset family it belongs to (None: no preset for it)
FAMILIES = {
    "resnet": "resnet", "resnet18": "resnet", "test_resnet": "resnet", "timm_wrapper": "resnet",
    "vit": "vit", "deit": "vit", "beit": "vit", "dinov2": "vit", "vit_tiny_patch16_224": "vit", "test_vit": "vit",
    "deit_tiny_distilled_patch16_224": "vit", "eva02_tiny_patch14_224": "vit",
    "swin": "swin", "swinv2": "swin", "swin_tiny_patch4_window7_224": "swin", "swinv2_tiny_window8_256": "swin",
    "convnext": "convnext", "convnextv2": "convnext", "convnext_atto": "convnext", "test_convnext": "convnext",
    "vgg11": None, "mobilenetv1": None, "mobilenetv2": None, "mobilenetv3_small_050": None, "efficientnet_b0": None,
    "regnet": None, "levit_128s": None, "mobilevit_xxs": None, "coatnet_nano_rw_224": None, "mixer": None,
    "densenet121": None, "bit": None, "regnetx_002": None, "edgenext_xx_small": None, "inception_next_atto": None,
    "swinv2_cr_tiny_ns_224": None, "tiny_vit_5m_224": None, "fastvit_t8": None,
}
BY_ID = {c.id: c for c in ZOO}


@pytest.mark.parametrize("case_id, family", FAMILIES.items(), ids=list(FAMILIES))
def test_detect_family(case_id, family):
    layers = list_prunable(build(BY_ID[case_id]), num_labels=NUM_LABELS)
    assert detect_family(layers) == family


def test_no_preset_is_said_and_observed_ranges_are_used(caplog):
    layers = list_prunable(build(BY_ID["vgg11"]), num_labels=NUM_LABELS)
    with pytest.raises(RangeError, match="no preset matches this architecture.*--ranges observed"):
        preset_ranges(layers)
    scores = {c: {layer.name: torch.rand(layer.numel) for layer in layers} for c in ("magnitude", "snip", "grasp")}
    with caplog.at_level(logging.WARNING):
        table = resolve_ranges("preset", layers, scores)
    assert "no preset for this architecture" in caplog.text
    assert table.source == "observed (no preset for this architecture)"
    assert not any(r.reason.startswith("preset") for r in table.ranges.values())
    # checked before scoring: valid, but the table needs the scores
    assert resolve_ranges("preset", layers) is None
    # forcing a family stays possible
    assert resolve_ranges("preset:resnet", layers).source == "preset:resnet"


def test_prune_with_preset_on_a_family_without_one(tmp_path):
    from hf_mixmatch import PruneConfig, load_model, run_mixmatch
    from hf_mixmatch.models import Preprocess

    case = BY_ID["mobilenetv2"]
    loaded = load_model(build(case), preprocess=Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3),
                        num_labels=NUM_LABELS)
    config = PruneConfig(model="mnv2", output_dir=str(tmp_path / "run"), signals=("magnitude",),
                         strategies=("balanced",), ranges="preset", batch_size=4, progress=False, save="none")
    run_mixmatch(config, loaded=loaded, data=prepared(32, NUM_LABELS))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["ranges"]["source"] == "observed (no preset for this architecture)"


def test_cli_preset_on_mobilenetv3_warns_and_falls_back(tmp_path, capsys, caplog):
    """Through the CLI, on a saved timm MobileNetV3 folder: `--ranges preset` says there is no preset, builds
    observed ranges, and GraSP (hardsigmoid) is skipped and recorded; the saved variant reloads with timm."""
    import timm
    from conftest import make_image_dataset
    from timm.models import save_for_hf

    from hf_mixmatch.cli import main

    model = build(BY_ID["mobilenetv3_small_050"])
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "mean": (0.5,) * 3,
                            "std": (0.5,) * 3, "crop_pct": 1.0, "num_classes": NUM_LABELS}
    save_for_hf(model, str(tmp_path / "mnv3"), model_config={"num_classes": NUM_LABELS}, safe_serialization=True)
    data = make_image_dataset(tmp_path / "data", n_train=16, n_test=8, num_classes=NUM_LABELS, size=40)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        code = main(["prune", str(tmp_path / "mnv3"), "--dataset", str(data), "--output-dir", str(out),
                     "--ranges", "preset", "--signals", "magnitude", "--strategies", "balanced",
                     "--calib-samples", "8", "--batch-size", "8", "--quiet"])
    assert code == 0
    assert "no preset for this architecture" in caplog.text and "GraSP skipped" in caplog.text
    results = json.loads((out / "results.json").read_text())
    assert results["ranges"]["source"] == "observed (no preset for this architecture)"
    assert set(results["signals_skipped"]) == {"grasp"}
    variant = results["variants"][0]
    reloaded = timm.create_model(f"local-dir:{out / variant['path']}", pretrained=True)
    weights = [reloaded.get_submodule(n).weight for n in results["layer_roles"]]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(variant["sparsity"], abs=1e-6)
