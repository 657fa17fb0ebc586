import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from hf_mixmatch.layers import list_prunable
from hf_mixmatch.signals import compute_scores, fingerprint, load_scores, save_scores


def toy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    data = TensorDataset(torch.randn(10, 3, 2, 2), torch.randint(0, 3, (10,)))
    return model, data


def test_gradient_is_mean_of_absolute_per_batch_gradients():
    model, data = toy()
    layers = list_prunable(model, num_labels=3)
    s = compute_scores(model, layers, data, batch_size=4)
    x, y = data.tensors
    per_batch = []
    for a, b in ((0, 4), (4, 8), (8, 10)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[a:b]), y[a:b]).backward()
        per_batch.append({l.name: model.get_submodule(l.name).weight.grad.clone() for l in layers})
    for l in layers:
        w = model.get_submodule(l.name).weight.detach()
        gs = torch.stack([pb[l.name] for pb in per_batch])
        torch.testing.assert_close(s["gradient"][l.name], gs.abs().mean(0))
        torch.testing.assert_close(s["hybrid"][l.name], w.abs() * gs.abs().mean(0))
        torch.testing.assert_close(s["snip"][l.name], (w * gs.mean(0)).abs())
        torch.testing.assert_close(s["magnitude"][l.name], w.abs())
        assert not torch.equal(s["gradient"][l.name], gs.mean(0).abs())  # E|g| differs from |E g|
        assert s["grasp"][l.name].shape == w.shape


def test_grasp_is_weight_times_hessian_gradient_product():
    model, data = toy()
    layers = list_prunable(model, num_labels=3)
    s = compute_scores(model, layers, data, batch_size=10, signals=("grasp",))
    x, y = data.tensors
    params = [model.get_submodule(l.name).weight for l in layers]
    g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    g = [t.detach() for t in g]
    gg = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(gg, g)), params)
    for l, p, h in zip(layers, params, hg):
        torch.testing.assert_close(s["grasp"][l.name], p.detach() * h)


def test_scores_leave_model_untouched_and_cache_roundtrip(tmp_path):
    model, data = toy()
    model.eval()
    layers = list_prunable(model, num_labels=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    s = compute_scores(model, layers, data, batch_size=4)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters()) and not model.training
    fp = fingerprint(model, layers, data, batch_size=4)
    save_scores(s, tmp_path / "s.safetensors", fingerprint=fp)
    back = load_scores(tmp_path / "s.safetensors", fingerprint=fp)
    assert back.keys() == s.keys() and all(torch.equal(back[k][n], s[k][n]) for k in s for n in s[k])
    assert load_scores(tmp_path / "s.safetensors", fingerprint="other") is None
    with torch.no_grad():
        model[1].weight[0, 0] += 1
    assert fingerprint(model, layers, data, batch_size=4) != fp


def test_unknown_signal():
    from hf_mixmatch.errors import ConfigError

    model, data = toy()
    with pytest.raises(ConfigError, match="choose from"):
        compute_scores(model, list_prunable(model, num_labels=3), data, signals=("taylor",))
