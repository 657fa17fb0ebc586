import pytest
import torch
from conftest import tiny_timm, tiny_transformers
from torch import nn

from hf_mixmatch.layers import ROLES, list_prunable


def roles_by_name(model):
    return {layer.name: layer.role for layer in list_prunable(model)}


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("vit", {"vit.embeddings.patch_embeddings.projection": "patch_embed", "classifier": "classifier"}),
        ("swin", {"swin.embeddings.patch_embeddings.projection": "patch_embed", "classifier": "classifier",
                  "swin.encoder.layers.0.downsample.reduction": "patch_merging"}),
        ("resnet", {"resnet.embedder.embedder.convolution": "stem", "classifier.1": "classifier",
                    "resnet.encoder.stages.1.layers.0.shortcut.convolution": "downsample"}),
        ("convnext", {"convnext.embeddings.patch_embeddings": "patch_embed", "classifier": "classifier",
                      "convnext.encoder.stages.0.layers.0.dwconv": "depthwise"}),
    ],
)
def test_transformers_roles(kind, expected):
    roles = roles_by_name(tiny_transformers(kind))
    for name, role in expected.items():
        assert roles[name] == role
    assert set(roles.values()) <= set(ROLES)


def test_vit_and_swin_attention_and_mlp_roles():
    for kind in ("vit", "swin"):
        roles = list(roles_by_name(tiny_transformers(kind)).values())
        assert roles.count("attn_qkv") == 3 * roles.count("attn_proj") > 0
        assert roles.count("mlp_up") == roles.count("mlp_down") > 0


def test_stages():
    layers = list_prunable(tiny_transformers("swin"))
    stage = {layer.name: layer.stage for layer in layers}
    assert stage["swin.encoder.layers.1.blocks.0.mlp.fc1"] == 1
    assert stage["swin.encoder.layers.0.blocks.0.mlp.fc1"] == 0
    assert stage["classifier"] == 1
    vit = {layer.name: layer.stage for layer in list_prunable(tiny_transformers("vit"))}
    assert vit["vit.layers.0.mlp.fc1"] < vit["vit.layers.1.mlp.fc1"] <= 3


def test_timm_roles():
    r = roles_by_name(tiny_timm("resnet18"))
    assert r["conv1"] == "stem" and r["fc"] == "classifier" and r["layer2.0.downsample.0"] == "downsample"
    v = roles_by_name(tiny_timm("vit_tiny_patch16_224"))
    assert v["patch_embed.proj"] == "patch_embed" and v["blocks.0.attn.qkv"] == "attn_qkv"
    assert v["blocks.1.mlp.fc2"] == "mlp_down" and v["head"] == "classifier"


def test_never_norms_biases_position_tables_or_tokens():
    model = tiny_transformers("vit")
    names = {layer.param_name for layer in list_prunable(model)}
    weight_params = {n for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() >= 2}
    assert names == weight_params  # every >=2-D weight here is a Conv/Linear weight
    assert not any("norm" in n or "position" in n or "cls_token" in n or n.endswith(".bias") for n in names)
    swin = tiny_transformers("swin")
    assert not any("relative_position" in layer.name for layer in list_prunable(swin))
    assert any("relative_position_bias_table" in n for n, _ in swin.named_parameters())


def test_transformers_conv1d_is_listed_with_its_transposed_weight():
    from transformers.pytorch_utils import Conv1D

    model = nn.Sequential(Conv1D(8, 4), nn.ReLU(), nn.Linear(8, 3))
    layers = list_prunable(model, num_labels=3)
    assert layers[0].kind == "conv1d_t" and layers[0].shape == (4, 8)
    assert layers[1].role == "classifier"


def test_layerinfo_roundtrip():
    from hf_mixmatch.layers import LayerInfo

    layer = list_prunable(tiny_transformers("resnet"))[0]
    assert LayerInfo.from_dict(layer.to_dict()) == layer
    assert isinstance(torch.zeros(layer.shape), torch.Tensor)
