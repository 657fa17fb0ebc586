import math

import pytest
import torch
from torch import nn

from hf_mixmatch.allocation_math import achieved_sparsity, global_threshold, global_thresholds
from hf_mixmatch.allocators import (
    ALLOCATORS,
    Allocation,
    allocate,
    erk_densities,
    lamp_scores,
)
from hf_mixmatch.errors import ConfigError
from hf_mixmatch.layers import LayerInfo, list_prunable, weights_of

torch.set_num_threads(1)


def _tiny():
    """conv(1->2, 3x3): 18 | conv(2->4, 3x3): 72 | linear(16->8): 128 | linear(8->4) classifier: 32. N = 250."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=False),
        nn.ReLU(),
        nn.Conv2d(2, 4, 3, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.ReLU(),
        nn.Linear(8, 4),
    )
    layers = list_prunable(model)
    return model, layers, weights_of(model, layers)


def _numels(layers):
    return {layer.name: layer.numel for layer in layers}


def _fake_layer(name, weight, role="linear"):
    return LayerInfo(name=name, role=role, stage=0, numel=weight.numel(), shape=tuple(weight.shape), kind="linear")


def test_tiny_model_inventory():
    _, layers, _ = _tiny()
    assert [layer.numel for layer in layers] == [18, 72, 128, 32]
    assert layers[-1].role == "classifier"


def test_registry_has_every_baseline():
    assert set(ALLOCATORS) == {"global_magnitude", "uniform", "uniform_plus", "erk", "lamp", "snip", "grasp", "rd",
                               "wanda", "sparsegpt"}
    with pytest.raises(ConfigError, match="Did you mean"):
        allocate("lampp", weights={}, layers=[], target=0.5)


@pytest.mark.parametrize("method", ["global_magnitude", "uniform", "uniform_plus", "erk", "lamp"])
@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.7, 0.85])
def test_every_allocator_meets_target_exactly(method, target):
    _, layers, weights = _tiny()
    alloc = allocate(method, weights=weights, layers=layers, target=target)
    assert isinstance(alloc, Allocation) and alloc.method == method
    numels = _numels(layers)
    total = sum(numels.values())
    pruned = sum(math.floor(alloc.sparsities[n] * k) for n, k in numels.items())
    assert pruned == math.floor(target * total + 1e-9)
    assert abs(achieved_sparsity(alloc.sparsities, numels) - target) < 1 / total + 1e-12
    # the integrator's mask stage uses floor(rho*n + 1e-9): same counts
    assert pruned == sum(int(math.floor(alloc.sparsities[n] * k + 1e-9)) for n, k in numels.items())


@pytest.mark.parametrize("method", sorted(set(ALLOCATORS) - {"rd"}))
@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5, float("nan")])
def test_targets_outside_unit_interval_rejected(method, target):
    _, layers, weights = _tiny()
    scores = {"snip": {n: w.abs() for n, w in weights.items()}, "grasp": {n: w.clone() for n, w in weights.items()}}
    with pytest.raises(ConfigError):
        allocate(method, weights=weights, layers=layers, target=target, scores=scores)


def test_global_magnitude_matches_sorted_threshold():
    _, layers, weights = _tiny()
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
    for target in (0.2, 0.6, 0.9):
        k = math.floor(target * flat.numel())
        thr = flat.sort().values[k - 1]  # no ties in random weights
        alloc = allocate("global_magnitude", weights=weights, layers=layers, target=target)
        for name, w in weights.items():
            assert math.floor(alloc.sparsities[name] * w.numel()) == int((w.detach().abs() <= thr).sum())


def test_global_threshold_exact_count_with_ties():
    scores = {"a": torch.ones(10), "b": torch.ones(7), "c": torch.cat([torch.zeros(2), torch.ones(3)])}
    sp = global_threshold(scores, 0.5)  # N = 22 -> 11 pruned: the 2 zeros, then 9 tied ones
    counts = {n: math.floor(sp[n] * s.numel()) for n, s in scores.items()}
    assert sum(counts.values()) == 11
    assert counts["c"] >= 2


def _counts_by_sort(scores, target):
    """The reference: a stable sort of all scores (layer order, then index), the floor(target * N) lowest pruned."""
    names = list(scores)
    flat = torch.cat([scores[n].double().reshape(-1) for n in names])
    owner = torch.cat([torch.full((scores[n].numel(),), i) for i, n in enumerate(names)])
    pruned = owner[torch.sort(flat, stable=True).indices[: math.floor(target * flat.numel())]]
    return {n: int((pruned == i).sum()) for i, n in enumerate(names)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64])
def test_global_thresholds_match_a_stable_sort_at_every_target(dtype):
    g = torch.Generator().manual_seed(3)
    scores = {"a": (torch.randint(0, 6, (40,), generator=g)).to(dtype),  # heavy ties
              "b": torch.randn(25, generator=g).mul(3).to(dtype) if dtype != torch.int64
              else torch.randint(-3, 3, (25,), generator=g),
              "c": torch.zeros(7, dtype=dtype)}
    targets = (0.1, 0.3, 0.5, 0.8, 0.95)
    many = global_thresholds(scores, targets)
    for target, sp in zip(targets, many):
        assert sp == global_threshold(scores, target)
        counts = {n: math.floor(sp[n] * s.numel()) for n, s in scores.items()}
        assert counts == _counts_by_sort(scores, target)


def test_global_thresholds_any_target_order_and_protected_weights():
    g = torch.Generator().manual_seed(4)
    scores = {"a": torch.randint(0, 4, (30,), generator=g).float(), "b": torch.randn(20, generator=g)}
    targets = (0.9, 0.1, 0.5, 0.5, 0.0)
    assert global_thresholds(scores, targets) == [global_threshold(scores, t) for t in targets]
    scores["b"][:15] = math.inf  # 35 of 50 may be pruned
    assert global_thresholds(scores, (0.3, 0.7))[1] == global_threshold(scores, 0.7)
    with pytest.raises(ConfigError, match="at most 0.700000"):
        global_thresholds(scores, (0.3, 0.8))


def test_global_thresholds_keep_float64_precision():
    # 1 and 1 + 1e-12 are one float32 value: a float32 copy would tie them and prune by layer order
    scores = {"a": torch.full((4,), 1.0 + 1e-12, dtype=torch.float64), "b": torch.ones(4, dtype=torch.float64)}
    sp = global_thresholds(scores, (0.5,))[0]
    assert sp == {"a": 0.0, "b": 1.0}
    big = {"a": torch.full((4,), 2 ** 40 + 1, dtype=torch.int64), "b": torch.full((4,), 2 ** 40, dtype=torch.int64)}
    assert global_thresholds(big, (0.5,))[0] == {"a": 0.0, "b": 1.0}


def test_uniform_same_fraction_each_layer():
    _, layers, weights = _tiny()
    alloc = allocate("uniform", weights=weights, layers=layers, target=0.5)
    for layer in layers:
        assert abs(alloc.sparsities[layer.name] - 0.5) <= 1 / layer.numel


def test_uniform_plus_hand_computed():
    _, layers, weights = _tiny()
    # target 0.8: 200 pruned; first conv dense; 0.862 > 0.8 so the classifier sits at its cap
    # floor(0.8*32) = 25 and the other two share 175 at ~0.875 each
    alloc = allocate("uniform_plus", weights=weights, layers=layers, target=0.8)
    sp = alloc.sparsities
    first, conv2, fc, head = (layer.name for layer in layers)
    assert sp[first] == 0.0
    assert math.floor(sp[head] * 32) == 25 and sp[head] <= 0.8
    assert math.floor(sp[conv2] * 72) + math.floor(sp[fc] * 128) == 175
    assert abs(sp[conv2] - 175 / 200) <= 1 / 72 and abs(sp[fc] - 175 / 200) <= 1 / 128
    # low target: classifier below its cap, same fraction as the rest
    low = allocate("uniform_plus", weights=weights, layers=layers, target=0.4).sparsities
    assert low[first] == 0.0
    for name in (conv2, fc, head):
        assert abs(low[name] - 100 / 232) <= 1 / 32


def test_uniform_plus_infeasible():
    _, layers, weights = _tiny()
    # at most 72 + 128 + 25 = 225 of 250 can go: 0.9 is exactly feasible, 0.95 is not
    alloc = allocate("uniform_plus", weights=weights, layers=layers, target=0.9)
    assert achieved_sparsity(alloc.sparsities, _numels(layers)) == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="uniform_plus"):
        allocate("uniform_plus", weights=weights, layers=layers, target=0.95)


def test_erk_densities_by_hand():
    _, layers, _ = _tiny()
    # sum(shape)/numel: 9/18, 12/72, 24/128, 12/32
    # target 0.6 (keep 100): eps = 100 / (9 + 12 + 24 + 12) = 100/57, nobody over 1
    d = erk_densities(layers, 0.6)
    eps = 100 / 57
    expected = [eps * 9 / 18, eps * 12 / 72, eps * 24 / 128, eps * 12 / 32]
    assert [d[layer.name] for layer in layers] == pytest.approx(expected)
    # target 0.4 (keep 150): the first conv (150/57 * 0.5 > 1) and then the classifier
    # (132/48 * 0.375 > 1) go dense; eps = 100/36 on the other two
    d = erk_densities(layers, 0.4)
    expected = [1.0, 100 / 36 * 12 / 72, 100 / 36 * 24 / 128, 1.0]
    assert [d[layer.name] for layer in layers] == pytest.approx(expected)
    _, _, weights = _tiny()
    sp = allocate("erk", weights=weights, layers=layers, target=0.4).sparsities
    for layer, dens in zip(layers, expected):
        assert abs(sp[layer.name] - (1 - dens)) <= 1 / layer.numel


def test_lamp_scores_by_hand():
    w = torch.tensor([1.0, -2.0, 3.0, 0.5, -4.0])
    # ascending |w|: 0.5, 1, 2, 3, 4; squares 0.25, 1, 4, 9, 16; suffix sums 30.25, 30, 29, 25, 16
    expected = torch.tensor([1 / 30, 4 / 29, 9 / 25, 0.25 / 30.25, 1.0], dtype=torch.float64)
    assert torch.allclose(lamp_scores(w), expected)


def test_lamp_allocation_by_hand_and_keeps_largest():
    a = torch.tensor([[1.0, -2.0, 3.0, 0.5, -4.0]])
    b = torch.tensor([[0.1, 10.0, 20.0, 30.0]])
    layers = [_fake_layer("a", a), _fake_layer("b", b, role="classifier")]
    weights = {"a": a, "b": b}
    # LAMP scores: a -> 1/30, 4/29, 9/25, 0.0083, 1 ; b -> 7e-6, 100/1400, 400/1300, 1
    # 5 lowest of 9: b 7e-6, a 0.0083, a 1/30, b 0.0714, a 0.138 -> a 3/5, b 2/4
    sp = allocate("lamp", weights=weights, layers=layers, target=5 / 9).sparsities
    assert math.floor(sp["a"] * 5) == 3 and math.floor(sp["b"] * 4) == 2
    # global magnitude differs: 0.1, 0.5, 1, 2, 3 -> a 4/5, b 1/4
    mag = allocate("global_magnitude", weights=weights, layers=layers, target=5 / 9).sparsities
    assert math.floor(mag["a"] * 5) == 4 and math.floor(mag["b"] * 4) == 1
    sp = allocate("lamp", weights=weights, layers=layers, target=7 / 9).sparsities
    assert math.floor(sp["a"] * 5) == 4 and math.floor(sp["b"] * 4) == 3
    with pytest.raises(ConfigError, match="at most"):
        allocate("lamp", weights=weights, layers=layers, target=8 / 9)


def test_snip_and_grasp_use_their_signal():
    _, layers, weights = _tiny()
    gen = torch.Generator().manual_seed(1)
    scores = {
        "snip": {n: torch.rand(w.shape, generator=gen) for n, w in weights.items()},
        "grasp": {n: torch.randn(w.shape, generator=gen) for n, w in weights.items()},
    }
    for method in ("snip", "grasp"):
        alloc = allocate(method, weights=weights, layers=layers, target=0.6, scores=scores)
        assert alloc.rank_by == method
        assert alloc.sparsities == global_threshold(scores[method], 0.6)
    # grasp prunes the lowest w*Hg: the most negative score of all weights goes first
    flat = {n: s.reshape(-1) for n, s in scores["grasp"].items()}
    lowest_layer = min(flat, key=lambda n: flat[n].min())
    sp = allocate("grasp", weights=weights, layers=layers, target=1 / 250 + 1e-6, scores=scores).sparsities
    assert [n for n, r in sp.items() if r > 0] == [lowest_layer]
    with pytest.raises(ConfigError, match="snip"):
        allocate("snip", weights=weights, layers=layers, target=0.5, scores=None)


def test_allocation_round_trips_and_validates():
    alloc = Allocation("uniform", {"a": 0.5}, "magnitude")
    assert Allocation.from_dict(alloc.to_dict()) == alloc
    with pytest.raises(ConfigError):
        Allocation("x", {"a": 1.2})


def _tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=5)
    model = ViTForImageClassification(config).eval()
    return model, list_prunable(model)


def test_transformers_vit_uniform_plus_and_all_baselines():
    model, layers = _tiny_vit()
    weights = weights_of(model, layers)
    patch = next(layer.name for layer in layers if layer.role == "patch_embed")
    head = next(layer.name for layer in layers if layer.role == "classifier")
    alloc = allocate("uniform_plus", weights=weights, layers=layers, target=0.8)  # the rest at ~0.947
    assert alloc.sparsities[patch] == 0.0
    assert 0.79 <= alloc.sparsities[head] <= 0.8
    assert all(0.94 < r < 0.96 for n, r in alloc.sparsities.items() if n not in (patch, head))
    numels = _numels(layers)
    total = sum(numels.values())
    scores = {"snip": {n: w.detach().abs() for n, w in weights.items()}, "grasp": {n: -w.detach() for n, w in weights.items()},
              "activation_row": {n: w.detach().abs() for n, w in weights.items()}}
    for method in sorted(set(ALLOCATORS) - {"rd"}):
        sp = allocate(method, weights=weights, layers=layers, target=0.5, scores=scores).sparsities
        assert set(sp) == set(numels)
        assert achieved_sparsity(sp, numels) == math.floor(0.5 * total) / total
