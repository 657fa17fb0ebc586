"""Calibration statistics and reconstruction on every architecture of the zoo, and the pitfalls found there:
weights used through ``F.linear`` outside their module (timm's SwinV2 and EVA attention), convolutions that pad
their input in forward (timm's ``Conv2dSame`` of the ``tf_*`` models, Perceiver), modules that cache tensors
computed with gradients (LeViT's attention biases), which ``copy.deepcopy`` refuses, and weight-standardized
convolutions, whose stored zeros are not zeros of the weight they compute with."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_data import photo_batch
from zoo_models import NUM_LABELS, ZOO, build

from hf_mixmatch.activations import accumulate_hessians, feature_sq_norms, forward_groups
from hf_mixmatch.adapters import copy_model, extract_logits
from hf_mixmatch.layers import LayerInfo, get_weight, list_prunable, not_applied_as_stored, used_by_forward
from hf_mixmatch.masks import prune_count
from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct

CASES = [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in ZOO]
SPARSITY = 0.7
# classes that compute with a standardized copy of their stored weight: the expected findings of the zoo
# (Perceiver's Conv2dSamePadding also differs from the plain op of its attributes, but pads, and computes with
# the stored weight: not one of them)
NOT_PLAIN = ("WeightStandardizedConv2d", "ScaledStdConv2d", "StdConv2d")
MAX_COLUMNS = 8192  # layers with more input features stay dense here: vgg11's 7x7 conv over 512 channels has
# 25,088, a 5 GB float64 Hessian and minutes of factorizing on one core (reconstruct() itself has no such limit)


def _columns(model, layer) -> int:
    weight = get_weight(model, layer)
    return weight.shape[0] if layer.kind == "conv1d_t" else weight[0].numel()


def _live_init(model: nn.Module, x: torch.Tensor) -> None:
    """No zero-initialized weights, scales or gains (timm zero-initializes the last BatchNorm or conv of residual
    blocks, NFNet's gains) and BatchNorm statistics of these photos (a random init's unit running variance lets
    activations vanish through transformers' EfficientNet): otherwise whole blocks see zero inputs, nothing to
    test."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() and not bool(p.any()) and not name.endswith("bias"):
                if p.dim() >= 2:
                    p.normal_(0.0, p[0].numel() ** -0.5)
                else:
                    p.fill_(1.0)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one batch sets the statistics
    if norms:
        model.train()
        with torch.no_grad():
            model(x)
    model.eval()


@pytest.mark.parametrize("case", CASES)
def test_every_used_layer_gets_statistics_and_is_reconstructed(case):
    """Real photo crops through each architecture: every layer the forward uses has non-zero input statistics
    (Wanda's norms), is reconstructed (none left to plain masking), loses exactly its count with its pruned
    weights exactly zero, and the model still gives finite logits. The inventory's gradient forward runs first,
    as scoring does in a run (it fills caches such as LeViT's)."""
    torch.manual_seed(0)
    model = build(case)
    x = photo_batch(case.size, 6)
    _live_init(model, x)
    layers = used_by_forward(model, list_prunable(model, num_labels=NUM_LABELS), x[:2])
    # found numerically (each layer's output against its stored weight applied plainly to its input, and the
    # stored weight reaching a conv/linear op or not), exactly the weight-standardizing layers
    expected = [layer.name for layer in layers if type(model.get_submodule(layer.name)).__name__ in NOT_PLAIN]
    assert not_applied_as_stored(model, layers, x[:2]) == expected
    norms = feature_sq_norms(model, layers, x, batch_size=3)
    assert [layer.name for layer in layers if not float(norms[layer.name].sum()) > 0] == []

    sparsities = {layer.name: SPARSITY if _columns(model, layer) <= MAX_COLUMNS else 0.0 for layer in layers}
    out = reconstruct(model, layers, sparsities, x, settings=ReconstructSettings(batch_size=3))
    assert out["masked_only"] == []
    for layer in layers:
        weight, keep = get_weight(model, layer), out["masks"][layer.name]
        assert int((~keep).sum()) == prune_count(sparsities[layer.name], weight.numel()), layer.name
        assert not bool(weight[~keep].any()), layer.name
    with torch.no_grad():
        assert torch.isfinite(extract_logits(model(x))).all()


class FunctionalQKV(nn.Module):
    """timm's SwinV2 / EVA pattern: the qkv weight is used through F.linear with a bias built on the fly, so no
    hook on ``qkv`` sees the input; ``proj`` is called the ordinary way."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 6, bias=False)
        self.qkv_bias = nn.Parameter(torch.randn(6))
        self.proj = nn.Linear(6, 3)

    def forward(self, x):
        return self.proj(torch.tanh(F.linear(x, self.qkv.weight, self.qkv_bias)))


def _linear(model, name):
    weight = model.get_submodule(name).weight
    return LayerInfo(name=name, role="mlp_up", stage=0, numel=weight.numel(), shape=tuple(weight.shape))


def test_a_weight_used_through_f_linear_gets_its_input_once():
    """The functional call reaches the layer's statistics (X^T X of its real input, not zero), and an ordinary
    module call, whose own forward also calls F.linear, is counted once, not twice."""
    torch.manual_seed(0)
    model = FunctionalQKV()
    x = torch.randn(5, 7, 4)
    layers = [_linear(model, "qkv"), _linear(model, "proj")]
    groups, uncalled = forward_groups(model, layers, x[:1])
    assert [[layer.name for layer in g] for g in groups] == [["qkv"], ["proj"]] and uncalled == []
    hs = {n: h for g in groups for n, h in accumulate_hessians(model, g, x, batch_size=2).items()}
    flat = x.reshape(-1, 4).double()
    torch.testing.assert_close(hs["qkv"][0], flat.T @ flat)
    mid = torch.tanh(F.linear(x, model.qkv.weight, model.qkv_bias)).reshape(-1, 6).double()
    torch.testing.assert_close(hs["proj"][0], mid.T @ mid)


@pytest.mark.parametrize("size, stride", [(7, 2), (14, 1), (9, 3)])
def test_a_self_padding_conv_gets_the_statistics_of_its_padded_input(size, stride):
    """timm's Conv2dSame pads in forward and convolves with padding 0: the Hessian and Wanda's norms are those of
    the padded input's patches (from the module's own attributes, 54% off on a 7x7 map at stride 2)."""
    from timm.layers import Conv2dSame
    from timm.layers.padding import pad_same

    from hf_mixmatch.activations import feature_sq_norms

    torch.manual_seed(0)
    model = nn.Sequential(Conv2dSame(4, 6, 3, stride=stride))
    x = torch.randn(3, 4, size, size) + 1.0
    layers = list_prunable(model)
    padded = pad_same(x, (3, 3), (stride, stride), (1, 1))
    cols = F.unfold(padded, 3, stride=stride).transpose(1, 2).reshape(-1, 36).double()
    torch.testing.assert_close(accumulate_hessians(model, layers, x, batch_size=2)["0"][0], cols.T @ cols)
    torch.testing.assert_close(feature_sq_norms(model, layers, x, batch_size=2)["0"][0], cols.pow(2).sum(0))


def test_a_reflect_padded_and_a_grouped_conv_still_get_their_exact_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(4, 6, 3, groups=2))
    x = torch.randn(2, 4, 6, 6)
    layers = list_prunable(model)
    groups, _ = forward_groups(model, layers, x[:1])
    hs = {n: h for g in groups for n, h in accumulate_hessians(model, g, x, batch_size=1).items()}
    cols = F.unfold(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3).transpose(1, 2).reshape(-1, 36).double()
    torch.testing.assert_close(hs["0"][0], cols.T @ cols)
    with torch.no_grad():
        mid = model[0](x)
    for g in range(2):
        c = F.unfold(mid[:, 2 * g:2 * g + 2], 3).transpose(1, 2).reshape(-1, 18).double()
        torch.testing.assert_close(hs["1"][g], c.T @ c, rtol=1e-4, atol=1e-5)  # float32 features


class CachesBias(nn.Module):
    """LeViT's pattern: in eval mode a tensor computed from a parameter is cached between calls."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.bias_table = nn.Parameter(torch.randn(3))
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x):
        if "b" not in self.cache:
            self.cache["b"] = self.bias_table * 2
        return self.lin(x) + self.cache["b"]


