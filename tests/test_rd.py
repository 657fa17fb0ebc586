import itertools
import math
import time

import pytest
import torch
from torch import nn

from hf_mixmatch.allocation_math import achieved_sparsity
from hf_mixmatch.allocators import ALLOCATORS, RDAllocator
from hf_mixmatch.errors import ConfigError
from hf_mixmatch.layers import list_prunable, weights_of
from hf_mixmatch.rd import default_grid, distortion_curves, gaussian_inputs
from hf_mixmatch.rd_dp import make_monotone, rd_strategy, solve_dp

torch.set_num_threads(1)


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 5)
    )
    return model, list_prunable(model)


def _brute_force(curves, numels, grid, target):
    names = list(numels)
    total = sum(numels.values())
    budget = total - math.floor(target * total + 1e-9)
    surv = {n: [numels[n] - math.floor(a * numels[n] + 1e-9) for a in grid.tolist()] for n in names}
    best, best_pick = math.inf, None
    for pick in itertools.product(range(len(grid)), repeat=len(names)):
        if sum(surv[n][k] for n, k in zip(names, pick)) > budget:
            continue
        d = sum(float(curves[n][k]) for n, k in zip(names, pick))
        if d < best - 1e-12:
            best, best_pick = d, pick
    return best, best_pick


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.3, 0.55, 0.8])
def test_dp_is_optimal_on_brute_forceable_problem(seed, target):
    gen = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 1, 6, dtype=torch.float64)
    numels = {"a": 10, "b": 13, "c": 7, "d": 20}
    # random non-decreasing curves with different steepness per layer
    curves = {n: torch.cumsum(torch.rand(6, generator=gen, dtype=torch.float64) * (i + 1), 0) - 0.0 for i, n in enumerate(numels)}
    curves = {n: c - c[0] for n, c in curves.items()}
    best, pick = _brute_force(curves, numels, grid, target)
    total = sum(numels.values())
    sp, info = solve_dp(curves, numels, target, grid=grid, buckets=total, refill=False, return_info=True)
    got = sum(float(curves[n][info["grid_indices"][n]]) for n in numels)
    assert got == pytest.approx(best, abs=1e-12)
    assert achieved_sparsity(sp, numels) >= math.floor(target * total + 1e-9) / total
    # sparsities are the chosen grid points
    for n, k in info["grid_indices"].items():
        assert math.floor(sp[n] * numels[n]) == math.floor(grid[k].item() * numels[n] + 1e-9)


def test_dp_with_refill_meets_budget_exactly():
    gen = torch.Generator().manual_seed(3)
    numels = {f"l{i}": int(n) for i, n in enumerate(torch.randint(50, 5000, (12,), generator=gen))}
    curves = {n: torch.cumsum(torch.rand(101, generator=gen, dtype=torch.float64), 0) for n in numels}
    total = sum(numels.values())
    for target in (0.5, 0.7, 0.9):
        for buckets in (10, 1000, 10000):
            sp = solve_dp(curves, numels, target, buckets=buckets)
            assert achieved_sparsity(sp, numels) == math.floor(target * total) / total
            coarse = solve_dp(curves, numels, target, buckets=buckets, refill=False)
            assert achieved_sparsity(coarse, numels) >= math.floor(target * total) / total


def test_dp_is_fast_for_many_layers():
    gen = torch.Generator().manual_seed(4)
    numels = {f"l{i}": int(n) for i, n in enumerate(torch.randint(1000, 2_000_000, (120,), generator=gen))}
    curves = {n: torch.rand(101, generator=gen, dtype=torch.float64) for n in numels}  # non-monotone on purpose
    start = time.perf_counter()
    sp = solve_dp(curves, numels, 0.6)
    assert time.perf_counter() - start < 10
    assert achieved_sparsity(sp, numels) >= 0.6 - 1 / 10000


def test_dp_prefers_pruning_the_insensitive_layer():
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    numels = {"sensitive": 100, "robust": 100}
    curves = {"sensitive": grid * 100.0, "robust": grid**4}
    sp = solve_dp(curves, numels, 0.5, grid=grid)
    assert sp["robust"] > 0.85 and sp["sensitive"] < 0.15


def test_make_monotone():
    curves = make_monotone({"a": torch.tensor([0.0, 2.0, 1.0, 3.0, 2.5])})
    assert curves["a"].tolist() == [0.0, 2.0, 2.0, 3.0, 3.0]


def test_solve_dp_rejects_bad_input():
    with pytest.raises(ConfigError):
        solve_dp({"a": torch.zeros(3)}, {"a": 10}, 1.0)
    with pytest.raises(ConfigError, match="no distortion curve"):
        solve_dp({"a": torch.zeros(3)}, {"a": 10, "b": 3}, 0.5)
    with pytest.raises(ConfigError, match="infeasible"):
        solve_dp({"a": torch.zeros(3)}, {"a": 10}, 0.9, grid=torch.tensor([0.0, 0.25, 0.5]))


