"""A structured folder's config.json describes the dense base: plain loaders must fail loudly on it (the card says
so and names the right loader); transformers' own escape hatch, ignore_mismatched_sizes, would mis-load it."""

import json

import pytest
import torch
from conftest import make_image_dataset, save_tiny_transformers

from hf_mixmatch.structured import load_structured


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_plain_transformers_refuses_a_structured_folder_and_ours_loads_it(tmp_path, kind):
    from transformers import AutoModelForImageClassification

    from hf_mixmatch.cli import main

    data = make_image_dataset(tmp_path / "data", n_train=16, n_test=8)
    src = save_tiny_transformers(tmp_path / "m", kind)
    out = tmp_path / "run"
    assert main(["structured", str(src), "--dataset", str(data), "--sparsity", "0.3", "--tolerance", "0.1",
                 "--calib-samples", "8", "--eval-samples", "8", "--select-samples", "8", "--search", "grid",
                 "--latency-runs", "1", "--output-dir", str(out)]) == 0
    folder = out / "model"
    dense_cfg = json.loads((src / "config.json").read_text())
    cfg = json.loads((folder / "config.json").read_text())
    shape_keys = {"hidden_size", "intermediate_size", "num_attention_heads", "hidden_sizes", "embedding_size"}
    assert {k: cfg[k] for k in shape_keys & set(cfg)} == {k: dense_cfg[k] for k in shape_keys & set(dense_cfg)}
    with pytest.raises(Exception, match="mismatched|size mismatch|MISMATCH"):
        AutoModelForImageClassification.from_pretrained(folder)
    ours = load_structured(folder)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    # the escape hatch transformers' error suggests loads dense shapes with the pruned layers re-initialised
    wrong = AutoModelForImageClassification.from_pretrained(folder, ignore_mismatched_sizes=True).eval()
    assert sum(p.numel() for p in wrong.parameters()) > sum(p.numel() for p in ours.parameters())
    with torch.no_grad():
        assert not torch.allclose(wrong(x).logits, ours(x).logits, atol=1e-4)
    card = (folder / "README.md").read_text()
    assert "hf_mixmatch.from_pretrained" in card and "ignore_mismatched_sizes" in card
