"""The local Hub server, exercised through the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file

README = """---
base_model: org/base-net
base_model_relation: finetune
library_name: transformers
pipeline_tag: image-classification
tags:
- pruned
- hf-mixmatch
---
# a card
"""


def _folder(tmp_path, readme=README, seed=0):
    folder = tmp_path / f"variant{seed}"
    folder.mkdir()
    g = torch.Generator().manual_seed(seed)
    save_file({"w": torch.randn(64, 64, generator=g)}, str(folder / "model.safetensors"))
    (folder / "README.md").write_text(readme)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    return folder


@pytest.fixture
def api(hub_server):
    return HfApi(endpoint=hub_server.endpoint)


def test_whoami_checks_token(hub_server, api):
    assert api.whoami()["name"] == "tester"
    assert api.whoami(token=hub_server.other_token)["name"] == "someone-else"
    with pytest.raises(HfHubHTTPError) as err:
        api.whoami(token="hf_wrong")
    assert err.value.response.status_code == 401


def test_create_repo_exist_ok_and_409(hub_server, api):
    url = api.create_repo("tester/net")
    assert url.repo_id == "tester/net" and url.endpoint == hub_server.endpoint
    first = hub_server.commits("tester/net")
    assert len(first) == 1 and len(first[0]) == 40
    api.create_repo("tester/net", exist_ok=True)
    assert hub_server.commits("tester/net") == first
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("tester/net")
    assert err.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as err:  # not the user's namespace
        api.create_repo("someone-else/net")
    assert err.value.response.status_code == 403
    api.create_repo("mixmatch-org/net")  # an org the user belongs to
    assert hub_server.repo_ids() == ["mixmatch-org/net", "tester/net"]


def test_upload_folder_lfs_and_regular_paths_and_noop(hub_server, api, tmp_path):
    folder = _folder(tmp_path)
    api.create_repo("tester/net")
    info = api.upload_folder(repo_id="tester/net", folder_path=folder, commit_message="v1")
    assert info.oid == hub_server.head("tester/net") and len(hub_server.commits("tester/net")) == 2
    weights = (folder / "model.safetensors").read_bytes()
    stored = hub_server.entry("tester/net", "model.safetensors")
    assert stored.sha256 == hashlib.sha256(weights).hexdigest() and stored.content == weights  # LFS path
    assert hub_server.entry("tester/net", "README.md").sha256 is None  # regular path
    assert len(hub_server.requests("PUT", r"^/_lfs/upload/")) == 1
    assert len(hub_server.requests("POST", r"lfs/objects/batch")) == 1

    again = api.upload_folder(repo_id="tester/net", folder_path=folder, commit_message="v1 again")
    assert again.oid == info.oid and len(hub_server.commits("tester/net")) == 2
    assert len(hub_server.requests("PUT", r"^/_lfs/upload/")) == 1  # nothing re-uploaded

    (folder / "config.json").write_text('{"seed": 1}')
    third = api.upload_folder(repo_id="tester/net", folder_path=folder, commit_message="v2")
    assert third.oid != info.oid and len(hub_server.commits("tester/net")) == 3
    # the old revision keeps its tree
    assert hub_server.files("tester/net", info.oid)["config.json"] == b'{"seed": 0}'
    assert len(hub_server.requests("PUT", r"^/_lfs/upload/")) == 1  # unchanged LFS file not re-sent
    assert [c.commit_id for c in api.list_repo_commits("tester/net")] == hub_server.commits("tester/net")


def test_parent_commit_mismatch_is_412(hub_server, api, tmp_path):
    folder = _folder(tmp_path)
    api.create_repo("tester/net")
    first = hub_server.head("tester/net")
    api.upload_folder(repo_id="tester/net", folder_path=folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(repo_id="tester/net", folder_path=folder, parent_commit=first)
    assert err.value.response.status_code == 412


def test_invalid_card_is_rejected_by_validate_yaml(hub_server, api, tmp_path):
    folder = _folder(tmp_path, readme="---\nbase_model_relation: pruned\n---\nbody\n")
    api.create_repo("tester/net")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_folder(repo_id="tester/net", folder_path=folder)
    assert len(hub_server.commits("tester/net")) == 1


def test_download_round_trip_is_bit_identical(hub_server, api, tmp_path):
    folder = _folder(tmp_path)
    api.create_repo("tester/net")
    sha = api.upload_folder(repo_id="tester/net", folder_path=folder).oid
    path = hf_hub_download("tester/net", "model.safetensors", cache_dir=tmp_path / "cache")
    assert open(path, "rb").read() == (folder / "model.safetensors").read_bytes()
    assert f"snapshots/{sha}" in path
    snap = snapshot_download("tester/net", local_dir=tmp_path / "snap")
    for name in ("model.safetensors", "README.md", "config.json"):
        assert (tmp_path / "snap" / name).read_bytes() == (folder / name).read_bytes()
    info = api.model_info("tester/net", files_metadata=True)
    assert info.sha == sha and {s.rfilename for s in info.siblings} == {
        ".gitattributes", "README.md", "config.json", "model.safetensors"}
    assert next(s for s in info.siblings if s.rfilename == "model.safetensors").lfs.sha256 == \
        hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert info.card_data.base_model == "org/base-net"
    assert str(snap) == str(tmp_path / "snap")


def test_list_models_filters_on_tags_and_base_model(hub_server, api, tmp_path):
    api.create_repo("tester/a")
    api.upload_folder(repo_id="tester/a", folder_path=_folder(tmp_path, seed=1))
    other = README.replace("org/base-net", "org/other-net").replace("- hf-mixmatch\n", "")
    api.create_repo("mixmatch-org/b")
    api.upload_folder(repo_id="mixmatch-org/b", folder_path=_folder(tmp_path, readme=other, seed=2))

    def ids(**kw):
        return sorted(m.id for m in api.list_models(**kw))

    assert ids(filter=["hf-mixmatch"]) == ["tester/a"]
    assert ids(filter=["base_model:org/other-net"]) == ["mixmatch-org/b"]
    assert ids(filter=["base_model:finetune:org/base-net"]) == ["tester/a"]
    assert ids(filter=["hf-mixmatch", "base_model:org/other-net"]) == []
    assert ids(filter="transformers") == ["mixmatch-org/b", "tester/a"]
    assert ids(author="mixmatch-org") == ["mixmatch-org/b"]
    assert ids(search="r/A") == ["tester/a"]  # case-insensitive substring of the id
    assert len(list(api.list_models(limit=1))) == 1
    (model,) = api.list_models(filter="hf-mixmatch", cardData=True)
    assert model.card_data.base_model == "org/base-net" and "pruned" in model.tags


def test_list_models_paginates_with_link_header(hub_server, api):
    hub_server.page_size = hub_server._httpd.page_size = 2
    for i in range(5):
        api.create_repo(f"tester/m{i}")
    assert sorted(m.id for m in api.list_models(author="tester")) == [f"tester/m{i}" for i in range(5)]
    assert len(hub_server.requests("GET", r"^/api/models$")) == 3


def test_private_repo_is_hidden_without_the_owners_token(hub_server, api, tmp_path):
    api.create_repo("tester/secret", private=True)
    api.upload_folder(repo_id="tester/secret", folder_path=_folder(tmp_path))
    assert api.model_info("tester/secret").private is True
    for token in (False, hub_server.other_token):
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("tester/secret", token=token)
        assert [m.id for m in api.list_models(token=token)] == []
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("tester/secret", "config.json", token=token, cache_dir=tmp_path / "c")
    assert [m.id for m in api.list_models()] == ["tester/secret"]


def test_missing_things_map_to_client_errors(hub_server, api, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("tester/nope")
    api.create_repo("tester/net")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("tester/net", revision="nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/net", "missing.txt", cache_dir=tmp_path / "c")
    assert not api.file_exists("tester/net", "missing.txt")
    assert api.file_exists("tester/net", ".gitattributes")


def test_branches_refs_tree_and_paths_info(hub_server, api, tmp_path):
    api.create_repo("tester/net")
    sha = api.upload_folder(repo_id="tester/net", folder_path=_folder(tmp_path), path_in_repo="sub").oid
    api.create_branch("tester/net", branch="dev")
    refs = api.list_repo_refs("tester/net")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": sha, "dev": sha}
    assert sorted(api.list_repo_files("tester/net", revision="dev")) == [
        ".gitattributes", "sub/README.md", "sub/config.json", "sub/model.safetensors"]
    top = {e.path for e in api.list_repo_tree("tester/net")}
    assert top == {".gitattributes", "sub"}
    (info,) = api.get_paths_info("tester/net", ["sub/model.safetensors"])
    assert info.lfs is not None and info.size == (tmp_path / "variant0" / "model.safetensors").stat().st_size
    api.delete_repo("tester/net")
    assert hub_server.repo_ids() == []


def test_5xx_burst_is_recovered_by_client_retries(hub_server, api, tmp_path):
    api.create_repo("tester/net")
    hub_server.faults.fail("POST", r"/preupload/", status=503, times=3)
    hub_server.faults.fail("PUT", r"^/_lfs/upload/", status=500, times=2)
    api.upload_folder(repo_id="tester/net", folder_path=_folder(tmp_path))
    assert hub_server.faults.pending() == 0
    assert [r[2] for r in hub_server.requests("POST", r"/preupload/")] == [503, 503, 503, 200]
    assert [r[2] for r in hub_server.requests("PUT", r"^/_lfs/upload/")] == [500, 500, 200]
    assert len(hub_server.commits("tester/net")) == 2


def test_dropped_upload_fails_clearly_then_rerun_succeeds(hub_server, api, tmp_path):
    folder = _folder(tmp_path)
    api.create_repo("tester/net")
    hub_server.faults.drop_upload(times=6, after_bytes=100)  # more than the client's 5 retries
    with pytest.raises(Exception) as err:
        api.upload_folder(repo_id="tester/net", folder_path=folder)
    assert "Error while uploading" in str(err.value) or "disconnected" in str(err.value).lower()
    assert len(hub_server.commits("tester/net")) == 1  # nothing committed
    assert hub_server.repo("tester/net").lfs == {}
    api.upload_folder(repo_id="tester/net", folder_path=folder)
    assert hub_server.files("tester/net")["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_upload_with_wrong_sha256_is_refused(hub_server, api, tmp_path):
    api.create_repo("tester/net")
    batch = hub_server.endpoint + "/tester/net.git/info/lfs/objects/batch"
    from huggingface_hub.utils import get_session

    oid = hashlib.sha256(b"hello").hexdigest()
    resp = get_session().post(batch, json={"operation": "upload", "transfers": ["basic"], "objects": [
        {"oid": oid, "size": 5}], "hash_algo": "sha256"}, headers={
        "Accept": "application/vnd.git-lfs+json", "Authorization": f"Bearer {hub_server.token}"})
    href = resp.json()["objects"][0]["actions"]["upload"]["href"]
    assert get_session().put(href, content=b"hellO").status_code == 400
    assert get_session().put(href.replace("sig=", "sig=x"), content=b"hello").status_code == 403
    assert get_session().put(href, content=b"hello").status_code == 200
    assert hub_server.repo("tester/net").lfs == {oid: b"hello"}
