"""Loading refuses what is unsafe or broken, with one line naming the fix: pickle-only weights (local and Hub),
remote code, weights that would be randomly initialised, hostile model folders."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_tiny_transformers, tiny_transformers
from hub_server import hub_server  # noqa: F401
from safetensors.torch import load_file, save_file
from test_adapters import _timm_folder

from hf_mixmatch.errors import ModelLoadError, UnsafeWeightsError
from hf_mixmatch.models import load_model


@pytest.mark.parametrize("library", ["transformers", "timm"])
def test_pickle_only_folders_are_refused(tmp_path, library):
    folder = tmp_path / "m"
    if library == "transformers":
        model = tiny_transformers("vit")
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        _timm_folder(folder)
        (folder / "model.safetensors").rename(folder / "model.pth")
    with pytest.raises(UnsafeWeightsError, match="convert to safetensors"):
        load_model(folder)


def test_cli_one_line_for_a_pickle_only_model(tmp_path, image_dataset, capsys):
    from hf_mixmatch.cli import main

    folder = tmp_path / "m"
    tiny_transformers("vit").config.save_pretrained(folder)
    torch.save({}, folder / "pytorch_model.bin")
    code = main(["prune", str(folder), "--dataset", str(image_dataset), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("hf-mixmatch: error:") and "\n" not in err and "convert to safetensors" in err


def test_remote_code_is_never_run(tmp_path):
    folder = save_tiny_transformers(tmp_path / "v", "vit")
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    cfg = json.loads((folder / "config.json").read_text())
    # a known model type with an auto_map: loaded with the built-in class, the custom file never imported
    cfg["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    assert load_model(folder).num_labels == 4 and not marker.exists()
    # an unknown model type needs its custom code: refused with one line
    cfg["model_type"] = "evil-net"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="custom code .*never runs"):
        load_model(folder)
    assert not marker.exists()


def test_newly_initialised_weights_are_refused(tmp_path):
    folder = save_tiny_transformers(tmp_path / "v", "vit")
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("classifier.")}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="randomly initialised"):
        load_model(folder)
    _timm_folder(tmp_path / "t")
    state = load_file(str(tmp_path / "t" / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("fc.")}, str(tmp_path / "t" / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="randomly initialised"):
        load_model(tmp_path / "t")


def test_broken_config_is_one_line(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(tmp_path / "m")


def test_hub_base_model_safe_files_only(hub_server, tmp_path):
    from huggingface_hub import HfApi

    folder = save_tiny_transformers(tmp_path / "v", "vit")
    torch.save({"w": torch.zeros(1)}, folder / "stray.bin")  # a pickle beside safetensors: never downloaded
    api = HfApi(endpoint=hub_server.endpoint)
    api.create_repo("tester/vit")
    api.upload_folder(repo_id="tester/vit", folder_path=str(folder))
    loaded = load_model("tester/vit")
    assert loaded.library == "transformers" and loaded.source == "tester/vit" and loaded.revision
    assert not list(__import__("pathlib").Path(loaded.source_dir).glob("*.bin"))
    x = loaded.preprocess([torch.zeros(20, 30, 3, dtype=torch.uint8).numpy()])
    assert x.shape == (1, 3, 16, 16)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    tiny_transformers("vit").config.save_pretrained(pickled)
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    api.create_repo("tester/pickled")
    api.upload_folder(repo_id="tester/pickled", folder_path=str(pickled))
    with pytest.raises(UnsafeWeightsError, match="pytorch_model.bin.*convert to safetensors"):
        load_model("tester/pickled")


def _hostile(tmp_path, case):
    folder = tmp_path / "m"
    if case in ("vit-broken-processor", "timm-wrong-head"):
        if case == "vit-broken-processor":
            save_tiny_transformers(folder, "vit")
            (folder / "preprocessor_config.json").write_text("{broken")
        else:
            _timm_folder(folder)
            cfg = json.loads((folder / "config.json").read_text())
            cfg["num_classes"] = 7
            cfg["model_args"]["num_classes"] = 7
            (folder / "config.json").write_text(json.dumps(cfg))
        return folder
    folder.mkdir()
    config = {"list-config": [1, 2], "unknown-timm-arch": {"architecture": "no_such_net_xyz"},
              "no-weights": {"model_type": "vit"}, "unknown-layout": {"hello": 1},
              "plain-torch": {"library": "torch", "class": "Net"}}[case]
    (folder / "config.json").write_text(json.dumps(config))
    if case != "no-weights":
        save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("case,message", [
    ("list-config", "no JSON object"),
    ("unknown-timm-arch", "timm cannot build 'no_such_net_xyz'"),
    ("no-weights", "has no model.safetensors"),
    ("unknown-layout", "recognises"),
    ("plain-torch", "cannot be rebuilt from its folder"),
    ("vit-broken-processor", "cannot build the image processor"),
    ("timm-wrong-head", "do not fit the model"),
])
def test_hostile_model_folders_give_one_line(tmp_path, image_dataset, capsys, case, message):
    from hf_mixmatch.cli import main

    folder = _hostile(tmp_path, case)
    with pytest.raises(ModelLoadError, match=message):
        load_model(folder)
    capsys.readouterr()
    code = main(["prune", str(folder), "--dataset", str(image_dataset), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("hf-mixmatch: error:") and "\n" not in err and message.split("'")[0] in err
