"""structured -> push -> search -> load, through the real huggingface_hub client and the local Hub; search tells
structured from unstructured sparsity."""

import json

import pytest
import torch
from conftest import save_tiny_transformers

import hf_mixmatch
from hf_mixmatch.models import load_model, logits
from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

BASE = "tiny-org/tiny-vit"


def _structured_run(tmp_path):
    from hf_mixmatch.cli import main

    out = tmp_path / "srun"
    argv = ["structured", "default", "--dataset", "default", "--sparsity", "0.3", "--tolerance", "0.05",
            "--calib-samples", "32", "--eval-samples", "32", "--select-samples", "32", "--search", "grid",
            "--latency-runs", "1", "--output-dir", str(out)]
    assert main(argv) == 0
    return out


def test_structured_run_pushes_and_search_keeps_the_kinds_apart(tmp_path, image_dataset, hub_server, capsys):
    from huggingface_hub import ModelCard

    from hf_mixmatch.cli import main
    from hf_mixmatch.structured.publish import structured_repo_name

    srun = _structured_run(tmp_path)
    results = json.loads((srun / "results.json").read_text())
    repo = structured_repo_name(results, "tester")
    assert main(["push", str(srun), "--namespace", "tester"]) == 0
    summary = json.loads((srun / "push_summary.json").read_text())
    assert [(v["repo_id"], v["status"]) for v in summary["variants"]] == [(repo, "pushed")]
    card = ModelCard.load(repo, repo_type="model")
    block = card.data.to_dict()["hf_mixmatch"]
    assert block["method"] == "structured" and "structured" in card.data.tags
    assert block["params"] == results["pruned"]["params"] < block["params_dense"] == results["dense"]["params"]
    assert block["flops"] == results["pruned"]["flops"] and block["latency_ms"]["pruned"]["b1"] > 0
    assert block["sparsity"] == pytest.approx(results["achieved_sparsity"])
    assert repo in card.text  # the load snippet names the pushed repo
    # pushing again changes nothing
    head = hub_server.head(repo)
    assert main(["push", str(srun), "--namespace", "tester"]) == 0
    assert hub_server.head(repo) == head
    # the pushed model loads back with hf_mixmatch and computes what the local one does
    remote, local = hf_mixmatch.from_pretrained(repo), hf_mixmatch.from_pretrained(srun / "model")
    shape = json.loads((srun / "model" / "structured.json").read_text())["example_shape"]
    x = torch.rand(2, *shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(logits(remote, x), logits(local, x))

    # an unstructured run of another base next to it
    loaded = load_model(save_tiny_transformers(tmp_path / "m", "vit"))
    loaded.source = BASE
    urun = tmp_path / "urun"
    run_mixmatch(PruneConfig(model=BASE, dataset=str(image_dataset), output_dir=str(urun), save="pareto",
                             progress=False, strategies=("aggressive",), signals=("magnitude",), calib_samples=8),
                 loaded=loaded)
    assert main(["push", str(urun), "--namespace", "tester"]) == 0
    found = hf_mixmatch.list_pruned(sort="sparsity")
    kinds = {f.repo_id: f.kind for f in found}
    assert kinds[repo] == "structured" and {k for r, k in kinds.items() if r != repo} == {"unstructured"}
    assert [f.kind for f in found] == sorted(f.kind for f in found)  # each kind ranked on its own
    assert [f.repo_id for f in hf_mixmatch.list_pruned(kind="structured")] == [repo]
    assert repo not in {f.repo_id for f in hf_mixmatch.list_pruned(kind="unstructured")}
    capsys.readouterr()
    assert main(["search", "--sort", "sparsity"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["repo", "signal", "strategy", "sparsity", "accuracy", "kind"]
    assert any(line.startswith(repo) and line.split()[-1] == "structured" for line in lines[1:])
    assert main(["search", "--kind", "unstructured"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["repo", "signal", "strategy", "sparsity", "accuracy"]  # one kind: no kind column
    assert repo not in "\n".join(lines)


def test_push_of_a_structured_run_without_its_model_is_one_line(tmp_path, capsys):
    from hf_mixmatch.cli import main

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"model": "a/b", "model_dir": str(run / "model"),
                                                  "achieved_sparsity": 0.5}))
    assert main(["push", str(run), "--namespace", "tester", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no model.safetensors" in err
