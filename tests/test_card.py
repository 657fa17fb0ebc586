"""Model cards (golden file, parse-back through huggingface_hub) and the run report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import _card_fixtures as F
from hf_mixmatch.card import family_card, sparsity_per_role, template_path, variant_card, write_variant_card
from hf_mixmatch.provenance import hub_tag, is_hub_id
from hf_mixmatch.report import plot_pareto, report_markdown, write_report

GOLDEN = Path(__file__).parent / "golden" / "variant_card.md"
REPO = "me/vit-base-patch16-224-mixmatch-magnitude-percentile_50"
# Regenerate deliberately (after reviewing the diff):
#   python -c "import sys; sys.path.insert(0, 'tests'); import test_card; test_card.write_golden()"


def _golden_card():
    res = F.results()
    v = res["variants"][0]
    return variant_card(res, v, F.recipe(res, v), repo_id=REPO, numel=F.NUMEL)


def write_golden() -> None:
    GOLDEN.write_text(str(_golden_card()))


def test_variant_card_matches_golden():
    assert str(_golden_card()) == GOLDEN.read_text()


def test_golden_has_no_time_or_installed_version():
    import hf_mixmatch

    text = GOLDEN.read_text()
    assert "9.9.9-test" in text  # the version comes from the recipe, not the installed package
    assert f"hf-mixmatch {hf_mixmatch.__version__}" not in text
    assert "202" not in text.replace("3f49326eb077187dfe1c2a2bb15fbd74e6ab91e3", "")  # no dates


def test_card_parses_back_with_values_from_results(tmp_path):
    res = F.results()
    for v in res["variants"][:2]:
        path = tmp_path / f"{v['id']}.md"
        path.write_text(str(variant_card(res, v, F.recipe(res, v), numel=F.NUMEL)))
        card = ModelCard.load(path)
        data = card.data.to_dict()
        assert data["base_model"] == res["base_model"]
        assert data["base_model_relation"] == "finetune"
        assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
        assert data["license"] == "apache-2.0" and data["datasets"] == [res["dataset"]]
        assert data["metrics"] == ["accuracy"]
        assert {"pruned", "sparse", "hf-mixmatch", f"signal-{v['signal']}", f"strategy-{v['strategy']}"} <= set(data["tags"])
        block = data["hf_mixmatch"]
        assert block["sparsity"] == v["sparsity"] and block["signal"] == v["signal"]
        assert block["strategy"] == v["strategy"] and block["accuracy"] == v["accuracy"]
        assert block["top5"] == v["top5"] and block["dense_accuracy"] == res["dense"]["accuracy"]
        assert block["base_revision"] == res["base_revision"] and block["storage"] == "dense"
        name, evals = model_index_to_eval_results(data["model-index"])
        by_type = {e.metric_type: e for e in evals}
        assert by_type["accuracy"].metric_value == v["accuracy"]
        assert by_type["top_5_accuracy"].metric_value == v["top5"]
        assert all(e.dataset_type == res["dataset"] and e.dataset_split == "test" for e in evals)
        assert all(e.task_type == "image-classification" for e in evals)
        assert card.data.eval_results[0].metric_value == v["accuracy"]


def test_sparsity_per_role_weighted_by_size():
    layers = {"a": 0.5, "b": 1.0, "c": 0.25}
    roles = {"a": "mlp_up", "b": "mlp_up", "c": "classifier"}
    assert sparsity_per_role(layers, roles, {"a": 300, "b": 100, "c": 8}) == {"mlp_up": 0.625, "classifier": 0.25}
    assert sparsity_per_role(layers, roles) == {"mlp_up": 0.75, "classifier": 0.25}


def test_local_paths_never_reach_the_card(tmp_path):
    res = F.results()
    res.update(base_model="/home/alice/models/my-vit", dataset="/home/alice/data/flowers", license=None, top5=None)
    v = dict(res["variants"][1], top5=None)
    card = variant_card(res, v, {**F.recipe(res, v), "storage": "compact"})
    text = str(card)
    data = card.data.to_dict()
    assert "base_model" not in data and "license" not in data and "datasets" not in data
    assert "/home/alice" not in text  # not in the metadata, not in the body (reproduce command included)
    _, evals = model_index_to_eval_results(data["model-index"])
    assert [e.metric_type for e in evals] == ["accuracy"] and evals[0].dataset_type == "local:flowers"
    assert data["hf_mixmatch"]["storage"] == "compact"
    assert "AutoModelForImageClassification" not in text and "hf_mixmatch.from_pretrained" in text


def test_timm_card_shows_timm_loader():
    res = {**F.results(), "library": "timm", "base_model": "timm/resnet18.a1_in1k"}
    v = res["variants"][0]
    card = variant_card(res, v, F.recipe(res, v), repo_id="me/r18")
    assert card.data.library_name == "timm"
    assert 'timm.create_model("hf-hub:me/r18", pretrained=True)' in str(card)


@pytest.mark.parametrize("text,tag", [("signal-magnitude", "signal-magnitude"), ("strategy-Percentile 50", "strategy-percentile-50"),
                                      ("a:b/c", "a-b-c")])
def test_hub_tag(text, tag):
    assert hub_tag(text) == tag


@pytest.mark.parametrize("name,ok", [("google/vit-base", True), ("resnet18", True), ("default", False),
                                     ("/abs/path", False), ("./rel", False), ("a/b/c", False), ("hf-hub:timm/x", True)])
def test_is_hub_id(name, ok):
    assert is_hub_id(name) is ok


def test_family_card_lists_every_variant_front_first():
    res = F.results()
    card = family_card(res, repos={"gradient-aggressive": "me/gradient-aggressive"})
    text = str(card)
    body = text.split("| variant |")[1]
    for v in res["variants"]:
        assert f"| {v['id']} |" in body
    assert body.index("gradient-aggressive") < body.index("magnitude-percentile_50") < body.index("hybrid-conservative")
    assert "[me/gradient-aggressive](https://huggingface.co/me/gradient-aggressive)" in text
    assert "same as magnitude-percentile_50" in text
    assert "hf-mixmatch" in card.data.tags


def test_templates_found_relative_to_package():
    assert template_path("variant_card.md").read_text().startswith("---\n{{ card_data }}\n---")


def _png_ok(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_plot_pareto_and_unknown_highlight(tmp_path):
    res = F.results()
    assert _png_ok(plot_pareto(res, tmp_path / "a.png"))
    assert _png_ok(plot_pareto(res, tmp_path / "b.png", highlight="hybrid-conservative"))
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    with pytest.raises(KeyError, match="nope"):
        plot_pareto(res, tmp_path / "c.png", highlight="nope")


def test_write_report_writes_report_plots_and_cards(tmp_path):
    from safetensors.torch import save_file
    import torch

    res = F.results()
    for v in res["variants"]:
        if v.get("path"):
            vdir = tmp_path / v["path"]
            vdir.mkdir(parents=True)
            (vdir / "mixmatch.json").write_text(json.dumps(F.recipe(res, v)))
            save_file({f"{k}.weight": torch.zeros(n) for k, n in F.NUMEL.items()}, str(vdir / "model.safetensors"))
    report = write_report(tmp_path, res)
    text = report.read_text()
    assert _png_ok(tmp_path / "pareto.png")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| id")]
    assert rows[0].startswith("| dense |")
    assert [r.split(" | ")[0][2:] for r in rows[1:3]] == ["gradient-aggressive", "magnitude-percentile_50"]  # front first
    assert len(rows) == 1 + len(res["variants"])
    assert "[variants/gradient-aggressive](variants/gradient-aggressive)" in text
    for vid in ("gradient-aggressive", "magnitude-percentile_50"):
        vdir = tmp_path / "variants" / vid
        assert _png_ok(vdir / "pareto.png")
        card = ModelCard.load(vdir / "README.md")
        v = next(x for x in res["variants"] if x["id"] == vid)
        assert card.data.hf_mixmatch["sparsity"] == v["sparsity"]
        assert "Zero fraction of all weights of each role" in card.text  # sizes read from the safetensors header
    assert not (tmp_path / "variants" / "hybrid-conservative").exists()


def test_write_variant_card_reads_recipe_from_folder(tmp_path):
    res = F.results()
    v = res["variants"][0]
    (tmp_path / "mixmatch.json").write_text(json.dumps(F.recipe(res, v)))
    path = write_variant_card(tmp_path, res, v, repo_id="me/x")
    card = ModelCard.load(path)
    assert card.data.hf_mixmatch["signal"] == "magnitude"
    assert "Mean zero fraction of the layers of each role" in card.text  # no weights file: plain mean


def test_report_markdown_baselines():
    res = {**F.results(), "baselines": [{"id": "lamp@gradient-aggressive", "method": "lamp", "matched_to": "gradient-aggressive",
                                         "sparsity": 0.75, "accuracy": 0.5, "top5": None}]}
    assert "| lamp@gradient-aggressive | lamp | gradient-aggressive | 75.00% | 50.00% | – |" in report_markdown(res)


def test_card_says_when_layers_do_not_apply_their_stored_weight():
    """A run whose layers standardize their weights in forward (BiT, NFNet) says so on every card: the zeros are
    the stored tensor's; without such layers the card has no such line (the golden card above)."""
    res = F.results()
    v = res["variants"][0]
    names = ["vit.embeddings.patch_embeddings.projection", "vit.encoder.layer.0.intermediate.dense", "a", "b"]
    text = str(variant_card({**res, "not_applied_as_stored": names}, v, F.recipe(res, v), repo_id=REPO))
    line = next(line for line in text.splitlines() if line.startswith("- **Stored zeros:**"))
    assert "4 of the pruned layers" in line and "`vit.embeddings.patch_embeddings.projection`" in line and "…" in line
    assert "Stored zeros" not in str(_golden_card())
