"""Results stay true: claims are numbers or refused, fine-tuned runs choose their front on fine-tuned accuracy and
say so, scoring leaves the model as it found it, and nothing published names a local path."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import save_tiny_transformers, tiny_transformers

import hf_mixmatch
from hf_mixmatch.cli import main
from hf_mixmatch.errors import ClaimError

# ------------------------------------------------------------------------------------------------ claims

BAD = [("sparsity", float("nan")), ("sparsity", float("inf")), ("sparsity", 1.5), ("sparsity", -0.2),
       ("sparsity", "half"), ("accuracy", float("nan")), ("accuracy", 1.01), ("top5", float("-inf"))]


def _variant_with_claim(folder, key, value):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    save_tiny_transformers(folder, "resnet")
    block = {"sparsity": 0.0, "signal": "magnitude", "strategy": "uniform"}
    evals = [EvalResult(task_type="image-classification", dataset_type="d", dataset_name="d", metric_type="accuracy",
                        metric_value=0.5)]
    if key in block:
        block[key] = value
    elif key == "accuracy":
        evals[0].metric_value = value
    else:
        evals.append(EvalResult(task_type="image-classification", dataset_type="d", dataset_name="d",
                                metric_type="top_5_accuracy", metric_name="Top-5 accuracy", metric_value=value))
    card = ModelCard.from_template(ModelCardData(hf_mixmatch=block, eval_results=evals, model_name="m"),
                                   template_str="---\n{{ card_data }}\n---\n# m\n")
    card.save(str(folder / "README.md"))
    return folder


@pytest.mark.parametrize("key, value", BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_untrue_claims_are_refused_by_from_pretrained_and_verify(tmp_path, image_dataset, capsys, key, value):
    folder = _variant_with_claim(tmp_path / "v", key, value)
    for check in (True, False):
        with pytest.raises(ClaimError, match=key):
            hf_mixmatch.from_pretrained(folder, check_sparsity=check)
    assert main(["verify", str(folder), "--dataset", str(image_dataset)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("hf-mixmatch")]
    assert len(err) == 1 and "not a number" in err[0] and key in err[0]


def test_a_true_claim_still_loads(tmp_path):
    folder = _variant_with_claim(tmp_path / "v", "accuracy", 0.25)
    model = hf_mixmatch.from_pretrained(folder)
    assert model.mixmatch_claims["accuracy"] == 0.25 and math.isfinite(model.mixmatch_claims["sparsity"])


# ------------------------------------------------------------------------------------------------ scoring


def test_scoring_in_train_mode_restores_batchnorm_statistics():
    from hf_mixmatch.layers import list_prunable
    from hf_mixmatch.signals import compute_scores

    model = tiny_transformers("resnet")
    layers = list_prunable(model, num_labels=4)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    before = {n: b.clone() for n, b in model.named_buffers()}
    assert any("running_mean" in n for n in before)
    compute_scores(model, layers, torch.utils.data.TensorDataset(x, y), signals=("gradient", "grasp"), batch_size=4,
                   train_mode=True, progress=False)
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())
    assert not model.training
    model.train()(x)  # the same pass without the restore would have moved them: the check above can fail
    assert any(not torch.equal(before[n], b) for n, b in model.named_buffers() if "running_mean" in n)


# ----------------------------------------------------------------------------------------------- fine-tuning


def _dominates(a, b):
    return a["sparsity"] >= b["sparsity"] and a["accuracy"] >= b["accuracy"] and \
        (a["sparsity"] > b["sparsity"] or a["accuracy"] > b["accuracy"])


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    from conftest import make_image_dataset

    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    tmp = tmp_path_factory.mktemp("ft")
    data = make_image_dataset(tmp / "data")
    model_dir = save_tiny_transformers(tmp / "model", "resnet")
    cfg = PruneConfig(model=str(model_dir), dataset=str(data), output_dir=str(tmp / "run"), progress=False,
                      calib_samples=16, signals=("magnitude", "hybrid"),
                      strategies=("conservative", "balanced", "aggressive", "late_heavy"), finetune_steps=4,
                      finetune_samples=48, finetune_batch_size=8, finetune_lr=3e-3)
    return tmp, run_mixmatch(cfg, loaded=load_model(str(model_dir)))


def test_the_front_is_chosen_on_fine_tuned_accuracies(tuned_run):
    _, run = tuned_run
    res = run.results
    assert res["pareto_basis"] == "finetuned" and res["pareto_oneshot"]
    tuned = [v for v in run.variants if "finetune" in v]
    assert {v["id"] for v in tuned} == set(res["pareto_oneshot"])
    front = [v for v in tuned if v["id"] in res["pareto"]]
    assert front and all(not any(_dominates(w, v) for w in tuned) for v in front)
    assert all(any(_dominates(w, v) or (w["sparsity"], w["accuracy"]) == (v["sparsity"], v["accuracy"])
                   for w in front) for v in tuned if v["id"] not in res["pareto"])
    for v in tuned:
        assert set(v["oneshot"]) == {"accuracy", "top5"} and 0 <= v["finetune"]["best_step"] <= v["finetune"]["steps"]
    assert "finetune" in run.best()


def test_saved_variants_hold_the_fine_tuned_weights_and_say_what_happened(tuned_run):
    tmp, run = tuned_run
    out = run.output_dir
    saved = sorted(p.name for p in (out / "variants").iterdir())
    assert saved == sorted(run.results["pareto"])  # dropped fine-tuned variants were removed from disk
    for v in run.pareto:
        folder = out / v["path"]
        recipe = json.loads((folder / "mixmatch.json").read_text())
        assert recipe["accuracy"] == v["accuracy"] and recipe["oneshot"] == v["oneshot"]
        assert recipe["finetune_config"]["steps"] == 4 and recipe["finetune"]["best_step"] == v["finetune"]["best_step"]
        card = (folder / "README.md").read_text()
        assert "one-shot (before fine-tuning)" in card and "fine-tuned (these weights)" in card
        assert "--finetune-steps 4" in card and "--finetune-lr 0.003" in card
        if v["finetune"]["best_step"] == 0:
            assert "restored step 0" in card
        else:
            assert f"step {v['finetune']['best_step']}" in card
        assert "fine-tuned variants of its family" in card
        for text in (card, json.dumps(recipe)):  # nothing names a local path
            assert str(tmp) not in text
        assert recipe["base_model"].startswith("local:model@") and recipe["dataset"].startswith("local:data@")
    # the weights on disk are the measured ones: re-measuring matches the fine-tuned claim exactly
    v = run.pareto[0]
    report = hf_mixmatch.verify(out / v["path"], run.results["dataset"], tolerance=0.0)
    assert report.ok and report.measured_accuracy == pytest.approx(v["accuracy"])
    text = (out / "report.md").read_text()
    assert "top-1 one-shot" in text and "top-1 fine-tuned" in text


def test_finetune_story_says_when_early_stopping_kept_the_start():
    from hf_mixmatch.card import finetune_story

    assert "restored step 0" in finetune_story({"steps": 9, "best_step": 0, "stopped_early": True})
    assert "step 6" in finetune_story({"steps": 9, "best_step": 6, "stopped_early": True})
    assert finetune_story(None) is None


def test_dataset_name_is_what_the_card_says(tmp_path):
    from hf_mixmatch.provenance import public_ref

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.parquet").write_bytes(b"1")
    ref = public_ref(str(tmp_path / "d"))
    (tmp_path / "d" / "a.parquet").write_bytes(b"22")
    assert ref.startswith("local:d@") and public_ref(str(tmp_path / "d")) != ref  # content, not path
    assert public_ref("org/name") == "org/name" and public_ref("default") == "default"
