"""Push survives the Hub: faults injected on every endpoint of the local Hub server, lost commit responses, two
runs on the same base model, and search that refuses claims that are not numbers."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import HfApi
from test_hub import _card, _summary, run_dir  # noqa: F401 - the run fixture of the push tests

from hf_mixmatch import hub
from hf_mixmatch.errors import HubError

REPO = r"tester/tiny-vit-mixmatch-[^/]+"
ENDPOINTS = [  # (method, path pattern, status): every request a push makes, each with one transient answer
    ("GET", rf"^/api/models/{REPO}$", 500),  # repo_info
    ("POST", r"^/api/repos/create$", 502),  # create_repo
    ("POST", r"/preupload/main$", 503),  # preupload
    ("POST", r"\.git/info/lfs/objects/batch$", 429),  # LFS batch
    ("PUT", r"^/_lfs/upload/", 503),  # LFS upload
    ("POST", r"^/_lfs/verify/", 500),  # LFS verify
    ("POST", r"/commit/main$", 429),  # commit
    ("POST", r"/commit/main$", 502),
]


@pytest.mark.parametrize("method, pattern, status", ENDPOINTS, ids=[f"{p}-{s}" for _, p, s in ENDPOINTS])
def test_transient_faults_on_every_endpoint_are_retried(hub_server, run_dir, method, pattern, status):
    hub_server.faults.fail(method, pattern, status=status, times=2)
    records = hub.push_run(run_dir, namespace="tester", only_pareto=True)
    assert [r.status for r in records] == ["pushed", "pushed"]
    assert hub_server.faults.pending() == 0  # both faults were met, and absorbed
    assert all(len(hub_server.commits(r.repo_id)) == 2 for r in records)  # one commit each, no duplicates


def test_repo_info_of_an_existing_repo_and_its_commit_list_are_retried(hub_server, run_dir):
    hub.push_run(run_dir, namespace="tester", only_pareto=True)
    hub_server.faults.fail("GET", r"/commits/main$", status=503, times=2)
    hub_server.faults.fail("GET", rf"^/api/models/{REPO}$", status=500, times=2)
    assert [r.status for r in hub.push_run(run_dir, namespace="tester", only_pareto=True)] == ["unchanged"] * 2
    assert hub_server.faults.pending() == 0


def test_a_persistent_fault_fails_with_the_real_attempt_count_and_a_rerun_completes(hub_server, run_dir):
    hub_server.faults.fail("POST", r"/commit/main$", status=503, times=hub.RETRY_ATTEMPTS)
    with pytest.raises(HubError) as err:
        hub.push_run(run_dir, namespace="tester", only_pareto=True)
    msg = str(err.value)
    assert "\n" not in msg and f"on all {hub.RETRY_ATTEMPTS} attempts" in msg and "503" in msg
    assert len(hub_server.requests("POST", r"/commit/main$")) == hub.RETRY_ATTEMPTS + 1  # v0: 5 failed; v2: 1 ok
    assert {k: v["status"] for k, v in _summary(run_dir).items()} == {"v0": "failed", "v2": "pushed"}
    assert [r.status for r in hub.push_run(run_dir, namespace="tester", only_pareto=True)] == ["pushed", "unchanged"]


def _lose_commit_responses(monkeypatch, times: int):
    """The commit reaches the Hub, but its response does not reach the client (``times`` calls)."""
    real = HfApi.create_commit
    left = {"n": times}

    def create_commit(self, *a, **k):
        info = real(self, *a, **k)
        if left["n"] > 0:
            left["n"] -= 1
            raise ConnectionError("connection reset while reading the response")
        return info

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return real


def test_a_lost_commit_response_is_recognised_within_the_push(hub_server, run_dir, monkeypatch):
    _lose_commit_responses(monkeypatch, times=1)
    records = hub.push_run(run_dir, namespace="tester", only_pareto=True)
    assert [r.status for r in records] == ["pushed", "pushed"]
    assert all(len(hub_server.commits(r.repo_id)) == 2 for r in records)  # the retry made no second commit
    assert records[0].commit == hub_server.head(records[0].repo_id)


def test_a_lost_commit_response_is_recognised_on_the_next_run(hub_server, run_dir, monkeypatch):
    real = _lose_commit_responses(monkeypatch, times=hub.RETRY_ATTEMPTS)
    with pytest.raises(HubError, match="network error"):
        hub.push_run(run_dir, namespace="tester", only_pareto=True)
    summary = _summary(run_dir)
    assert summary["v0"]["status"] == "failed" and summary["v0"]["commit"] is None
    repo = summary["v0"]["repo_id"]
    assert len(hub_server.commits(repo)) == 2  # it did land
    monkeypatch.setattr(HfApi, "create_commit", real)
    records = {r.variant_id: r for r in hub.push_run(run_dir, namespace="tester", only_pareto=True)}
    assert records["v0"].status == "pushed" and records["v0"].commit == hub_server.head(repo)
    assert len(hub_server.commits(repo)) == 2


def _second_run(run_dir, tmp_path, run_id: str):
    other = tmp_path / f"run_{run_id}"
    shutil.copytree(run_dir, other)
    results = json.loads((other / "results.json").read_text())
    results["run_id"] = run_id
    (other / "results.json").write_text(json.dumps(results))
    return other


def test_two_runs_on_one_base_model_get_their_own_repos(hub_server, run_dir, tmp_path):
    a, b = _second_run(run_dir, tmp_path, "aaaa1111"), _second_run(run_dir, tmp_path, "bbbb2222")
    ra = hub.push_run(a, namespace="tester", only_pareto=True)
    rb = hub.push_run(b, namespace="tester", only_pareto=True)
    assert all("aaaa1111" in r.repo_id for r in ra) and all("bbbb2222" in r.repo_id for r in rb)
    assert {r.repo_id for r in ra}.isdisjoint({r.repo_id for r in rb})


def test_pushing_over_another_runs_repo_needs_force(hub_server, run_dir, tmp_path):
    a, b = _second_run(run_dir, tmp_path, "aaaa1111"), _second_run(run_dir, tmp_path, "bbbb2222")
    first = hub.push_run(a, namespace="tester", only_pareto=True, repo_prefix="shared")
    assert [r.repo_id for r in first] == ["tester/shared-magnitude-uniform", "tester/shared-hybrid-uniform-plus"]
    heads = {r.repo_id: hub_server.head(r.repo_id) for r in first}
    with pytest.raises(HubError, match="--force"):
        hub.push_run(b, namespace="tester", only_pareto=True, repo_prefix="shared")
    assert {r: hub_server.head(r) for r in heads} == heads  # nothing of run a was overwritten
    assert [r.status for r in hub.push_run(a, namespace="tester", only_pareto=True, repo_prefix="shared")] == \
        ["unchanged"] * 2  # the run that wrote them may push again
    forced = hub.push_run(b, namespace="tester", only_pareto=True, repo_prefix="shared", force=True)
    assert [r.status for r in forced] == ["unchanged"] * 2  # same files: forced, but nothing to change


def test_push_refuses_folders_and_links_outside_the_run(hub_server, run_dir, tmp_path):
    results = json.loads((run_dir / "results.json").read_text())
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.txt").write_text("secret")
    (run_dir / "variants" / "v0" / "leak.txt").symlink_to(tmp_path / "private" / "secret.txt")
    with pytest.raises(Exception, match="outside"):
        hub.push_run(run_dir, namespace="tester")
    (run_dir / "variants" / "v0" / "leak.txt").unlink()
    results["variants"][1]["path"] = str(tmp_path / "private")
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(Exception, match="outside"):
        hub.push_run(run_dir, namespace="tester")
    assert hub_server.repo_ids() == []


BAD_CLAIMS = [("nan", float("nan"), 0.9), ("inf", float("inf"), 0.9), ("big", 1.5, 0.9), ("neg", -0.1, 0.9),
              ("text", "lots", 0.9), ("acc", 0.95, 2.0), ("accnan", 0.95, float("nan"))]


def test_search_skips_and_counts_claims_that_are_not_numbers(hub_server, capsys):
    def seed(name, sparsity, accuracy):
        card = _card({"id": name, "signal": "magnitude", "strategy": "uniform", "sparsity": sparsity,
                      "accuracy": accuracy, "top5": None}, "d/x")
        hub_server.add_repo(f"tester/{name}", {"README.md": card.encode(), "model.safetensors": b"\0" * 16})

    for name, sparsity, accuracy in BAD_CLAIMS:
        seed(name, sparsity, accuracy)
    seed("good", 0.95, 0.5)
    found, skipped = hub.search_pruned(min_sparsity=0.9)
    assert [f.repo_id for f in found] == ["tester/good"]
    assert sorted(skipped) == sorted(f"tester/{n}" for n, _, _ in BAD_CLAIMS)
    from hf_mixmatch.cli import main

    assert main(["search", "--min-sparsity", "0.9"]) == 0
    out, err = capsys.readouterr()
    assert "tester/good" in out and "tester/nan" not in out and f"skipped {len(BAD_CLAIMS)} repo(s)" in err
