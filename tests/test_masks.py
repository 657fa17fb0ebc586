import math

import pytest
import torch
from conftest import tiny_transformers
from torch import nn

from hf_mixmatch.layers import list_prunable
from hf_mixmatch.masks import WeightStash, apply_sparsities, expected_sparsity, measure_sparsity


def test_exact_counts_lowest_scores_and_restore():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 7), nn.ReLU(), nn.Linear(7, 3))
    layers = list_prunable(model, num_labels=3)
    orig = {l.name: model.get_submodule(l.name).weight.detach().clone() for l in layers}
    scores = {l.name: torch.randn(l.shape) for l in layers}
    sp = {"0": 0.33, "2": 0.5}
    stash = WeightStash(model, layers)
    masks = apply_sparsities(model, layers, sp, scores)
    for l in layers:
        w = model.get_submodule(l.name).weight
        k = math.floor(sp[l.name] * w.numel())
        assert int((w == 0).sum()) == k == int((~masks[l.name]).sum())
        # the zeroed weights are exactly the k lowest-scored
        lowest = torch.topk(scores[l.name].flatten(), k, largest=False).indices
        assert set(lowest.tolist()) == set(torch.nonzero(w.flatten() == 0).flatten().tolist())
    overall, per = measure_sparsity(model, layers)
    assert overall == pytest.approx((math.floor(0.33 * 70) + math.floor(0.5 * 21)) / 91)
    assert overall == pytest.approx(expected_sparsity(layers, sp))
    stash.restore()
    for l in layers:
        assert torch.equal(model.get_submodule(l.name).weight, orig[l.name])


def test_biases_and_norms_untouched():
    model = tiny_transformers("vit")
    layers = list_prunable(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prunable = {l.param_name for l in layers}
    apply_sparsities(model, layers, {l.name: 0.9 for l in layers}, {l.name: torch.rand(l.shape) for l in layers})
    for n, p in model.named_parameters():
        if n not in prunable:
            assert torch.equal(p, before[n]), n
