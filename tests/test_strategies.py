import pytest
import torch

from hf_mixmatch.errors import ConfigError, RangeError
from hf_mixmatch.layers import LayerInfo
from hf_mixmatch.ranges import LayerRange, RangeTable
from hf_mixmatch.strategies import (CURVE_STRATEGIES, DEFAULT_STRATEGIES, PAPER_STRATEGIES, SIGNAL_STRATEGIES,
                                    STRATEGIES, default_strategies, overall_sparsity, strategy_sparsities)

# Three CNN layers: stage 0 conv (100 weights), stage 1 conv (300), classifier (200) in stage 1.
LAYERS = [
    LayerInfo("a", "conv", 0, 100, (100,), "conv"),
    LayerInfo("b", "conv", 1, 300, (300,), "conv"),
    LayerInfo("fc", "classifier", 1, 200, (200,), "linear"),
]
TABLE = RangeTable({"a": LayerRange(0.1, 0.5, ""), "b": LayerRange(0.2, 0.6, ""), "fc": LayerRange(0.0, 0.2, "")}, "test")


def close(d, expected):
    assert d.keys() == expected.keys()
    for k in d:
        assert d[k] == pytest.approx(expected[k], abs=1e-12), k


def test_ten_strategies_are_registered_with_the_paper_names():
    assert list(PAPER_STRATEGIES) == ["conservative", "aggressive", "balanced", "percentile_30", "percentile_50",
                                      "percentile_70", "percentile_90", "param_proportional", "late_heavy",
                                      "early_heavy"]
    assert list(STRATEGIES) == [*PAPER_STRATEGIES, "signal_balanced", "signal_p90", "signal_max", *CURVE_STRATEGIES]
    assert list(DEFAULT_STRATEGIES) == [*PAPER_STRATEGIES, "signal_balanced", "signal_p90", "signal_max"]
    assert SIGNAL_STRATEGIES == {"signal_balanced", "signal_p90", "signal_max"}


def test_signal_balanced_by_hand():
    # balanced's overall = (0.3*100 + 0.4*300 + 0.1*200) / 600 -> 170 weights; b's 60-weight minimum is forced.
    # Threshold 200: a has 100 scores < 200 (clipped to its max 50), fc 20 (0, 10, ..., 190), b 100 (100.5..199.5)
    # -> 50 + 20 + 100 = 170, the budget, exactly.
    scores = {"a": torch.arange(100.0), "b": torch.arange(300.0) + 100.5, "fc": torch.arange(200.0) * 10}
    close(strategy_sparsities("signal_balanced", TABLE, LAYERS, scores=scores), {"a": 0.5, "b": 100 / 300, "fc": 0.1})


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name, reference", [("signal_balanced", "balanced"), ("signal_p90", "percentile_90")])
def test_signal_strategies_stay_in_range_and_match_the_reference_sparsity(seed, name, reference):
    gen = torch.Generator().manual_seed(seed)
    # ties and very different scales across layers
    scores = {"a": torch.randint(0, 5, (100,), generator=gen).float(), "b": torch.rand(300, generator=gen) * 1e3,
              "fc": torch.rand(200, generator=gen) * 1e-3}
    got = strategy_sparsities(name, TABLE, LAYERS, scores=scores)
    ref = strategy_sparsities(reference, TABLE, LAYERS)
    for layer in LAYERS:
        r = TABLE[layer.name]
        assert r.min - 1e-12 <= got[layer.name] <= r.max + 1e-12
        assert (got[layer.name] * layer.numel) == pytest.approx(round(got[layer.name] * layer.numel), abs=1e-9)
    assert overall_sparsity(got, LAYERS) * 600 == pytest.approx(round(overall_sparsity(ref, LAYERS) * 600), abs=1e-9)
    # the layer whose scores are lowest everywhere (fc) is at its maximum
    assert got["fc"] == pytest.approx(TABLE["fc"].max)


def test_signal_max_lifts_measured_maxima_only():
    scores = {"a": torch.arange(100.0), "b": torch.arange(300.0) + 100.5, "fc": torch.arange(200.0) * 10}
    # every range a rule (reason ""): nothing lifts, so signal_max is aggressive
    close(strategy_sparsities("signal_max", TABLE, LAYERS, scores=scores), strategy_sparsities("aggressive", TABLE, LAYERS))
    # a, b measured (observed), fc a rule. Budget = aggressive's 50 + 180 + 40 = 270 weights. Threshold 245.5:
    # a all 100 (its 0.5 max lifted), b 145 (100.5..244.5), fc 25 (0..240, under its rule max of 40) -> 270.
    table = RangeTable({"a": LayerRange(0.1, 0.5, "observed: t"), "b": LayerRange(0.2, 0.6, "observed: t"),
                        "fc": LayerRange(0.0, 0.2, "")}, "test")
    close(strategy_sparsities("signal_max", table, LAYERS, scores=scores), {"a": 1.0, "b": 145 / 300, "fc": 0.125})


