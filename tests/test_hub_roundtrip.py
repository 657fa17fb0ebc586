"""prune -> push -> search -> from_pretrained, through the real huggingface_hub client and the local Hub."""

import json

import pytest
import torch
from conftest import save_tiny_transformers
from safetensors.torch import load_file

import hf_mixmatch
from hf_mixmatch.models import load_model
from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

BASE = "tiny-org/tiny-vit"


@pytest.fixture
def run_dir(tmp_path, image_dataset):
    loaded = load_model(save_tiny_transformers(tmp_path / "m", "vit"))
    loaded.source = BASE  # as if it came from the Hub, so the card can name its base model
    out = tmp_path / "run"
    run_mixmatch(PruneConfig(model=BASE, dataset=str(image_dataset), output_dir=str(out), save="all", progress=False,
                             strategies=("conservative", "aggressive", "late_heavy"), calib_samples=16), loaded=loaded)
    return out


def test_prune_push_search_load(run_dir, hub_server, capsys, tmp_path):
    from huggingface_hub import HfApi, ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from hf_mixmatch.cli import main

    results = json.loads((run_dir / "results.json").read_text())
    saved = [v for v in results["variants"] if v["path"]]
    assert len(saved) == len([v for v in results["variants"] if "same_as" not in v])

    assert main(["push", str(run_dir), "--namespace", "tester"]) == 0
    summary = json.loads((run_dir / "push_summary.json").read_text())
    entries = summary["variants"] if isinstance(summary, dict) and "variants" in summary else summary
    text = json.dumps(entries)
    api = HfApi(endpoint=hub_server.endpoint)
    for v in saved:
        repo = hf_mixmatch.hub.repo_name_for(BASE, v["signal"], v["strategy"], "tester", run_id=results["run_id"])
        assert repo in text
        # the card the Hub serves parses back with huggingface_hub and carries results.json's numbers
        card = ModelCard.load(repo, repo_type="model")
        assert card.data.base_model == BASE and "hf-mixmatch" in card.data.tags
        assert card.data.to_dict()["hf_mixmatch"]["sparsity"] == pytest.approx(v["sparsity"])
        _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
        top1 = next(e for e in evals if e.metric_type == "accuracy")
        assert top1.metric_value == pytest.approx(v["accuracy"])
        assert repo in card.text  # load snippets name the pushed repo
        info = api.model_info(repo)
        assert f"base_model:{BASE}" in info.tags

    # pushing again changes nothing
    heads = {r: hub_server.head(r) for r in hub_server.repo_ids()}
    assert main(["push", str(run_dir), "--namespace", "tester"]) == 0
    assert {r: hub_server.head(r) for r in hub_server.repo_ids()} == heads

    found = hf_mixmatch.list_pruned(base_model=BASE)
    assert {f.repo_id for f in found} == {hf_mixmatch.hub.repo_name_for(BASE, v["signal"], v["strategy"], "tester", run_id=results["run_id"])
                                         for v in saved}
    by_repo = {f.repo_id: f for f in found}
    for v in saved:
        f = by_repo[hf_mixmatch.hub.repo_name_for(BASE, v["signal"], v["strategy"], "tester", run_id=results["run_id"])]
        assert f.sparsity == pytest.approx(v["sparsity"]) and f.accuracy == pytest.approx(v["accuracy"])
        assert (f.signal, f.strategy) == (v["signal"], v["strategy"])

    v = max(saved, key=lambda v: v["sparsity"])
    repo = hf_mixmatch.hub.repo_name_for(BASE, v["signal"], v["strategy"], "tester", run_id=results["run_id"])
    model = hf_mixmatch.from_pretrained(repo)
    # transformers >= 5 renames some checkpoint keys on load: compare loaded models, and the raw files too
    local = hf_mixmatch.from_pretrained(run_dir / v["path"]).state_dict()
    remote = model.state_dict()
    assert remote.keys() == local.keys()
    raw_local = load_file(str(run_dir / v["path"] / "model.safetensors"))
    from huggingface_hub import hf_hub_download

    raw_remote = load_file(hf_hub_download(repo, "model.safetensors"))
    assert raw_local.keys() == raw_remote.keys() and all(torch.equal(raw_local[k], raw_remote[k]) for k in raw_local)
    for layer_name, sp in v["layers"].items():
        key = f"{layer_name}.weight"
        assert torch.equal(remote[key], local[key])
        assert float((remote[key] == 0).float().mean()) == pytest.approx(sp)
    assert model.mixmatch_recipe["strategy"] == v["strategy"] and model.mixmatch_recipe["base_model"] == BASE


def test_compact_storage_run_roundtrip(tmp_path, image_dataset):
    loaded = load_model(save_tiny_transformers(tmp_path / "m", "resnet"))
    out = tmp_path / "run"
    run = run_mixmatch(PruneConfig(model="x", dataset=str(image_dataset), output_dir=str(out), save="pareto",
                                   progress=False, storage="compact", strategies=("aggressive",),
                                   signals=("magnitude",), calib_samples=8), loaded=loaded)
    v = run.pareto[0]
    folder = out / v["path"]
    assert (folder / "model.compact.safetensors").is_file() and not (folder / "model.safetensors").exists()
    model = hf_mixmatch.from_pretrained(folder)
    from hf_mixmatch.layers import list_prunable
    from hf_mixmatch.masks import measure_sparsity

    assert measure_sparsity(model, list_prunable(model))[0] == pytest.approx(v["sparsity"], abs=1e-12)
