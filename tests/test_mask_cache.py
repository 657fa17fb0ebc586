"""Racing re-applies a variant's cached (bit-packed) keep-mask in later rounds: the weights must be exactly those
of ranking the layers again, whatever the budget."""

import timm
import torch

from hf_mixmatch.layers import get_weight, list_prunable
from hf_mixmatch.masks import WeightStash, apply_sparsities
from hf_mixmatch.variant_eval import MaskCache


def _model():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    layers = list_prunable(model, num_labels=7)
    with torch.no_grad():  # already-zero weights and exact ties in the score: the hard cases for a re-applied mask
        w = get_weight(model, layers[1])
        w.view(-1)[:500] = 0
        w.view(-1)[500:900] = 0.01
    return model, layers


def _weights(model, layers):
    return {layer.name: get_weight(model, layer).detach().clone() for layer in layers}


def test_cached_masks_give_the_same_weights_as_ranking_again():
    model, layers = _model()
    stash = WeightStash(model, layers)
    gen = torch.Generator().manual_seed(1)
    variants = {f"v{i}": ({layer.name: float(torch.rand(1, generator=gen)) * 0.95 for layer in layers},
                          {layer.name: get_weight(model, layer).detach().abs() + (i % 2) * torch.rand(
                              get_weight(model, layer).shape, generator=gen) for layer in layers})
                for i in range(4)}
    expected = {}
    for vid, (sp, score) in variants.items():
        apply_sparsities(model, layers, sp, score)
        expected[vid] = _weights(model, layers)
        stash.restore()
    for budget in (512 << 20, 3 << 20, 0):  # all cached, two of four cached (~1.4 MB each), none
        cache = MaskCache(budget)
        for _ in range(3):  # three racing rounds
            for vid, (sp, score) in variants.items():
                cache.apply(vid, model, layers, sp, score)
                got = _weights(model, layers)
                assert all(torch.equal(got[k], expected[vid][k]) for k in got), (budget, vid)
                stash.restore()
        assert cache.used <= budget
        assert len(cache.packed) == {512 << 20: 4, 3 << 20: 2, 0: 0}[budget]
