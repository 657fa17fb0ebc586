import json

import pytest
import torch
from conftest import tiny_timm, tiny_transformers

from hf_mixmatch.errors import RangeError
from hf_mixmatch.layers import LayerInfo, list_prunable
from hf_mixmatch.ranges import (detect_family, observed_ranges, preset_ranges, resolve_ranges)

BIG = 20_000


def test_observed_is_min_max_over_criteria_and_targets():
    layers = [LayerInfo("a", "conv", 0, BIG, (BIG,)), LayerInfo("b", "conv", 1, BIG, (BIG,))]
    # magnitude: a's scores all below b's -> a empties first; snip: the reverse
    low, high = torch.arange(BIG, dtype=torch.float32), torch.arange(BIG, 2 * BIG, dtype=torch.float32)
    scores = {"magnitude": {"a": low, "b": high}, "snip": {"a": high, "b": low}}
    table = observed_ranges(layers, scores, targets=(0.3, 0.4), criteria=("magnitude", "snip"))
    # magnitude @0.3: a 0.6, b 0; @0.4: a 0.8, b 0. snip mirrors it.
    assert table["a"].min == pytest.approx(0.0) and table["a"].max == pytest.approx(0.8)
    assert table["b"].min == pytest.approx(0.0) and table["b"].max == pytest.approx(0.8)
    assert table.source == "observed"


def test_clamps_small_layers_and_patch_embed():
    layers = [LayerInfo("pe", "patch_embed", 0, BIG, (BIG,)), LayerInfo("s", "conv", 0, 500, (500,)),
              LayerInfo("c", "conv", 0, BIG, (BIG,))]
    scores = {c: {l.name: torch.rand(l.numel) for l in layers} for c in ("magnitude", "snip", "grasp")}
    t = observed_ranges(layers, scores)
    assert (t["pe"].min, t["pe"].max) == (0.15, 0.30)
    assert (t["s"].min, t["s"].max) == (0.0, 0.10)
    assert "10K" in t["s"].reason and "observed" in t["c"].reason


def test_presets_per_family_with_reasons():
    assert detect_family(list_prunable(tiny_transformers("swin"))) == "swin"
    assert detect_family(list_prunable(tiny_transformers("vit"))) == "vit"
    assert detect_family(list_prunable(tiny_timm("resnet18"))) == "resnet"
    assert detect_family(list_prunable(tiny_transformers("convnext"))) == "convnext"
    layers = list_prunable(tiny_timm("resnet18"))
    t = preset_ranges(layers)
    assert (t["layer4.0.conv1"].min, t["layer4.0.conv1"].max) == (0.75, 0.95)
    assert (t["layer1.0.conv1"].min, t["layer1.0.conv1"].max) == (0.30, 0.50)
    assert (t["fc"].min, t["fc"].max) == (0.0, 0.30)
    assert all(r.reason.startswith("preset resnet:") for r in t.ranges.values())
    swin = preset_ranges(list_prunable(tiny_transformers("swin")))
    assert swin["swin.encoder.layers.1.blocks.0.mlp.fc1"].min == pytest.approx(0.35)


def test_file_roundtrip_and_errors(tmp_path):
    layers = list_prunable(tiny_timm("resnet18"))
    t = preset_ranges(layers)
    t.save(tmp_path / "r.json")
    back = resolve_ranges(str(tmp_path / "r.json"), layers)
    assert back.ranges == t.ranges
    d = json.loads((tmp_path / "r.json").read_text())
    del d["ranges"]["fc"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(RangeError, match="no entry"):
        resolve_ranges(str(tmp_path / "bad.json"), layers)
    with pytest.raises(RangeError, match="observed, rd, preset"):
        resolve_ranges("nonsense", layers)
    with pytest.raises(RangeError, match="no preset"):
        resolve_ranges("preset:unknownfamily", layers)