def test_distortion_curves_by_hand_and_non_decreasing():
    model, layers = _model()
    x = gaussian_inputs(24, (3, 8, 8), seed=0)
    grid = default_grid(0.1)
    raw = distortion_curves(model, layers, x, grid=grid, monotone=False, batch_size=10)
    curves = distortion_curves(model, layers, x, grid=grid, batch_size=10)
    dense = model(x).detach()
    for layer in layers:
        c = curves[layer.name]
        assert c.shape == (11,) and c[0] == 0 and c[-1] > 0
        assert (c.diff() >= 0).all()
        assert torch.equal(c, torch.cummax(raw[layer.name], 0).values)
    # weights restored
    assert torch.equal(model(x).detach(), dense)
    # D(0.5) of the classifier by hand: zero its 40 smallest weights
    head = model[5]
    saved = head.weight.detach().clone()
    order = saved.abs().reshape(-1).argsort()
    with torch.no_grad():
        head.weight.view(-1)[order[:40]] = 0
        per_sample = (model(x) - dense).pow(2).mean(dim=1)
        head.weight.copy_(saved)
    assert raw["5"][5].item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
    worst = distortion_curves(model, layers, x, grid=grid, reduction="worst", monotone=False)
    assert worst["5"][5].item() == pytest.approx(per_sample.max().item(), rel=1e-5)
    assert (worst["3"] >= raw["3"] - 1e-12).all()


def test_distortion_curves_accept_iterable_batches():
    model, layers = _model()
    x = gaussian_inputs(16, (3, 8, 8), seed=1)
    grid = default_grid(0.25)
    a = distortion_curves(model, layers, x, grid=grid, batch_size=16)
    b = distortion_curves(model, layers, [(x[:8], torch.zeros(8)), (x[8:], torch.zeros(8))], grid=grid)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-9)


def test_cache_hit_skips_recomputation(tmp_path):
    model, layers = _model()
    x = gaussian_inputs(8, (3, 8, 8), seed=2)
    calls = {"n": 0}

    def forward(m, inputs):
        calls["n"] += 1
        return m(inputs)

    grid = default_grid(0.25)
    first = distortion_curves(model, layers, x, grid=grid, forward=forward, cache_dir=tmp_path)
    assert calls["n"] > 0 and len(list(tmp_path.glob("*.safetensors"))) == 1
    calls["n"] = 0
    second = distortion_curves(model, layers, x, grid=grid, forward=forward, cache_dir=tmp_path)
    assert calls["n"] == 0
    assert all(torch.equal(first[k], second[k]) for k in first)
    # other inputs or other weights: a miss
    distortion_curves(model, layers, x + 1, grid=grid, forward=forward, cache_dir=tmp_path)
    assert calls["n"] > 0
    calls["n"] = 0
    with torch.no_grad():
        model[0].weight.mul_(2)
    distortion_curves(model, layers, x, grid=grid, forward=forward, cache_dir=tmp_path)
    assert calls["n"] > 0 and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_gaussian_inputs_deterministic():
    a, b = gaussian_inputs(4, (3, 5, 5), seed=7), gaussian_inputs(4, (3, 5, 5), seed=7)
    assert a.shape == (4, 3, 5, 5) and torch.equal(a, b)
    assert not torch.equal(a, gaussian_inputs(4, (3, 5, 5), seed=8))


def test_rd_allocator_registered_and_prepared():
    model, layers = _model()
    weights = weights_of(model, layers)
    with pytest.raises(ConfigError, match="prepare"):
        ALLOCATORS["rd"](weights=weights, layers=layers, target=0.5)
    x = gaussian_inputs(16, (3, 8, 8), seed=3)
    prepared = ALLOCATORS["rd"].prepare(model, x, grid=default_grid(0.05))
    assert ALLOCATORS["rd"].curves is None  # registry instance stays stateless
    numels = {layer.name: layer.numel for layer in layers}
    total = sum(numels.values())
    for target in (0.5, 0.7, 0.9):
        alloc = prepared(weights=weights, layers=layers, target=target)
        assert alloc.method == "rd" and alloc.rank_by == "magnitude"
        assert achieved_sparsity(alloc.sparsities, numels) == math.floor(target * total) / total
    # curves through scores["rd"], and the strategy hook give the same answer
    via_scores = RDAllocator(grid=default_grid(0.05))(weights=weights, layers=layers, target=0.7, scores={"rd": prepared.curves})
    assert via_scores.sparsities == rd_strategy(prepared.curves, layers, 0.7, grid=default_grid(0.05))


