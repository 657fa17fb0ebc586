"""The zoo: every architecture of tests/zoo_models.py has the roles of its table and prunes end to end."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import torch
from zoo_data import photo_batch, prepared
from zoo_models import KEY_ROLES, NUM_LABELS, ROLE_TABLE, ZOO, build

from hf_mixmatch.layers import ROLES, list_prunable, used_by_forward

CASES = [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in ZOO]


def inventory(case, model):
    """The prunable layers a run works on: listed, minus those the forward never uses."""
    return used_by_forward(model, list_prunable(model, num_labels=NUM_LABELS), photo_batch(case.size, 2))


@pytest.mark.parametrize("case", CASES)
def test_roles_match_the_table(case):
    model = build(case)
    layers = inventory(case, model)
    counts = Counter(layer.role for layer in layers)
    assert {r: counts[r] for r in KEY_ROLES if counts[r]} == ROLE_TABLE[case.id]
    assert set(counts) <= set(ROLES)
    for pattern, role in case.names.items():
        matched = [layer for layer in layers if re.search(pattern, layer.name)]
        assert matched, f"no layer matches {pattern}"
        assert {layer.role for layer in matched} == {role}, [(x.name, x.role) for x in matched]
    for pattern in case.never:
        assert any(re.search(pattern, n) for n, _ in model.named_modules()), f"{pattern} names no module"
        assert not [layer.name for layer in layers if re.search(pattern, layer.name)]
    # norms, biases, tokens and position tables are never listed: only >=2-D Conv/Linear weights
    params = dict(model.named_parameters())
    assert all(params[layer.param_name].dim() >= 2 for layer in layers)


@pytest.mark.parametrize("case", CASES)
def test_prune_end_to_end(case, tmp_path):
    from hf_mixmatch import PruneConfig, load_model, run_mixmatch
    from hf_mixmatch.models import Preprocess

    model = build(case)
    loaded = load_model(model, preprocess=Preprocess(size=(case.size, case.size), mean=(0.5,) * 3, std=(0.5,) * 3),
                        num_labels=NUM_LABELS)
    config = PruneConfig(model=case.id, output_dir=str(tmp_path / "run"), signals=("magnitude",),
                         strategies=("balanced", "aggressive"), batch_size=4, progress=False)
    result = run_mixmatch(config, loaded=loaded, data=prepared(case.size, NUM_LABELS))

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["ranges"]["source"] == "observed"
    assert {v["strategy"] for v in results["variants"]} == {"balanced", "aggressive"}
    roles = results["layer_roles"]
    assert Counter(r for r in roles.values() if r in KEY_ROLES) == Counter(ROLE_TABLE[case.id])
    aggressive = next(v for v in results["variants"] if v["strategy"] == "aggressive")
    assert 0.0 < aggressive["sparsity"] < 1.0
    assert set(results.get("signals_skipped", {})) <= {"grasp"}
    # the saved variant holds exactly the sparsity it reports
    saved = result.pareto[0]
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "run" / saved["path"] / "model.safetensors"))
    zeros = sum(int((state[f"{n}.weight"] == 0).sum()) for n in roles)
    total = sum(state[f"{n}.weight"].numel() for n in roles)
    assert zeros / total == pytest.approx(saved["sparsity"], abs=1e-6)


def test_grasp_skipped_without_second_derivative_and_recorded(tmp_path, caplog):
    """MobileNetV3's hardsigmoid has no double backward: the default observed ranges are built from
    magnitude and SNIP only, with a warning, and results.json says GraSP was skipped."""
    from hf_mixmatch import PruneConfig, load_model, run_mixmatch
    from hf_mixmatch.models import Preprocess

    case = next(c for c in ZOO if c.id == "mobilenetv3_small_050")
    loaded = load_model(build(case), preprocess=Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3),
                        num_labels=NUM_LABELS)
    config = PruneConfig(model="mnv3", output_dir=str(tmp_path / "run"), strategies=("balanced",), batch_size=4,
                         progress=False, save="none")
    with caplog.at_level("WARNING"):
        result = run_mixmatch(config, loaded=loaded, data=prepared(32, NUM_LABELS))
    assert "GraSP skipped" in caplog.text
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["signals_skipped"]) == {"grasp"}
    reasons = {r[2] for r in results["ranges"]["ranges"].values()}
    assert any(r.startswith("observed: min/max over global magnitude/snip at") for r in reasons)
    assert result.variants[0]["sparsity"] > 0


def test_grasp_baseline_without_second_derivative_is_a_clear_error(tmp_path):
    from hf_mixmatch import PruneConfig, load_model, run_mixmatch
    from hf_mixmatch.errors import ConfigError
    from hf_mixmatch.models import Preprocess

    case = next(c for c in ZOO if c.id == "mobilenetv3_small_050")
    loaded = load_model(build(case), preprocess=Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3),
                        num_labels=NUM_LABELS)
    config = PruneConfig(model="mnv3", output_dir=str(tmp_path / "run"), strategies=("balanced",), batch_size=4,
                         progress=False, save="none", baselines=("grasp",), ranges="preset:resnet")
    with pytest.raises(ConfigError, match="grasp.*second derivative.*--baselines"):
        run_mixmatch(config, loaded=loaded, data=prepared(32, NUM_LABELS))
    assert not (tmp_path / "run" / "results.json").exists()


def test_compute_scores_skips_only_grasp_on_hardsigmoid():
    from hf_mixmatch.signals import compute_scores

    case = next(c for c in ZOO if c.id == "mobilenetv3_small_050")
    model = build(case)
    layers = list_prunable(model, num_labels=NUM_LABELS)
    data = prepared(32, NUM_LABELS)
    scores = compute_scores(model, layers, data.calib, signals=("magnitude", "snip", "grasp"), batch_size=4,
                            progress=False)
    assert set(scores) == {"magnitude", "snip"}
    # a model whose ops all have a second derivative keeps GraSP
    vit = next(c for c in ZOO if c.id == "vit_tiny_patch16_224")
    model = build(vit)
    scores = compute_scores(model, list_prunable(model, num_labels=NUM_LABELS), prepared(32, NUM_LABELS).calib,
                            signals=("grasp",), batch_size=4, progress=False)
    assert set(scores) == {"grasp"} and all(torch.isfinite(s).all() for s in scores["grasp"].values())


def test_unused_layers_are_left_out():
    """SigLIP's image classifier pools by mean and never runs the vision tower's attention-pooling head."""
    case = next(c for c in ZOO if c.id == "siglip")
    model = build(case)
    listed = list_prunable(model, num_labels=NUM_LABELS)
    used = inventory(case, model)
    dropped = {layer.name for layer in listed} - {layer.name for layer in used}
    assert dropped and all(n.startswith("vision_model.head.") for n in dropped)
    # a ViT uses every listed layer
    vit = build(next(c for c in ZOO if c.id == "vit"))
    assert len(used_by_forward(vit, list_prunable(vit), photo_batch(32, 2))) == len(list_prunable(vit))
    # the probe puts requires_grad back as it found it
    for p in model.parameters():
        p.requires_grad_(False)
    inventory(case, model)
    assert not any(p.requires_grad for p in model.parameters())
