"""BatchNorm re-estimation after structured pruning: the rule, the statistics against a re-derivation on several
CNN families, and the CLI (results, card, reproduce command, early error); and grouped convolutions (RegNet), whose
feeding groups are kept dense when a unit count the groups cannot divide would break the model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.utils.data import TensorDataset

from hf_mixmatch.bn_recalibrate import batchnorm_modules, recalibrate_batchnorm
from hf_mixmatch.errors import ConfigError
from hf_mixmatch.structured import (
    SearchConfig,
    Task,
    build_architecture,
    classification_task,
    prune_physical,
    structured_prune,
    timm_model,
)
from hf_mixmatch.structured.batchnorm import recalibrate_pruned


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _hf_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1],
                       num_labels=5, layer_type="basic")
    return ResNetForImageClassification(cfg)


FAMILIES = {
    "transformers-resnet": _hf_resnet,
    "timm-resnet18": lambda: timm_model("resnet18", num_classes=5, in_chans=1, channels=(8, 16, 16, 16), stem_width=8),
    "cifar-resnet": lambda: build_architecture("cifar_resnet", {"channels": [8, 16, 16, 16], "num_classes": 5}),
    "timm-mobilenetv3": lambda: timm_model("mobilenetv3_small_050", num_classes=5, in_chans=1),
}


def _out(y):
    return y.logits if hasattr(y, "logits") else y


def _stale_model_and_task(factory, seed=0):
    """A random CNN whose BatchNorm statistics fit the data, labelled by its own predictions, then given stale
    statistics (means shifted, variances shrunk): what a model that lost channels looks like to its BatchNorms."""
    torch.manual_seed(seed)
    model = factory().eval()
    x = torch.rand(96, 1, 16, 16)
    recalibrate_batchnorm(model, x, forward=lambda m, b: m(b))
    with torch.no_grad():
        y = _out(model(x)).argmax(-1)
        for m in batchnorm_modules(model):
            m.running_mean.add_(0.5)
            m.running_var.mul_(0.05)
    return model, x, classification_task(TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]), batch_size=16)


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


# ------------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("gain", [0.25, 0.0, -0.25])
def test_re_estimated_statistics_are_kept_only_when_the_metric_rises(gain):
    torch.manual_seed(0)
    model = _hf_resnet().eval()
    x = torch.rand(20, 1, 16, 16)
    before = _buffers(model)
    expected = copy.deepcopy(model)
    recalibrate_batchnorm(expected, x, forward=lambda m, b: m(b))
    task = Task(name="score", metric=lambda m: 0.5 + gain)
    info = recalibrate_pruned(model, task, x, 0.5)
    assert info["kept"] is (gain > 0) and info["metric_reestimated"] == 0.5 + gain and info["samples"] == 20
    assert info["layers"] == len(batchnorm_modules(model))
    got, want = _buffers(model), (_buffers(expected) if gain > 0 else before)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


# ------------------------------------------------------------------------------------------------ in the search


@pytest.mark.parametrize("family", list(FAMILIES))
def test_structured_prune_re_estimates_the_statistics_of_the_pruned_model(family):
    model, x, task = _stale_model_and_task(FAMILIES[family])
    cfg = SearchConfig(sparsity=0.3, tolerance=0.05, search="grid")
    res = structured_prune(model, task, example=x[:1], config=cfg, with_baseline=False)
    bn = res.recipe["bn_recalibration"]
    assert bn["kept"] == (bn["metric_reestimated"] > bn["metric_dense_statistics"]) and bn["samples"] == 48
    # the recorded metric is the returned model's, and it is the better of the two
    assert task.metric(res.model) == pytest.approx(res.recipe["metric_before_finetune"], abs=1e-9)
    assert res.recipe["metric_before_finetune"] == max(bn["metric_reestimated"], bn["metric_dense_statistics"])
    # the search scored the gated dense model with re-estimated statistics: the same number as the pruned model's
    assert res.winner.metric == pytest.approx(res.recipe["metric_before_finetune"], abs=1e-9)
    # re-derivable: the winner's channels removed from the stale model, then re-estimated on the calibration images
    again, _ = prune_physical(model, res.plan, res.winner.removed)
    assert task.metric(again) == pytest.approx(bn["metric_dense_statistics"], abs=1e-9)
    if bn["kept"]:
        recalibrate_batchnorm(again, torch.cat([b[0] for b in task.batches()]), forward=lambda m, b: m(b))
    got, want = _buffers(res.model), _buffers(again)
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
    # off: the stale statistics (of the channels left) stay, and the metric is the search's
    off = structured_prune(model, task, example=x[:1], config=SearchConfig(sparsity=0.3, tolerance=0.05, search="grid",
                                                                           bn_recalibrate=False), with_baseline=False)
    assert off.recipe["bn_recalibration"] is None
    assert task.metric(off.model) == pytest.approx(off.winner.metric, abs=1e-9)


def test_stale_statistics_are_replaced_when_they_hurt():
    """On the model whose statistics were made stale, re-estimation must win (the guard is not a no-op)."""
    model, x, task = _stale_model_and_task(FAMILIES["transformers-resnet"])
    res = structured_prune(model, task, example=x[:1], config=SearchConfig(sparsity=0.3, tolerance=0.05, search="grid"),
                           with_baseline=False)
    bn = res.recipe["bn_recalibration"]
    assert bn["kept"] is True and res.recipe["metric_before_finetune"] > bn["metric_dense_statistics"]


def test_models_without_batchnorm_are_untouched():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                              num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                                              num_labels=5)).eval()
    assert not batchnorm_modules(vit)
    x, y = torch.rand(48, 1, 8, 8), torch.randint(0, 5, (48,))
    task = classification_task(TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]), batch_size=16)
    res = structured_prune(vit, task, example=x[:1], config=SearchConfig(sparsity=0.3, tolerance=0.05, search="grid"),
                           with_baseline=False)
    assert res.recipe["bn_recalibration"] is None and res.recipe["metric_before_finetune"] == res.winner.metric


def test_one_calibration_image_is_an_error_before_any_search():
    model, x, _ = _stale_model_and_task(FAMILIES["transformers-resnet"])
    task = classification_task(TensorDataset(x[:1], torch.zeros(1, dtype=torch.long)),
                               TensorDataset(x[1:9], torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ConfigError, match="--no-bn-recalibrate"):
        structured_prune(model, task, example=x[:1], config=SearchConfig(sparsity=0.3, search="grid"))


# ---------------------------------------------------------------------------------------------------- the CLI


def _cli(tmp_path, name, *extra):
    from hf_mixmatch.cli import main

    out = tmp_path / name
    argv = ["structured", "default", "--dataset", "default", "--sparsity", "0.5", "--calib-samples", "64",
            "--eval-samples", "64", "--search", "grid", "--latency-runs", "1", "--output-dir", str(out), *extra]
    return main(argv), out


def test_cli_records_the_re_estimation_in_results_recipe_and_card(tmp_path, capsys):
    import hf_mixmatch

    rc, out = _cli(tmp_path, "on")
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    recipe = json.loads((out / "model" / "structured.json").read_text())
    bn = res["bn_recalibration"]
    assert bn == recipe["bn_recalibration"] and bn["samples"] == 64 and bn["layers"] > 0
    # the trained default CNN loses half its parameters: its dense statistics no longer fit, and are replaced
    assert bn["kept"] is True and bn["metric_reestimated"] > bn["metric_dense_statistics"]
    card = (out / "model" / "README.md").read_text()
    assert "BatchNorm running statistics were re-estimated after the removal on 64 calibration images" in card
    assert "--no-bn-recalibrate" not in card
    report = hf_mixmatch.verify(out / "model", "default", eval_samples=64)  # the saved statistics are the measured ones
    assert report.measured_accuracy == pytest.approx(res["pruned"]["accuracy"]) and report.ok

    rc, off = _cli(tmp_path, "off", "--no-bn-recalibrate")
    assert rc == 0
    res_off = json.loads((off / "results.json").read_text())
    assert res_off["bn_recalibration"] is None
    # the same grid candidates, each scored with the better statistics: the best can only be higher
    assert res["search"]["grid"]["metric"] >= res_off["search"]["grid"]["metric"]
    assert res["search"]["grid"]["metric"] == pytest.approx(bn["metric_reestimated"])
    card = (off / "model" / "README.md").read_text()
    assert "--no-bn-recalibrate" in card and "BatchNorm running statistics" not in card

    capsys.readouterr()
    rc, bad = _cli(tmp_path, "one", "--calib-samples", "1")
    assert rc == 2 and not bad.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--no-bn-recalibrate" in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------- grouped convolutions (RegNet)


class _Grouped(torch.nn.Module):
    """conv → grouped conv (2 groups) → conv → head: removing a unit count the 2 groups cannot divide breaks it."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn_a = torch.nn.BatchNorm2d(8)
        self.g = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.bn_g = torch.nn.BatchNorm2d(8)
        self.c = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.bn_c = torch.nn.BatchNorm2d(16)
        self.d = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.bn_d = torch.nn.BatchNorm2d(16)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.bn_a(self.a(x)))
        x = torch.relu(self.bn_g(self.g(x)))
        x = torch.relu(self.bn_c(self.c(x)))
        x = torch.relu(self.bn_d(self.d(x)))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("family", ["grouped", "transformers-regnet"])
