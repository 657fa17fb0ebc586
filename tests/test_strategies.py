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
@pytest.mark.parametrize("name, reference", [("rd_balanced", "balanced"), ("rd_p70", "percentile_70"),
                                             ("rd_p90", "percentile_90")])
def test_curve_strategies_are_the_dp_at_the_reference_sparsity_clipped_to_the_ranges(seed, name, reference):
    from hf_mixmatch.rd import rd_strategy

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
    assert PruneConfig(model="m", output_dir="o", ranges="rd").strategies[-3:] == CURVE_STRATEGIES
    assert PruneConfig(model="m", output_dir="o", reconstruct="sparsegpt").strategies[-3:] == CURVE_STRATEGIES
    assert PruneConfig(model="m", output_dir="o", ranges="rd", strategies=("balanced",)).strategies == ("balanced",)
    with pytest.raises(ConfigError, match="add --ranges rd"):
        PruneConfig(model="m", output_dir="o", strategies=("rd_p90",))
