import json

import pytest
from conftest import save_tiny_transformers

from hf_mixmatch.pareto import pareto_front
from hf_mixmatch.pipeline import PruneConfig, run_mixmatch


def test_pareto_front_by_hand():
    pts = [
        {"id": "a", "sparsity": 0.5, "accuracy": 0.90},
        {"id": "b", "sparsity": 0.6, "accuracy": 0.85},
        {"id": "c", "sparsity": 0.6, "accuracy": 0.80},  # dominated by b
        {"id": "d", "sparsity": 0.4, "accuracy": 0.88},  # dominated by a
        {"id": "e", "sparsity": 0.9, "accuracy": 0.10},
        {"id": "f", "sparsity": 0.3, "accuracy": 0.95},
    ]
    assert pareto_front(pts) == ["f", "a", "b", "e"]


def _config(out, data, **kw):
    kw = {"save": "none", "strategies": ("conservative", "aggressive"), **kw}
    return PruneConfig(model="unused", dataset=str(data), output_dir=str(out), progress=False, calib_samples=16, **kw)


def test_scores_are_reused_when_the_run_is_repeated(tmp_path, image_dataset):
    from hf_mixmatch.models import load_model

    model_dir = save_tiny_transformers(tmp_path / "m", "vit")
    first = run_mixmatch(_config(tmp_path / "run", image_dataset), loaded=load_model(model_dir))
    assert first.results["timings"]["scoring_cached"] is False
    second = run_mixmatch(_config(tmp_path / "run", image_dataset, overwrite=True), loaded=load_model(model_dir))
    assert second.results["timings"]["scoring_cached"] is True
    assert [v["accuracy"] for v in first.variants] == [v["accuracy"] for v in second.variants]
    # other calibration data: the cache does not apply
    third = run_mixmatch(_config(tmp_path / "run", image_dataset, overwrite=True, seed=1), loaded=load_model(model_dir))
    assert third.results["timings"]["scoring_cached"] is False


def test_an_interrupted_run_leaves_no_results_json(tmp_path, image_dataset, monkeypatch):
    from hf_mixmatch import variant_eval
    from hf_mixmatch.models import load_model

    calls = {"n": 0}
    real = variant_eval.predict_hits

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(variant_eval, "predict_hits", flaky)  # the third variant evaluation is interrupted
    with pytest.raises(KeyboardInterrupt):
        run_mixmatch(_config(tmp_path / "run", image_dataset), loaded=load_model(save_tiny_transformers(tmp_path / "m", "vit")))
    assert not (tmp_path / "run" / "results.json").exists()


def test_results_json_shape(tmp_path, image_dataset):
    from hf_mixmatch.models import load_model

    run_mixmatch(_config(tmp_path / "run", image_dataset, save="pareto", baselines=("global_magnitude", "lamp")),
                 loaded=load_model(save_tiny_transformers(tmp_path / "m", "resnet")))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    for key, kind in (("base_model", str), ("dataset", str), ("eval_split", str), ("eval_samples", int),
                      ("dense", dict), ("variants", list), ("pareto", list), ("baselines", list)):
        assert isinstance(res[key], kind), key
    assert set(res["dense"]) >= {"accuracy"}
    for v in res["variants"]:
        assert {"id", "method", "signal", "strategy", "sparsity", "accuracy", "layers", "path"} <= set(v)
        assert v["path"] is None or (tmp_path / "run" / v["path"]).is_dir()
    ids = {v["id"] for v in res["variants"]}
    for b in res["baselines"]:
        assert b["matched_to"] in res["pareto"] and b["method"] in ("global_magnitude", "lamp")
        matched = next(v for v in res["variants"] if v["id"] == b["matched_to"])
        assert b["sparsity"] == pytest.approx(matched["sparsity"], abs=2e-3)
    assert set(res["pareto"]) <= ids


def test_rd_ranges_and_signal_strategies_in_a_run(tmp_path, image_dataset):
    from hf_mixmatch.models import load_model
    from hf_mixmatch.rd import default_grid
    from hf_mixmatch.rd_dp import rd_ranges

    cfg = _config(tmp_path / "run", image_dataset, ranges="rd", range_targets=(0.3, 0.6), rd_grid_step=0.1,
                  strategies=("conservative", "aggressive", "signal_balanced", "signal_p90", "rd_balanced", "rd_p90"),
                  signals=("hybrid",), save="all")
    res = run_mixmatch(cfg, loaded=load_model(save_tiny_transformers(tmp_path / "m", "resnet")))
    assert res.results["ranges"]["source"] == "rd"
    curves_file = list((tmp_path / "run").glob("rd_curves*"))
    assert curves_file, "the RD curves are cached in the output dir"
    # the range table is min/max of the RD/DP allocations at the two targets
    from hf_mixmatch.allocators import ALLOCATORS
    from hf_mixmatch.data import load_data

    loaded = load_model(tmp_path / "m")
    data = load_data(str(image_dataset), loaded.preprocess, calib_samples=16, seed=0, num_labels=loaded.num_labels)
    rd = ALLOCATORS["rd"].prepare(loaded.model.eval(), data.calib.tensors[0], grid=default_grid(0.1),
                                  cache_dir=tmp_path / "run", batch_size=64, layers=res.layers)
    expected = rd_ranges(rd.curves, res.layers, (0.3, 0.6), grid=default_grid(0.1))
    for name, (lo, hi) in expected.items():
        assert res.ranges[name].min == pytest.approx(lo) and res.ranges[name].max == pytest.approx(hi)
    by_id = {v["id"]: v for v in res.variants}
    for vid in ("hybrid-signal_balanced", "hybrid-signal_p90"):
        v = by_id[vid]
        for name, s in v["target_layers"].items():
            assert res.ranges[name].min - 1e-9 <= s <= res.ranges[name].max + 1e-9
    assert by_id["hybrid-conservative"]["sparsity"] <= by_id["hybrid-signal_balanced"]["sparsity"] + 1e-6
    assert by_id["hybrid-signal_p90"]["sparsity"] <= by_id["hybrid-aggressive"]["sparsity"] + 1e-6
    # curve-driven strategies: the DP on the run's curves at the reference's sparsity, clipped to the ranges
    from hf_mixmatch.strategies import strategy_sparsities

    cards = 0
    for strat in ("rd_balanced", "rd_p90"):
        v = by_id[f"hybrid-{strat}"]
        expected = strategy_sparsities(strat, res.ranges, res.layers, curves=rd.curves, grid=default_grid(0.1))
        assert v["target_layers"] == pytest.approx(expected, abs=1e-12)
        if v.get("same_as"):
            continue
        # its card reproduces it from re-measured curves, not from ranges.json alone
        card = (tmp_path / "run" / v["path"] / "README.md").read_text()
        assert "--ranges rd --range-targets 0.3,0.6 --rd-distortion magnitude --rd-grid-step 0.1" in card
        cards += 1
    assert cards, "at least one curve-driven variant has masks of its own"
