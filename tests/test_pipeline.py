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
    kw = {"save": "none", **kw}
    return PruneConfig(model="unused", dataset=str(data), output_dir=str(out), progress=False,
                       strategies=("conservative", "aggressive"), calib_samples=16, **kw)


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
    from hf_mixmatch import pipeline
    from hf_mixmatch.models import load_model

    calls = {"n": 0}
    real = pipeline.evaluate

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate", flaky)
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