def test_signal_strategy_needs_scores():
    with pytest.raises(ConfigError, match="needs the signal's scores"):
        strategy_sparsities("signal_p90", TABLE, LAYERS)
    with pytest.raises(ConfigError, match="missing or have the wrong size"):
        strategy_sparsities("signal_p90", TABLE, LAYERS, scores={"a": torch.zeros(100)})


@pytest.mark.parametrize(
    "name, expected",
    [
        ("conservative", {"a": 0.1, "b": 0.2, "fc": 0.0}),
        ("aggressive", {"a": 0.5, "b": 0.6, "fc": 0.2}),
        ("balanced", {"a": 0.3, "b": 0.4, "fc": 0.1}),
        ("percentile_30", {"a": 0.1 + 0.3 * 0.4, "b": 0.2 + 0.3 * 0.4, "fc": 0.3 * 0.2}),
        ("percentile_90", {"a": 0.1 + 0.9 * 0.4, "b": 0.2 + 0.9 * 0.4, "fc": 0.9 * 0.2}),
        # mean |W| = 200; beta = min(1, 0.1 * n / 200) = 0.05, 0.15, 0.10
        ("param_proportional", {"a": 0.1 + 0.05 * 0.4, "b": 0.2 + 0.15 * 0.4, "fc": 0.1 * 0.2}),
        # stages {0, 1}: late = {1}; b and the classifier at max, a at min
        ("late_heavy", {"a": 0.1, "b": 0.6, "fc": 0.2}),
        ("early_heavy", {"a": 0.5, "b": 0.2, "fc": 0.0}),
    ],
)
def test_strategy_values_by_hand(name, expected):
    close(strategy_sparsities(name, TABLE, LAYERS), expected)


def test_early_heavy_is_mlp_heavy_for_transformers():
    layers = [LayerInfo("q", "attn_qkv", 0, 10, (10,)), LayerInfo("up", "mlp_up", 0, 10, (10,)),
              LayerInfo("head", "classifier", 0, 10, (10,))]
    table = RangeTable({n: LayerRange(0.1, 0.5, "") for n in ("q", "up", "head")}, "t")
    close(strategy_sparsities("early_heavy", table, layers), {"q": 0.1, "up": 0.5, "head": 0.1})


def test_unknown_strategy_and_bad_range():
    with pytest.raises(ConfigError, match="choose from"):
        strategy_sparsities("nope", TABLE, LAYERS)
    with pytest.raises(RangeError):
        LayerRange(0.5, 0.2, "")


# ------------------------------------------------------------------------------- curve-driven strategies


def _curves(seed: int):
    from hf_mixmatch.rd import default_grid

    grid = default_grid(0.05)
    gen = torch.Generator().manual_seed(seed)
    # convex-ish increasing distortion per layer, different slopes: the DP has real choices to make
    curves = {layer.name: (grid ** 2) * float(torch.rand(1, generator=gen) * 5 + 0.1) for layer in LAYERS}
    return curves, grid


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name, reference", [("rd_p30", "percentile_30"), ("rd_balanced", "balanced"),
                                             ("rd_p70", "percentile_70"), ("rd_p90", "percentile_90"),
                                             ("rd_param_proportional", "param_proportional"),
                                             ("rd_late_heavy", "late_heavy"), ("rd_early_heavy", "early_heavy")])
def test_curve_strategies_are_the_dp_at_the_reference_sparsity_clipped_to_the_ranges(seed, name, reference):
    from hf_mixmatch.rd_dp import rd_strategy

    curves, grid = _curves(seed)
    got = strategy_sparsities(name, TABLE, LAYERS, curves=curves, grid=grid)
    target = overall_sparsity(strategy_sparsities(reference, TABLE, LAYERS), LAYERS)
    dp = rd_strategy(curves, LAYERS, target, grid=grid)
    for layer in LAYERS:
        rng = TABLE[layer.name]
        assert rng.min - 1e-12 <= got[layer.name] <= rng.max + 1e-12
        assert got[layer.name] == pytest.approx(min(max(dp[layer.name], rng.min), rng.max), abs=1e-12)
    if all(TABLE[n].min <= v <= TABLE[n].max for n, v in dp.items()):  # nothing clipped: the reference's sparsity
        assert overall_sparsity(got, LAYERS) == pytest.approx(target, abs=1 / 600)


