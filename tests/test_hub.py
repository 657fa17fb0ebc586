"""push / search / download end to end, against the local Hub server through the real huggingface_hub client."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from safetensors.torch import save_file

from hf_mixmatch import hub
from hf_mixmatch.errors import ConfigError, HubError, UnsafeWeightsError

BASE = "org/tiny-vit"
VARIANTS = [  # id, signal, strategy, sparsity, accuracy, top5
    ("v0", "magnitude", "uniform", 0.5, 0.91, 0.99),
    ("v1", "gradient", "erk", 0.7, 0.87, 0.97),
    ("v2", "hybrid", "uniform+", 0.9, 0.62, None),
]


def _card(variant: dict, dataset: str) -> str:
    results = [EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                          dataset_split="test", metric_type="accuracy", metric_value=variant["accuracy"])]
    if variant["top5"] is not None:
        results.append(EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                                  dataset_split="test", metric_type="top_5_accuracy", metric_name="top-5 accuracy",
                                  metric_value=variant["top5"]))
    data = ModelCardData(
        base_model=BASE, base_model_relation="finetune", library_name="transformers",
        pipeline_tag="image-classification", datasets=[dataset], metrics=["accuracy"],
        tags=["pruned", "sparse", "hf-mixmatch", variant["signal"], variant["strategy"]],
        model_name=f"tiny-vit-{variant['id']}", eval_results=results,
        hf_mixmatch={"sparsity": variant["sparsity"], "signal": variant["signal"], "strategy": variant["strategy"],
                     "method": "mixmatch", "sparsity_per_role": {"attention": variant["sparsity"]},
                     "dense_accuracy": 0.93},
    )
    return str(ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n# {{ model_name }}\n",
                                       model_name=variant["id"]))


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    dataset = "local/tiny-images"
    variants = []
    for i, (vid, signal, strategy, sparsity, acc, top5) in enumerate(VARIANTS):
        v = {"id": vid, "method": "mixmatch", "signal": signal, "strategy": strategy, "sparsity": sparsity,
             "accuracy": acc, "top5": top5, "layers": {"encoder.layer.0": sparsity}, "path": f"variants/{vid}"}
        folder = run / v["path"]
        folder.mkdir(parents=True)
        w = torch.randn(32, 32, generator=torch.Generator().manual_seed(i))
        w[w.abs() < 0.5] = 0
        save_file({"weight": w}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"model_type": "vit", "variant": vid}))
        (folder / "README.md").write_text(_card(v, dataset))
        variants.append(v)
    variants.append({**variants[0], "id": "unsaved", "path": None})
    results = {"base_model": BASE, "base_revision": "a" * 40, "library": "transformers", "dataset": dataset,
               "eval_split": "test", "eval_samples": 32, "dense": {"accuracy": 0.93, "top5": 1.0},
               "variants": variants, "pareto": ["v0", "v2"]}
    (run / "results.json").write_text(json.dumps(results))
    return run


def _summary(run_dir):
    return {v["variant_id"]: v for v in json.loads((run_dir / "push_summary.json").read_text())["variants"]}


@pytest.mark.parametrize("base, signal, strategy, expected", [
    ("microsoft/swin-tiny-patch4-window7-224", "magnitude", "uniform",
     "ns/swin-tiny-patch4-window7-224-mixmatch-magnitude-uniform"),
    ("timm/resnet18.a1_in1k", "gradient", "uniform+", "ns/resnet18.a1_in1k-mixmatch-gradient-uniform-plus"),
    ("org/we!rd..name--x", "hy brid", "lamp", "ns/we-rd.name-x-mixmatch-hy-brid-lamp"),
    ("local/dir/", "magnitude", "erk", "ns/dir-mixmatch-magnitude-erk"),
])
def test_repo_name_for(base, signal, strategy, expected):
    assert hub.repo_name_for(base, signal, strategy, "ns") == expected


def test_repo_name_is_length_limited_and_deterministic():
    a = hub.repo_name_for("org/" + "x" * 200, "magnitude", "uniform", "ns")
    b = hub.repo_name_for("org/" + "x" * 200, "magnitude", "erk", "ns")
    assert len(a.split("/")[1]) <= 96 and a != b
    assert a == hub.repo_name_for("org/" + "x" * 200, "magnitude", "uniform", "ns")
    name = a.split("/")[1]
    assert "--" not in name and ".." not in name and name[-1].isalnum()
    with pytest.raises(ConfigError):
        hub.repo_name_for(BASE, "magnitude", "uniform", "bad/ns")


def test_push_search_download_round_trip(hub_server, run_dir, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    records = hub.push_run(run_dir, namespace="tester")
    assert [(r.variant_id, r.status) for r in records] == [("v0", "pushed"), ("v1", "pushed"), ("v2", "pushed")]
    repos = {r.variant_id: r.repo_id for r in records}
    assert repos["v2"] == "tester/tiny-vit-mixmatch-hybrid-uniform-plus"
    for r in records:
        assert r.commit == hub_server.head(r.repo_id) and len(hub_server.commits(r.repo_id)) == 2
        files = hub_server.files(r.repo_id)
        for name in ("model.safetensors", "config.json", "README.md"):
            assert files[name] == (run_dir / "variants" / r.variant_id / name).read_bytes()
    summary = _summary(run_dir)
    assert set(summary) == {"v0", "v1", "v2"}
    assert all(summary[v]["status"] == "pushed" and summary[v]["commit"] == hub_server.head(repos[v]) for v in summary)

    # re-push: nothing changes on the server
    heads = {r.repo_id: hub_server.head(r.repo_id) for r in records}
    again = hub.push_run(run_dir, namespace="tester")
    assert [r.status for r in again] == ["unchanged"] * 3
    assert {r.repo_id: hub_server.head(r.repo_id) for r in again} == heads
    assert all(len(hub_server.commits(rid)) == 2 for rid in heads)

    # search: numbers from results.json, sorted and filtered
    found = hub.list_pruned(BASE)
    assert [(f.repo_id, f.accuracy, f.top5, f.sparsity, f.signal, f.strategy) for f in found] == [
        (repos["v0"], 0.91, 0.99, 0.5, "magnitude", "uniform"),
        (repos["v1"], 0.87, 0.97, 0.7, "gradient", "erk"),
        (repos["v2"], 0.62, None, 0.9, "hybrid", "uniform+"),
    ]
    assert all(f.base_model == BASE and f.dataset == "local/tiny-images" for f in found)
    assert [f.repo_id for f in hub.list_pruned(BASE, sort="sparsity")] == [repos["v2"], repos["v1"], repos["v0"]]
    assert [f.repo_id for f in hub.list_pruned(BASE, min_accuracy=0.8, min_sparsity=0.6)] == [repos["v1"]]
    assert [f.repo_id for f in hub.list_pruned(BASE, limit=1)] == [repos["v0"]]
    assert hub.list_pruned("org/other-model") == []
    assert len(hub.list_pruned(author="tester")) == 3 and hub.list_pruned(author="mixmatch-org") == []

    # download: bit-identical
    out = hub.download(repos["v1"], local_dir=tmp_path / "dl")
    for name in ("model.safetensors", "config.json", "README.md"):
        assert (out / name).read_bytes() == (run_dir / "variants" / "v1" / name).read_bytes()
    old = hub.download(repos["v1"], revision=summary["v1"]["commit"], local_dir=tmp_path / "dl_rev")
    assert (old / "model.safetensors").read_bytes() == (run_dir / "variants/v1/model.safetensors").read_bytes()

    # the token is never written or logged
    captured = capsys.readouterr()
    assert hub_server.token not in captured.out + captured.err + caplog.text
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert hub_server.token.encode() not in path.read_bytes(), path


def test_only_pareto_private_and_dry_run(hub_server, run_dir):
    dry = hub.push_run(run_dir, namespace="tester", dry_run=True)
    assert [r.status for r in dry] == ["dry-run"] * 3
    assert hub_server.repo_ids() == [] and not (run_dir / "push_summary.json").exists()
    assert hub_server.requests() == []

    records = hub.push_run(run_dir, namespace="mixmatch-org", only_pareto=True, private=True)
    assert [r.variant_id for r in records] == ["v0", "v2"]
    assert hub_server.repo_ids() == sorted(r.repo_id for r in records)
    assert all(hub_server.repo(r.repo_id).private for r in records)
    assert len(hub.list_pruned(BASE)) == 2
    assert hub.list_pruned(BASE, token=hub_server.other_token) == []


def test_push_errors_are_clear(hub_server, run_dir, monkeypatch):
    with pytest.raises(HubError, match="--namespace"):
        hub.push_run(run_dir, namespace="someone-else")
    assert {v["status"] for v in _summary(run_dir).values()} == {"failed"}
    assert hub_server.repo_ids() == []
    monkeypatch.setenv("HF_TOKEN", "hf_invalid")
    with pytest.raises(HubError, match="hf auth login"):
        hub.push_run(run_dir, namespace="tester")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="hf auth login"):
        hub.push_run(run_dir, namespace="tester")
    with pytest.raises(ConfigError, match="results.json"):
        hub.push_run(run_dir / "nope", namespace="tester")


def test_5xx_burst_is_absorbed_by_retries(hub_server, run_dir):
    hub_server.faults.fail("POST", r"/preupload/", status=502, times=2)
    hub_server.faults.fail("PUT", r"^/_lfs/upload/", status=503, times=3)
    records = hub.push_run(run_dir, namespace="tester")
    assert [r.status for r in records] == ["pushed"] * 3 and hub_server.faults.pending() == 0
    assert 503 in [s for _, _, s in hub_server.requests("PUT", r"^/_lfs/upload/")]


def test_dropped_upload_gives_clear_error_and_rerun_completes(hub_server, run_dir):
    hub.push_run(run_dir, namespace="tester", only_pareto=True)  # v0 and v2 already there
    hub_server.faults.drop_upload(times=6 * hub.RETRY_ATTEMPTS, after_bytes=64)  # beats every retry on v1's upload
    with pytest.raises(HubError, match="network error") as err:
        hub.push_run(run_dir, namespace="tester")
    assert "\n" not in str(err.value) and "rerun" in str(err.value)
    summary = _summary(run_dir)
    assert {k: v["status"] for k, v in summary.items()} == {"v0": "unchanged", "v1": "failed", "v2": "unchanged"}
    v1_repo = summary["v1"]["repo_id"]
    assert summary["v1"]["commit"] is None and len(hub_server.commits(v1_repo)) == 1  # nothing committed
    records = hub.push_run(run_dir, namespace="tester")
    assert {r.variant_id: r.status for r in records} == {"v0": "unchanged", "v1": "pushed", "v2": "unchanged"}
    assert _summary(run_dir)["v1"]["commit"] == hub_server.head(v1_repo)


def test_409_on_create_of_a_missing_repo_fails_clearly_then_rerun_succeeds(hub_server, run_dir):
    hub_server.faults.conflict_on_create(times=1)
    with pytest.raises(HubError, match="not found or not accessible"):
        hub.push_run(run_dir, namespace="tester", only_pareto=True)
    summary = _summary(run_dir)
    assert summary["v0"]["status"] == "failed" and summary["v2"]["status"] == "pushed"
    assert [r.status for r in hub.push_run(run_dir, namespace="tester", only_pareto=True)] == ["pushed", "unchanged"]


def test_download_refuses_pickle_only_repos_and_skips_pickles(hub_server, tmp_path):
    hub_server.add_repo("tester/pickled", {"pytorch_model.bin": b"\x80\x04not really", "config.json": b"{}"})
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        hub.download("tester/pickled", local_dir=tmp_path / "p")
    assert not (tmp_path / "p" / "pytorch_model.bin").exists()
    hub_server.add_repo("tester/both", {"pytorch_model.bin": b"\x80\x04x", "model.safetensors": b"\x08" + b"\0" * 15,
                                        "config.json": b"{}"})
    out = hub.download("tester/both", local_dir=tmp_path / "b")
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [".gitattributes", "config.json",
                                                                     "model.safetensors"]
    with pytest.raises(HubError, match="not found"):
        hub.download("tester/missing", local_dir=tmp_path / "m")


def test_cli_push_search_download(hub_server, run_dir, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    hub.add_cli(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args([str(a) for a in argv])
        return args.func(args)

    assert run("push", run_dir, "--namespace", "tester", "--dry-run") == 0
    assert "would push v0 -> tester/tiny-vit-mixmatch-magnitude-uniform" in capsys.readouterr().out
    assert hub_server.repo_ids() == []
    assert run("push", run_dir, "--namespace", "tester") == 0
    capsys.readouterr()
    assert run("search", "--base-model", BASE, "--min-sparsity", "0.6", "--sort", "sparsity") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["repo", "signal", "strategy", "sparsity", "accuracy"]
    assert [line.split() for line in lines[1:]] == [
        ["tester/tiny-vit-mixmatch-hybrid-uniform-plus", "hybrid", "uniform+", "0.9000", "0.6200"],
        ["tester/tiny-vit-mixmatch-gradient-erk", "gradient", "erk", "0.7000", "0.8700"]]
    assert len({line.index("0.") for line in lines[1:]}) == 1  # aligned columns
    assert run("search", "--json", "--limit", "1") == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["repo_id"] == "tester/tiny-vit-mixmatch-magnitude-uniform" and item["accuracy"] == 0.91
    assert run("download", "tester/tiny-vit-mixmatch-gradient-erk", "--local-dir", tmp_path / "d") == 0
    assert (tmp_path / "d" / "model.safetensors").read_bytes() == (run_dir / "variants/v1/model.safetensors").read_bytes()
    assert HfApi().list_repo_commits("tester/tiny-vit-mixmatch-gradient-erk")[0].commit_id == \
        _summary(run_dir)["v1"]["commit"]


def test_search_and_download_errors_are_wrapped(hub_server, run_dir, tmp_path):
    hub.push_run(run_dir, namespace="tester", only_pareto=True)
    hub_server.faults.fail("GET", r"^/api/models$", status=500, times=6)  # more than the client's retries
    with pytest.raises(HubError, match="HTTP 500 after retries"):
        hub.list_pruned(BASE)
    assert len(hub_server.requests("GET", r"^/api/models$")) == 6
    hub_server.faults.fail("GET", r"^/api/models$", status=500, times=2)  # a short burst is absorbed
    assert len(hub.list_pruned(BASE)) == 2
    with pytest.raises(ConfigError, match="sort"):
        hub.list_pruned(BASE, sort="downloads")
    hub_server.repo("tester/tiny-vit-mixmatch-magnitude-uniform").private = True
    with pytest.raises(HubError, match="not found or not accessible"):
        hub.download("tester/tiny-vit-mixmatch-magnitude-uniform", token=hub_server.other_token,
                     local_dir=tmp_path / "x")


def test_missing_variant_folder_is_a_config_error(hub_server, run_dir):
    import shutil

    shutil.rmtree(run_dir / "variants" / "v1")
    with pytest.raises(ConfigError, match="variant folder"):
        hub.push_run(run_dir, namespace="tester")
    assert hub_server.repo_ids() == []