def test_rd_on_tiny_transformers_vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=5)
    model = ViTForImageClassification(config).eval()
    layers = list_prunable(model)
    x = gaussian_inputs(8, (3, 16, 16), seed=0)  # zero-data mode
    curves = distortion_curves(model, layers, x, grid=default_grid(0.1))  # default forward reads .logits
    assert set(curves) == {layer.name for layer in layers}
    assert all(c[0] == 0 and (c.diff() >= 0).all() and c[-1] > 0 for c in curves.values())
    numels = {layer.name: layer.numel for layer in layers}
    sp = rd_strategy(curves, layers, 0.6, grid=default_grid(0.1))
    assert achieved_sparsity(sp, numels) == math.floor(0.6 * sum(numels.values())) / sum(numels.values())


def test_rd_ranges_span_the_targets():
    grid = torch.linspace(0, 1, 21, dtype=torch.float64)
    model, layers = _model()
    gen = torch.Generator().manual_seed(5)
    curves = {layer.name: torch.cumsum(torch.rand(21, generator=gen, dtype=torch.float64), 0) * (i + 1) for i, layer in enumerate(layers)}
    from hf_mixmatch.rd_dp import rd_ranges

    ranges = rd_ranges(curves, layers, (0.5, 0.9), grid=grid)
    low, high = rd_strategy(curves, layers, 0.5, grid=grid), rd_strategy(curves, layers, 0.9, grid=grid)
    for layer in layers:
        lo, hi = ranges[layer.name]
        assert lo == min(low[layer.name], high[layer.name]) and hi == max(low[layer.name], high[layer.name])
    with pytest.raises(ConfigError):
        rd_ranges(curves, layers, ())


# ------------------------------------------------------------------ reconstruction-aware curves (method="sparsegpt")


def test_sparsegpt_curves_equal_reconstructing_that_layer_alone():
    """Each point of a ``sparsegpt`` curve is the logits MSE of the model whose one layer is reconstructed by the
    reconstruction stage (SparseGPT's update, no refit) at that amount (every other layer dense); the model is left
    as it was."""
    from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct
    from hf_mixmatch.masks import WeightStash

    model, layers = _model()
    x = gaussian_inputs(40, (3, 8, 8), seed=3)
    grid = default_grid(0.25)
    dense = model(x).detach()
    raw = distortion_curves(model, layers, x, grid=grid, method="sparsegpt", monotone=False, batch_size=16)
    assert torch.equal(model(x).detach(), dense)
    stash = WeightStash(model, layers)
    for layer in layers:
        assert raw[layer.name][0] == 0
        for i, a in enumerate(grid.tolist()[1:], start=1):
            reconstruct(model, layers, {layer.name: a}, x, settings=ReconstructSettings(batch_size=16, refit=0))
            with torch.no_grad():
                expected = (model(x) - dense).pow(2).mean(dim=1).mean().item()
            stash.restore()
            assert raw[layer.name][i].item() == pytest.approx(expected, rel=1e-4, abs=1e-10), (layer.name, a)


def test_sparsegpt_curves_see_redundant_inputs_that_magnitude_cannot():
    """A layer whose inputs come in identical pairs loses nothing at 50% when reconstructed (each pair's weight
    moves onto one of its columns), while masking its smallest half moves the output; the DP then spends the
    sparsity there."""

    class Dup(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], dim=1)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), Dup(), nn.Linear(16, 4))
    layers = list_prunable(model)
    x = torch.randn(64, 6)
    grid = default_grid(0.25)
    mag = distortion_curves(model, layers, x, grid=grid, monotone=False)
    sgpt = distortion_curves(model, layers, x, grid=grid, method="sparsegpt", monotone=False)
    assert mag["2"][2] > 1e-3  # masking half of the duplicated layer's weights hurts
    assert sgpt["2"][2] < 0.05 * mag["2"][2]  # reconstruction absorbs nearly all of it (1% damping leaves a rest)
    numels = {layer.name: layer.numel for layer in layers}
    # at 30% overall, the reconstruction-aware DP puts its sparsity into the duplicated layer
    assert solve_dp(sgpt, numels, 0.3, grid=grid)["2"] >= 0.5


def test_sparsegpt_curves_cache_apart_from_magnitude_and_bad_method(tmp_path):
    model, layers = _model()
    x = gaussian_inputs(16, (3, 8, 8), seed=4)
    grid = default_grid(0.5)
    distortion_curves(model, layers, x, grid=grid, cache_dir=tmp_path)
    distortion_curves(model, layers, x, grid=grid, method="sparsegpt", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("rd_curves_*.safetensors"))) == 2
    with pytest.raises(ConfigError, match="method"):
        distortion_curves(model, layers, x, grid=grid, method="obs")