def test_copy_model_copies_a_module_caching_a_tensor_with_gradients():
    model = CachesBias().eval()
    with torch.enable_grad():
        model(torch.randn(2, 3))
    with pytest.raises(RuntimeError):  # the case copy_model exists for
        copy.deepcopy(model)
    twin = copy_model(model)
    assert twin.cache["b"].grad_fn is None and torch.equal(twin.cache["b"], model.cache["b"])
    assert twin.lin.weight is not model.lin.weight and torch.equal(twin.lin.weight, model.lin.weight)
    with torch.no_grad():
        twin.lin.weight.zero_()
    assert model.lin.weight.abs().sum() > 0


@pytest.mark.parametrize("case_id", ["levit", "levit_128s", "swinv2_tiny_window8_256", "eva02_tiny_patch14_224"])
def test_a_reconstructing_run_end_to_end_where_the_pitfalls_were(case_id, tmp_path):
    """The whole run with reconstruction, the activation signal and SparseGPT curves on the architectures of the two
    pitfalls (LeViT from both libraries: the dense copy after gradient scoring; timm's SwinV2 and EVA: functional
    qkv): curve strategies reconstructed, and the front's first variant reloads with the sparsity it reports."""
    from zoo_data import prepared

    from hf_mixmatch import PruneConfig, from_pretrained, load_model, run_mixmatch
    from hf_mixmatch.models import Preprocess

    case = next(c for c in ZOO if c.id == case_id)
    torch.manual_seed(0)
    loaded = load_model(build(case), preprocess=Preprocess(size=(case.size,) * 2, mean=(0.5,) * 3, std=(0.5,) * 3),
                        num_labels=NUM_LABELS)
    config = PruneConfig(model=case.id, output_dir=str(tmp_path / "run"), signals=("magnitude", "activation"),
                         strategies=("balanced", "rd_balanced"), batch_size=4, progress=False,
                         reconstruct="sparsegpt", rd_grid_step=0.2)
    result = run_mixmatch(config, loaded=loaded, data=prepared(case.size, NUM_LABELS))
    assert {v["strategy"] for v in result.variants if v.get("reconstructed")} >= {"rd_balanced"}
    first = result.pareto[0]
    model = from_pretrained(str(tmp_path / "run" / first["path"]))
    assert model.mixmatch_recipe["sparsity"] == pytest.approx(first["sparsity"])


class StandardizedConv(nn.Conv2d):
    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


def test_a_standardized_conv_is_found_and_plain_or_self_padding_layers_are_not():
    """timm's Conv2dSame pads in forward (its output is not the plain conv of its attributes) but computes with
    its stored weight, so its zeros are applied zeros: not listed."""
    from timm.layers import Conv2dSame
    from transformers.pytorch_utils import Conv1D

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), StandardizedConv(4, 4, 3),
                          Conv2dSame(4, 4, 3, stride=2), nn.Flatten(), Conv1D(64, 4 * 3 * 3), nn.Linear(64, 3)).eval()
    layers = list_prunable(model)
    assert [layer.name for layer in layers] == ["0", "1", "2", "4", "5"]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the self-padding conv does differ from its plain op
        mid = model[1](model[0](x))
        out, plain = model[2](mid), nn.Conv2d._conv_forward(model[2], mid, model[2].weight, model[2].bias)
        assert out.shape != plain.shape or not torch.allclose(out, plain)
    assert not_applied_as_stored(model, layers, x) == ["1"]