def test_groups_feeding_grouped_convolutions_are_kept_dense_and_the_rest_is_pruned(family):
    if family == "grouped":
        model, x, task = _stale_model_and_task(_Grouped)
    else:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).parent))
        from zoo_models import ZOO, build

        torch.manual_seed(0)
        case = next(c for c in ZOO if c.id == "regnet")
        model = build(case).eval()
        x = torch.rand(32, 3, case.size, case.size)
        y = torch.randint(0, 2, (32,))
        task = classification_task(TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:]), batch_size=8)
    res = structured_prune(model, task, example=x[:1], with_baseline=False,
                           config=SearchConfig(sparsity=0.25, tolerance=0.1, search="grid"))
    grouped = [m for m in res.model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert grouped and all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in grouped)
    kept_dense = [g for g in res.recipe["groups"] if not g["prunable"] and "spans components" not in g["reason"]]
    assert kept_dense and any(g["removed"] for g in res.recipe["groups"])  # only what breaks is kept whole
    with torch.no_grad():
        assert _out(res.model(x[:2])).shape[0] == 2
    # any selection over the groups left prunable cuts cleanly: one unit each, or random counts and units
    from hf_mixmatch.structured.verify import check_equivalent, probe_selection

    g = torch.Generator().manual_seed(0)
    selections = [probe_selection(res.plan, model, ratio=0.0)]
    for _ in range(3):
        selections.append({grp.index: sorted(torch.randperm(grp.size, generator=g)[
            : int(torch.randint(1, grp.size, (1,), generator=g))].tolist()) for grp in res.plan.prunable})
    for removed in selections:
        pruned, _ = prune_physical(model, res.plan, removed)
        check_equivalent(model, res.plan, removed, pruned, x[:1])
