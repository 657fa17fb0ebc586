"""The zoo: every architecture of tests/zoo_models.py has the roles of its table and prunes end to end."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from zoo_data import photo_batch, prepared
from zoo_models import KEY_ROLES, NUM_LABELS, ROLE_TABLE, TRANSFORMERS, TRANSFORMERS_SKIPPED, ZOO, build

from hf_mixmatch.layers import ROLES, list_prunable, used_by_forward

CASES = [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in ZOO]


def inventory(case, model):
    """The prunable layers a run works on: listed, minus those the forward never uses."""
    return used_by_forward(model, list_prunable(model, num_labels=NUM_LABELS), photo_batch(case.size, 2))


def test_zoo_covers_every_transformers_image_classifier():
    """Each class of transformers' image-classification auto mapping is in the zoo, or its type is listed as
    skipped with a reason: a new architecture in transformers fails here until it is added."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as mapping

    in_zoo = {c.arch for c in TRANSFORMERS}
    missing = [(t, cls) for t, classes in mapping.items() if t not in TRANSFORMERS_SKIPPED
               for cls in ((classes,) if isinstance(classes, str) else classes) if cls not in in_zoo]
    assert not missing
    assert set(TRANSFORMERS_SKIPPED) <= set(mapping)


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
    # the saved variant holds exactly the zeros it reports (measured per layer, zeros of the dense weights
    # included): a count over all tensors, so it does not depend on how the library names them in the file
    saved = result.pareto[0]
    loaded.save_pretrained(tmp_path / "dense")
    weights = {n: loaded.model.get_submodule(n).weight for n in roles}
    reported = sum(round(w.numel() * saved["layers"][n]) for n, w in weights.items())
    dense_zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert reported > dense_zeros
    assert _zeros(tmp_path / "run" / saved["path"]) - _zeros(tmp_path / "dense") == reported - dense_zeros


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # re-estimated per variant (bn_recalibrate)


def _zeros(folder) -> int:
    """Zeros over every tensor of the file but the BatchNorm statistics, which a variant re-estimates."""
    from safetensors.torch import load_file

    return sum(int((t == 0).sum()) for k, t in load_file(str(folder / "model.safetensors")).items()
               if not k.endswith(BN_BUFFERS))


@pytest.mark.parametrize("case_id", ["beit", "data2vecvision"])
def test_gradient_pass_after_evaluation(case_id):
    """Evaluation must not leave inference-mode tensors in the model's caches (BEiT's relative-position index)
    for a later gradient pass."""
    from hf_mixmatch.evaluate import evaluate
    from hf_mixmatch.signals import compute_scores

    case = next(c for c in ZOO if c.id == case_id)
    model = build(case)
    data = prepared(case.size, NUM_LABELS)
    evaluate(model, data.eval, batch_size=4)
    scores = compute_scores(model, list_prunable(model, num_labels=NUM_LABELS), data.calib,
                            signals=("gradient", "grasp"), batch_size=4, progress=False)
    assert all(s.abs().sum() > 0 for s in scores["gradient"].values())


def test_variant_without_unused_layers_reloads_with_its_sparsity(tmp_path):
    """A SigLIP variant (its unused pooling head left out of the inventory) loads back with
    hf_mixmatch.from_pretrained, whose sparsity check measures the run's layers."""
    from hf_mixmatch import PruneConfig, from_pretrained, load_model, run_mixmatch
    from hf_mixmatch.models import Preprocess

    case = next(c for c in ZOO if c.id == "siglip")
    loaded = load_model(build(case), preprocess=Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3),
                        num_labels=NUM_LABELS)
    config = PruneConfig(model="siglip", output_dir=str(tmp_path / "run"), signals=("magnitude",),
                         strategies=("aggressive",), batch_size=4, progress=False)
    result = run_mixmatch(config, loaded=loaded, data=prepared(32, NUM_LABELS))
    variant = result.pareto[0]
    model = from_pretrained(str(tmp_path / "run" / variant["path"]))
    assert model.mixmatch_recipe["sparsity"] == pytest.approx(variant["sparsity"])
    assert not any(n.startswith("vision_model.head.") for n in model.mixmatch_recipe["numel"])


@pytest.mark.slow
def test_every_role_rule_fires_somewhere_in_the_zoo():
    """No dead rule: each rule of hf_mixmatch/roles.py decides the role of at least one zoo layer (the first
    matching rule wins, so a rule shadowed by earlier ones never fires)."""
    from hf_mixmatch.layers import _kind
    from hf_mixmatch.roles import EXCLUDED, RULES

    assert {r.role for r in RULES} <= set(ROLES) | {EXCLUDED}
    fired = set()
    for case in ZOO:
        for name, module in build(case).named_modules():
            if _kind(module) is None:
                continue
            first = next((i for i, r in enumerate(RULES) if re.search(r.pattern, name)), None)
            fired.add(first)
    assert [RULES[i].pattern for i in range(len(RULES)) if i not in fired] == []


def test_scores_of_a_layer_the_forward_never_uses_are_zero():
    """compute_scores on the full listing (unused SigLIP head included) does not fail: no gradient = zero."""
    from hf_mixmatch.signals import compute_scores

    case = next(c for c in ZOO if c.id == "siglip")
    model = build(case)
    scores = compute_scores(model, list_prunable(model, num_labels=NUM_LABELS), prepared(32, NUM_LABELS).calib,
                            signals=("gradient", "snip", "grasp"), batch_size=4, progress=False)
    head = [n for n in scores["gradient"] if n.startswith("vision_model.head.")]
    assert head and all(scores[s][n].abs().sum() == 0 for s in scores for n in head)
    assert scores["gradient"]["classifier"].abs().sum() > 0
