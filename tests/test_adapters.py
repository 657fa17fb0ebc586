"""One adapter per library: routing (timm_wrapper to transformers), logits from any output type, label names,
saving and rebuilding (timm model_args survive). Safe loading: tests/test_adapters_safety.py."""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict

import pytest
import torch
from conftest import save_tiny_transformers, tiny_transformers
from torch import nn

from hf_mixmatch.adapters import adapter_for_config, adapter_for_module, get_adapter
from hf_mixmatch.errors import ModelLoadError
from hf_mixmatch.models import Preprocess, load_model, logits


def _timm_folder(path, arch="resnet18", num_classes=3, model_args=None, label_names=None, **pcfg):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **(model_args or {}))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 0.875, **pcfg}
    save_for_hf(model, str(path), model_args=model_args, safe_serialization=True,
                model_config={"label_names": label_names} if label_names else None)
    return model


@pytest.mark.parametrize("cfg,name", [
    ({"model_type": "vit", "architectures": ["ViTForImageClassification"]}, "transformers"),
    ({"architecture": "resnet18", "model_type": "timm_wrapper"}, "transformers"),  # timm_wrapper is transformers
    ({"architecture": "resnet18", "pretrained_cfg": {}}, "timm"),
    ({"library": "torch", "class": "Net"}, "torch"),
    ({"_hfmm_library": "timm", "model_type": "x"}, "timm"),  # a structured folder names its library
])
def test_config_routing(cfg, name):
    assert adapter_for_config(cfg).name == name


def test_module_routing_and_unknown_config():
    import timm

    assert adapter_for_module(tiny_transformers("vit")).name == "transformers"
    assert adapter_for_module(timm.create_model("resnet18", pretrained=False, layers=(1, 1, 1, 1))).name == "timm"
    assert adapter_for_module(nn.Linear(2, 2)).name == "torch"
    with pytest.raises(ModelLoadError, match="recognises"):
        adapter_for_config({"hello": 1})
    with pytest.raises(ModelLoadError, match="no adapter named"):
        get_adapter("keras")


def test_timm_wrapper_folder_loads_through_transformers(tmp_path):
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(0)
    cfg = TimmWrapperConfig(architecture="resnet18", num_labels=3, model_args={"layers": [1, 1, 1, 1]},
                            id2label={0: "a", 1: "b", 2: "c"})
    model = TimmWrapperForImageClassification(cfg).eval()
    model.save_pretrained(tmp_path / "w")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no processor file: timm's eval transform of the inner model, no fallback
        loaded = load_model(tmp_path / "w")
    assert loaded.library == "transformers" and loaded.num_labels == 3 and loaded.id2label == {0: "a", 1: "b", 2: "c"}
    assert loaded.preprocess.key == get_adapter("timm").transform(model.timm_model, None).key
    x = loaded.preprocess([torch.zeros(40, 60, 3, dtype=torch.uint8).numpy()])
    with torch.no_grad():
        assert torch.allclose(logits(loaded.model, x), model(x).logits)


