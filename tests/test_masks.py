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


def _reference_keep(score: torch.Tensor, k: int) -> torch.Tensor:
    """Prune the k lowest by a stable sort (ties in index order; NaN above +inf, as ``topk`` ranks it)."""
    order = torch.sort(torch.nan_to_num(score.double(), nan=math.inf, posinf=1e300), stable=True).indices
    keep = torch.ones(score.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    return keep


@pytest.mark.parametrize("seed", range(8))
def test_keep_mask_matches_a_stable_sort_with_ties_nan_and_inf(seed):
    from hf_mixmatch.masks import keep_mask

    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 400, (1,), generator=gen))
    score = torch.randint(0, 5, (n,), generator=gen).float()  # heavy ties
    special = torch.rand(n, generator=gen)
    score[special < 0.05] = float("nan")
    score[(special >= 0.05) & (special < 0.1)] = float("inf")
    score[(special >= 0.1) & (special < 0.15)] = -float("inf")
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        keep = keep_mask(score, k)
        assert int((~keep).sum()) == k
        assert torch.equal(keep, _reference_keep(score, k)), (n, k)


def test_masks_prune_tied_scores_in_index_order():
    model = nn.Sequential(nn.Linear(4, 3))
    layers = list_prunable(model)
    masks = apply_sparsities(model, layers, {"0": 0.5}, {"0": torch.zeros(3, 4)})  # every score tied
    assert masks["0"].flatten().tolist() == [False] * 6 + [True] * 6
