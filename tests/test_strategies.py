import pytest

from hf_mixmatch.errors import ConfigError, RangeError
from hf_mixmatch.layers import LayerInfo
from hf_mixmatch.ranges import LayerRange, RangeTable
from hf_mixmatch.strategies import STRATEGIES, strategy_sparsities

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
    assert list(STRATEGIES) == ["conservative", "aggressive", "balanced", "percentile_30", "percentile_50",
                                "percentile_70", "percentile_90", "param_proportional", "late_heavy", "early_heavy"]


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