class _Returns(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.lin = kind, nn.Linear(4, 3)

    def forward(self, x):
        y = self.lin(x)
        from transformers.modeling_outputs import ImageClassifierOutput

        return {"tensor": y, "tuple": (y, x), "list": [y], "dict": {"logits": y, "other": x},
                "plain_dict": OrderedDict(out=y), "output": ImageClassifierOutput(logits=y),
                "nested": ((y,), x)}[self.kind]


@pytest.mark.parametrize("kind", ["tensor", "tuple", "list", "dict", "plain_dict", "output", "nested"])
def test_logits_from_any_output(kind):
    model = _Returns(kind)
    x = torch.randn(2, 4)
    assert torch.equal(logits(model, x), model.lin(x))


def test_logits_refuses_outputs_without_a_tensor():
    class Odd(nn.Module):
        def forward(self, x):
            return {"label": "cat"}

    with pytest.raises(ModelLoadError, match="no logits tensor"):
        logits(Odd(), torch.zeros(1))


def test_label_names_and_license(tmp_path):
    _timm_folder(tmp_path / "t", label_names=["cat", "dog", "eel"], license="mit")
    loaded = load_model(tmp_path / "t")
    assert loaded.id2label == {0: "cat", 1: "dog", 2: "eel"} and loaded.license == "mit"
    vit = load_model(save_tiny_transformers(tmp_path / "v", "vit"))
    assert vit.id2label == {i: f"LABEL_{i}" for i in range(4)}


def test_transformers_save_keeps_the_processor_file(tmp_path):
    folder = save_tiny_transformers(tmp_path / "v", "vit")
    text = (folder / "preprocessor_config.json").read_text()
    loaded = load_model(folder)
    loaded.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "preprocessor_config.json").read_text() == text
    assert not list((tmp_path / "out").glob("*.bin"))
    # a manual override is what the variant was measured with: that is what gets written
    pre = Preprocess(size=(16, 16), resize=(20, 20), mean=(0.1,) * 3, std=(0.2,) * 3)
    load_model(folder, preprocess=pre).save_pretrained(tmp_path / "over")
    again = load_model(tmp_path / "over")
    photo = [torch.randint(0, 255, (30, 50, 3), dtype=torch.uint8).numpy()]
    assert torch.allclose(again.preprocess(photo), pre(photo), atol=1e-4)


def test_timm_model_args_survive_save_and_reload(tmp_path):
    import timm

    args = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "global_pool": "max"}
    original = _timm_folder(tmp_path / "t", model_args=args).eval()
    loaded = load_model(tmp_path / "t")
    loaded.save_pretrained(tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["model_args"]["channels"] == [16, 32, 64, 128] and cfg["model_args"]["global_pool"] == "max"
    back = timm.create_model(f"local-dir:{tmp_path / 'saved'}", pretrained=True).eval()  # timm's own loader
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), original(x)) and torch.equal(load_model(tmp_path / "saved").model(x), original(x))
    assert back.pretrained_cfg["crop_pct"] == 0.875


def test_structured_model_from_timm_with_model_args_reloads(tmp_path):
    from hf_mixmatch.structured import describe_base, find_groups, load_structured, prune_physical, save_structured

    args = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}
    _timm_folder(tmp_path / "t", model_args=args)
    model = load_model(tmp_path / "t").model
    x = torch.rand(1, 3, 32, 32)
    plan = find_groups(model, x)
    removed = {g.index: list(range(0, g.size, 2)) for g in plan.prunable}
    pruned, part = prune_physical(model, plan, removed)
    out = save_structured(pruned, {"example_shape": [1, 3, 32, 32], **part}, describe_base(model), tmp_path / "s")
    back = load_structured(out)
    with torch.no_grad():
        assert torch.equal(back(x), pruned(x))


def test_in_memory_timm_model_keeps_its_constructor_args(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3, layers=(1, 1, 1, 1), global_pool="max")
    loaded = load_model(model.eval())  # a timm module brings its own preprocessing (pretrained_cfg)
    assert loaded.library == "timm" and loaded.preprocess.input_size == (3, 224, 224)
    loaded.save_pretrained(tmp_path / "s")
    back = timm.create_model(f"local-dir:{tmp_path / 's'}", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert json.loads((tmp_path / "s" / "config.json").read_text())["model_args"]["global_pool"] == "max"


def test_logits_of_a_classifier_whose_output_has_no_logits_field():
    # transformers' PP-LCNet classifier returns its class scores as the output's only tensor
    from transformers import AutoConfig, AutoModelForImageClassification

    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(AutoConfig.for_model("pp_lcnet", num_labels=3)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        assert getattr(out, "logits", None) is None
        assert logits(model, x).shape == (2, 3)


def test_timm_save_warns_when_a_manual_preprocess_was_used(tmp_path):
    _timm_folder(tmp_path / "t")
    pre = Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.warns(UserWarning, match="manual Preprocess"):
        load_model(tmp_path / "t", preprocess=pre).save_pretrained(tmp_path / "s")
    assert load_model(tmp_path / "s").preprocess.key == load_model(tmp_path / "t").preprocess.key