def test_curve_strategies_need_curves_and_join_the_default_set_only_with_rd_ranges():
    with pytest.raises(ConfigError, match="--ranges rd"):
        strategy_sparsities("rd_balanced", TABLE, LAYERS)
    assert default_strategies("observed") == DEFAULT_STRATEGIES
    assert default_strategies("rd") == DEFAULT_STRATEGIES + CURVE_STRATEGIES
    from hf_mixmatch.config import PruneConfig

    assert PruneConfig(model="m", output_dir="o").strategies == DEFAULT_STRATEGIES
    assert PruneConfig(model="m", output_dir="o", ranges="rd").strategies[-len(CURVE_STRATEGIES):] == CURVE_STRATEGIES
    assert PruneConfig(model="m", output_dir="o", reconstruct="sparsegpt").strategies[-len(CURVE_STRATEGIES):] == CURVE_STRATEGIES
    assert PruneConfig(model="m", output_dir="o", ranges="rd", strategies=("balanced",)).strategies == ("balanced",)
    with pytest.raises(ConfigError, match="add --ranges rd"):
        PruneConfig(model="m", output_dir="o", strategies=("rd_p90",))


def _clipped_counts_by_sorting_everything(scores, layers, ranges, target):
    """Reference: binary search over the rank in one sort of all scores (the former implementation's search)."""
    import math

    names = [layer.name for layer in layers]
    numel = {layer.name: layer.numel for layer in layers}
    lo = {n: math.ceil(ranges[n].min * numel[n] - 1e-9) for n in names}
    hi = {n: max(lo[n], math.floor(ranges[n].max * numel[n] + 1e-9)) for n in names}
    budget = min(max(round(target * sum(numel.values())), sum(lo.values())), sum(hi.values()))
    srt = {n: scores[n].reshape(-1).double().sort().values for n in names}
    everything = torch.cat(list(srt.values())).sort().values

    def counts_at(m):
        if m >= len(everything):
            return dict(hi)
        return {n: min(max(int(torch.searchsorted(srt[n], everything[m], side="left")), lo[n]), hi[n])
                for n in names}

    a, b = 0, len(everything)
    while a < b:
        mid = (a + b + 1) // 2
        if sum(counts_at(mid).values()) <= budget:
            a = mid
        else:
            b = mid - 1
    from hf_mixmatch.allocation_math import spend_remainder

    return spend_remainder(srt, counts_at(a), hi, budget)  # the remainder rule is shared; the search is not


@pytest.mark.parametrize("seed", range(12))
def test_clipped_global_counts_equal_the_sort_of_everything(seed):
    """Bisection over the float64 values gives the counts of a binary search over one sort of all scores, for
    ties, negative and zero scores, -0.0, +/-inf, tiny and huge magnitudes, and any ranges."""
    from hf_mixmatch.allocation_math import clipped_global_counts

    g = torch.Generator().manual_seed(seed)
    layers, scores, table = [], {}, {}
    for i in range(int(torch.randint(1, 6, (1,), generator=g))):
        n = int(torch.randint(1, 400, (1,), generator=g))
        kind = seed % 4
        if kind == 0:  # heavy ties
            s = torch.randint(0, 5, (n,), generator=g).float()
        elif kind == 1:  # signed, with zeros of both signs and infinities
            s = torch.randn(n, generator=g)
            s[torch.rand(n, generator=g) < 0.1] = 0.0
            s[torch.rand(n, generator=g) < 0.05] = -0.0
            s[torch.rand(n, generator=g) < 0.03] = float("inf")
            s[torch.rand(n, generator=g) < 0.03] = float("-inf")
        elif kind == 2:  # many orders of magnitude
            s = torch.exp(torch.randn(n, generator=g) * 20)
        else:
            s = torch.rand(n, generator=g)
        name = f"l{i}"
        layers.append(LayerInfo(name, "conv", i, n, (n,), "conv"))
        scores[name] = s
        a, b = sorted(torch.rand(2, generator=g).tolist())
        table[name] = LayerRange(a, b, "test")
    ranges = RangeTable(table, "test")
    for target in (0.0, 0.13, 0.5, 0.77, 0.95, 1.0):
        assert clipped_global_counts(scores, layers, ranges, target) == \
            _clipped_counts_by_sorting_everything(scores, layers, ranges, target)


def test_clipped_global_counts_see_scores_changed_in_place():
    from hf_mixmatch.allocation_math import clipped_global_counts

    layers = [LayerInfo("a", "conv", 0, 4, (4,), "conv"), LayerInfo("b", "conv", 1, 4, (4,), "conv")]
    scores = {"a": torch.tensor([1.0, 2, 3, 4]), "b": torch.tensor([5.0, 6, 7, 8])}
    ranges = RangeTable({n: LayerRange(0.0, 1.0, "test") for n in "ab"}, "test")
    assert clipped_global_counts(scores, layers, ranges, 0.5) == {"a": 4, "b": 0}
    scores["a"].add_(10)  # same tensor, new values: the cached sort must not be reused
    assert clipped_global_counts(scores, layers, ranges, 0.5) == {"a": 0, "b": 4}
