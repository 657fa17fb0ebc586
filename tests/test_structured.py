"""Structured, component-aware pruning: groups, masked-dense equivalence, sparsity, floor, round trip."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from hf_mixmatch.errors import ConfigError, MetricFloorError, ModelLoadError
from hf_mixmatch.structured import (
    SearchConfig,
    build_architecture,
    classification_task,
    component_of,
    count_params,
    describe_base,
    find_groups,
    load_structured,
    prune_physical,
    reconstruction_task,
    save_structured,
    structured_prune,
    timm_model,
)
from hf_mixmatch.structured.gates import GateHooks, masks_from_removed
from hf_mixmatch.structured.cost import expected_macs, expected_params


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these models are tiny, and on a busy machine OpenMP threads waiting for each
    other make a forward pass hundreds of times slower than one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _ae():
    torch.manual_seed(0)
    return build_architecture("conv_autoencoder", {"widths": [8, 16], "latent": 4}).eval()


def _hf_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1],
                       num_labels=5, layer_type="basic")
    return ResNetForImageClassification(cfg).eval()


def _hf_vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=32, num_labels=5)
    return ViTForImageClassification(cfg).eval()


def _timm_resnet():
    torch.manual_seed(0)
    return timm_model("resnet18", num_classes=5, in_chans=1, channels=(8, 16, 16, 16), stem_width=8).eval()


def _cifar_resnet():
    torch.manual_seed(0)
    return build_architecture("cifar_resnet", {"channels": [8, 16, 16, 16], "num_classes": 5}).eval()


def _out(y):
    return y.logits if hasattr(y, "logits") else y


def _random_removed(plan, seed=0, share=0.5):
    g = torch.Generator().manual_seed(seed)
    removed = {}
    for grp in plan.prunable:
        n = max(1, int(grp.size * share))
        removed[grp.index] = sorted(torch.randperm(grp.size, generator=g)[:n].tolist())
    return removed


# ------------------------------------------------------------------------------------------- components


def test_derived_groups_never_cross_components_and_latent_is_kept():
    ae = _ae()
    plan = find_groups(ae, torch.rand(1, 1, 8, 8))
    assert plan.components == {"encoder": ["encoder"], "decoder": ["decoder"]}
    for g in plan.prunable:
        assert {component_of(m, plan.components) for m in g.members} == {g.component}
    latent = [g for g in plan.groups if g.root == "encoder.6"]
    assert len(latent) == 1 and not latent[0].prunable and "spans" in latent[0].reason
    # the output conv (image channels) is ignored, so no group is rooted at it
    assert "decoder.9" in plan.ignored and all(g.root != "decoder.9" for g in plan.groups)


@pytest.mark.parametrize("components", [
    ["s0=*stages.0*", "s1=*stages.1*", "s2=*stages.2*"],
    ["s0=re:.*stages\\.0\\..*", "rest=re:.*"],
])
def test_user_components_split_groups(components):
    m = _hf_resnet()
    plan = find_groups(m, torch.randn(1, 1, 16, 16), components=components)
    assert plan.prunable, "intra-block channels must stay prunable"
    for g in plan.groups:
        comps = {component_of(n, plan.components) for n in g.members}
        assert g.prunable == (len(comps) == 1 and g.size >= 2)
    # with one component per stage, the stage-to-stage residual streams are not pruned
    if len(components) == 3:
        assert all(not g.prunable for g in plan.groups if "shortcut" in g.root)


def test_body_head_layout_makes_the_stem_stream_prunable():
    m = _cifar_resnet()
    x = torch.rand(1, 1, 12, 12)
    default = find_groups(m, x)
    body = find_groups(m, x, layout="body-head")
    assert set(body.components) == {"body", "head"}
    stem = lambda plan: next(g for g in plan.groups if g.root == "conv1")  # noqa: E731
    assert not stem(default).prunable and "spans" in stem(default).reason
    assert stem(body).prunable and stem(body).component == "body"
    # the stream into the classifier still spans body and head, so it stays dense
    assert any(not g.prunable and g.components == ["body", "head"] for g in body.groups)
    for g in body.prunable:
        assert {component_of(n, body.components) for n in g.members} == {"body"}
    with pytest.raises(ConfigError, match="either components or a layout"):
        find_groups(m, x, components=["a=layer1"], layout="body-head")
    with pytest.raises(ConfigError, match="unknown component layout"):
        find_groups(m, x, layout="blocks")


def test_bad_component_spec():
    with pytest.raises(ConfigError, match="NAME=PATTERN"):
        find_groups(_ae(), torch.rand(1, 1, 8, 8), components=["enc="])


# --------------------------------------------------------------------------------- masked-dense equality


@pytest.mark.parametrize("factory,shape", [(_ae, (4, 1, 8, 8)), (_hf_resnet, (4, 1, 16, 16)), (_hf_vit, (4, 1, 8, 8))])
def test_pruned_forward_equals_masked_dense(factory, shape):
    model = factory()
    x = torch.rand(shape)
    plan = find_groups(model, x[:1])
    removed = _random_removed(plan)
    pruned, _ = prune_physical(model, plan, removed)
    with torch.no_grad():
        dense = _out(model(x))
        with GateHooks(model, plan) as gates:
            gates.values = masks_from_removed(plan, removed)
            masked = _out(model(x))
        small = _out(pruned(x))
    assert count_params(pruned) < count_params(model)
    assert not torch.allclose(dense, masked, atol=1e-4)  # the removal changed something ...
    torch.testing.assert_close(small, masked, atol=1e-5, rtol=1e-4)  # ... exactly what the gates did
    # the expected-parameter formula used by the searches matches the real count
    keeps = masks_from_removed(plan, removed)
    assert int(round(float(expected_params(plan, keeps, count_params(model))))) == count_params(pruned)


def test_vit_mlp_units_and_heads_pruned_without_breaking_forward():
    vit = _hf_vit()
    x = torch.rand(3, 1, 8, 8)
    plan = find_groups(vit, x[:1])
    kinds = {g.root.rsplit(".", 1)[-1]: g.kind for g in plan.prunable}
    assert kinds.get("fc1") == "channels"
    assert "heads" in kinds.values()
    removed = _random_removed(plan, share=0.5)
    pruned, part = prune_physical(vit, plan, removed)
    layer = pruned.vit.layers[0]
    assert layer.mlp.fc1.out_features == 16 and layer.mlp.fc2.in_features == 16
    assert layer.attention.q_proj.out_features == 8 and layer.attention.num_attention_heads == 2
    assert pruned.classifier.out_features == 5  # classifier output units untouched
    assert pruned.vit.embeddings.patch_embeddings.projection.in_channels == 1  # input channels untouched
    assert _out(pruned(x)).shape == (3, 5)


# ------------------------------------------------------------------------------------ searches and floor


def _ae_task():
    torch.manual_seed(1)
    x = torch.rand(48, 1, 8, 8)
    return reconstruction_task(TensorDataset(x[:32]), TensorDataset(x[32:]), batch_size=16)


@pytest.mark.parametrize("search", ["grid", "gradient"])
def test_sparsity_within_tolerance_and_floor_respected(search):
    ae = _ae()
    task = _ae_task()
    dense = task.metric(ae)
    floor = dense - 6.0
    cfg = SearchConfig(sparsity=0.5, tolerance=0.02, metric_floor=floor, search=search, steps=8)
    res = structured_prune(ae, task, example=torch.rand(1, 1, 8, 8), config=cfg)
    achieved = 1 - count_params(res.model) / count_params(ae)
    assert abs(achieved - 0.5) <= 0.02
    assert res.recipe["achieved_sparsity"] == pytest.approx(achieved)
    assert res.winner.method == search and res.winner.metric >= floor
    # the returned model's metric: the search's, or higher when its re-estimated BatchNorm statistics were kept
    bn = res.recipe["bn_recalibration"]
    assert task.metric(res.model) == pytest.approx(res.recipe["metric_before_finetune"], abs=1e-4)
    assert res.recipe["metric_before_finetune"] == max(bn["metric_reestimated"], bn["metric_dense_statistics"])
    assert res.recipe["metric_before_finetune"] == pytest.approx(res.winner.metric, abs=1e-4)  # scored as saved
    assert res.baseline is not None and abs(res.baseline.sparsity - 0.5) <= 0.02


def test_impossible_floor_raises_metric_floor_error():
    ae = _ae()
    task = _ae_task()
    cfg = SearchConfig(sparsity=0.6, metric_floor=task.metric(ae) + 20.0, search="both", steps=4)
    with pytest.raises(MetricFloorError, match="lower sparsity or a lower metric floor"):
        structured_prune(ae, task, example=torch.rand(1, 1, 8, 8), config=cfg, with_baseline=False)


def test_classifier_search_keeps_output_units():
    m = _hf_resnet()
    torch.manual_seed(2)
    x, y = torch.rand(32, 1, 16, 16), torch.randint(0, 5, (32,))
    task = classification_task(TensorDataset(x, y), TensorDataset(x, y), batch_size=16)
    res = structured_prune(m, task, example=x[:1], config=SearchConfig(sparsity=0.3, steps=4), with_baseline=False)
    assert res.model.classifier[1].out_features == 5
    assert res.model.resnet.embedder.embedder.convolution.in_channels == 1
    assert set(res.recipe["search"]) == {"grid", "gradient"} and res.recipe["winner"] in {"grid", "gradient"}


@pytest.mark.parametrize("bad", [dict(sparsity=1.2), dict(tolerance=0.0), dict(search="random"),
                                 dict(flops_weight=-1.0), dict(flops_weight=float("nan")), dict(flops_weight="2"),
                                 dict(round_to=0), dict(round_to=2.5), dict(init="random"), dict(steps=-1),
                                 dict(steps=1.5)])
def test_config_validation(bad):
    with pytest.raises(ConfigError) as err:
        SearchConfig(**bad)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------- FLOP-aware search


_BODY = {"body": ["conv1", "bn1", "layer*"], "head": ["fc", "global_pool"]}


@pytest.mark.parametrize("factory,shape,components", [
    (_ae, (1, 1, 8, 8), None), (_hf_resnet, (1, 1, 16, 16), None), (_hf_vit, (1, 1, 8, 8), None),
    (_timm_resnet, (1, 1, 32, 32), None), (_cifar_resnet, (1, 1, 12, 12), _BODY)])
def test_expected_macs_with_hard_gates_equals_measured_macs_of_pruned_model(factory, shape, components):
    from hf_mixmatch.structured import count_flops

    model = factory()
    x = torch.rand(shape)
    plan = find_groups(model, x, components=components)
    assert plan.dense_macs == count_flops(model, x)
    for seed in (0, 1):
        removed = _random_removed(plan, seed=seed, share=0.3 + 0.3 * seed)
        pruned, _ = prune_physical(model, plan, removed)
        macs = float(expected_macs(plan, masks_from_removed(plan, removed)))
        assert macs < plan.dense_macs
        assert int(round(macs)) == count_flops(pruned, x)
    if components is _BODY:  # a conv whose input and output channels belong to two pruned groups: a product
        owners: dict[str, set] = {}
        for g in plan.prunable:
            for pd in g.dims:
                if pd.param in plan.param_macs:
                    owners.setdefault(pd.param, set()).add(g.index)
        assert any(len(v) == 2 for v in owners.values())


def test_expected_macs_is_differentiable_and_counts_consumers():
    model = _cifar_resnet()
    plan = find_groups(model, torch.rand(1, 1, 12, 12), components=_BODY)
    keeps = {g.index: torch.full((g.size,), 0.5, requires_grad=True) for g in plan.prunable}
    expected_macs(plan, keeps).backward()
    # every unit of every group drives the MACs of at least one conv
    assert all(float(k.grad.min()) > 0 for k in keeps.values())


def test_gradient_search_does_not_depend_on_the_loss_units():
    import dataclasses

    from hf_mixmatch.structured import gradient_search

    ae = _ae()
    task = _ae_task()
    scaled = dataclasses.replace(task, loss=lambda m, b: 1000.0 * task.loss(m, b))
    plan = find_groups(ae, torch.rand(1, 1, 8, 8))
    total = count_params(ae)
    pick = lambda t, norm: gradient_search(ae, plan, t, SearchConfig(steps=12, normalize_loss=norm, init="uniform",  # noqa: E731
                                                                      safeguard=False), total).removed
    assert pick(task, True) == pick(scaled, True)
    assert pick(task, False) != pick(scaled, False)  # without normalising, the loss's scale changes the choice


def _cifar_case(n: int):
    """A small CIFAR-style resnet with body/head components and a random 5-class task on n images."""
    model = _cifar_resnet()
    torch.manual_seed(3)
    x, y = torch.rand(n, 1, 12, 12), torch.randint(0, 5, (n,))
    task = classification_task(TensorDataset(x, y), TensorDataset(x, y), batch_size=32)
    return model, x, task, find_groups(model, x[:1], components=_BODY), count_params(model)


def test_flops_weight_moves_the_removal_to_mac_heavy_units():
    model, x, task, plan, total = _cifar_case(64)
    from hf_mixmatch.structured import gradient_search

    sels = {lam: gradient_search(model, plan, task, SearchConfig(sparsity=0.5, steps=30, flops_weight=lam,
                                                                 init="uniform", safeguard=False), total)
            for lam in (0.0, 20.0)}
    for lam, sel in sels.items():
        assert abs(sel.sparsity - 0.5) <= 0.02 and sel.detail["flops_weight"] == lam
        pruned, _ = prune_physical(model, plan, sel.removed)
        from hf_mixmatch.structured import count_flops

        assert int(round(sel.detail["macs"])) == count_flops(pruned, x[:1])
    # same parameter share, clearly fewer MACs with the FLOP term
    assert sels[20.0].detail["macs"] < 0.9 * sels[0.0].detail["macs"]


def test_round_to_keeps_pruned_widths_a_multiple_of_the_block():
    from hf_mixmatch.structured import gradient_search

    model, x, task, plan, total = _cifar_case(32)
    sel = gradient_search(model, plan, task, SearchConfig(sparsity=0.5, tolerance=0.1, steps=10, flops_weight=5.0,
                                                          round_to=4), total)
    assert sel.removed and abs(sel.sparsity - 0.5) <= 0.1
    for g in plan.prunable:
        kept = g.size - len(sel.removed.get(g.index, []))
        assert kept >= 1 and (g.size % 4 or kept % 4 == 0), (g.root, g.size, kept)


def _small_cnn_case(n=64):
    model = _cifar_resnet()
    torch.manual_seed(3)
    x, y = torch.rand(n, 1, 12, 12), torch.randint(0, 5, (n,))
    task = classification_task(TensorDataset(x, y), TensorDataset(x, y), batch_size=32)
    plan = find_groups(model, x[:1], components=_BODY)
    return model, task, plan, count_params(model)


def test_warm_start_logits_put_the_l1_selection_below_zero():
    from hf_mixmatch.structured.gradient import warm_start_logits
    from hf_mixmatch.structured.search import l1_baseline

    model, task, plan, total = _small_cnn_case()
    cfg = SearchConfig(sparsity=0.5, steps=0)
    logits, removed = warm_start_logits(plan, model, cfg, total)
    l1 = l1_baseline(model, plan, task, cfg, total)
    assert removed == l1.removed
    hard = {k: sorted(int(i) for i in torch.nonzero(v < 0).flatten()) for k, v in logits.items()}
    assert {k: v for k, v in hard.items() if v} == l1.removed
    # the L1 order is kept within each group
    from hf_mixmatch.structured.search import l1_importance

    scores = l1_importance(plan, model)
    for g in plan.prunable:
        order = torch.argsort(scores[g.index], stable=True)
        assert bool((logits[g.index][order].diff() > 0).all())


def test_warm_start_with_zero_steps_returns_the_l1_selection():
    from hf_mixmatch.structured import gradient_search
    from hf_mixmatch.structured.search import l1_baseline

    model, task, plan, total = _small_cnn_case()
    cfg = SearchConfig(sparsity=0.5, tolerance=0.05, steps=0, init="l1", safeguard=False)
    l1 = l1_baseline(model, plan, task, cfg, total)
    sel = gradient_search(model, plan, task, cfg, total)
    assert sel.detail["steps"] == 0 and sel.detail["init"] == "l1" and sel.detail["start"] == "gates"
    # without steps the gates' hard selection is L1's; thresholding to the exact share only removes more of the
    # lowest-ranked kept units or keeps some of the highest-ranked removed ones, so the two sets are nested
    a = {(k, u) for k, v in sel.removed.items() for u in v}
    b = {(k, u) for k, v in l1.removed.items() for u in v}
    assert a <= b or b <= a
    assert abs(sel.sparsity - 0.5) <= abs(l1.sparsity - 0.5)
    guarded = gradient_search(model, plan, task, SearchConfig(sparsity=0.5, tolerance=0.05, steps=0), total)
    assert guarded.metric >= l1.metric


@pytest.mark.parametrize("steps,lam", [(0, 0.0), (15, 0.0), (15, 10.0)])
def test_safeguard_never_returns_a_selection_worse_than_l1_on_the_held_out_metric(steps, lam):
    from hf_mixmatch.structured import gradient_search
    from hf_mixmatch.structured.search import l1_baseline

    model, task, plan, total = _small_cnn_case()
    cfg = SearchConfig(sparsity=0.5, tolerance=0.05, steps=steps, flops_weight=lam, init="uniform")
    sel = gradient_search(model, plan, task, cfg, total)
    l1 = l1_baseline(model, plan, task, cfg, total)
    assert sel.detail["start"] in ("l1", "gates") and abs(sel.sparsity - 0.5) <= 0.05
    assert sel.metric == max(sel.detail["metric_gates"], sel.detail.get("metric_l1", float("-inf")))
    if lam == 0.0:
        assert sel.metric >= l1.metric and sel.detail["metric_l1"] == l1.metric
        if sel.detail["start"] == "l1":
            assert sel.removed == l1.removed
    else:  # λ > 0: L1 only competes when it has no more MACs than the gates' selection
        assert "metric_l1" in sel.detail or sel.detail["l1_macs"] > sel.detail["macs"]
        if "metric_l1" in sel.detail:
            assert sel.metric >= sel.detail["metric_l1"]
    off = gradient_search(model, plan, task, SearchConfig(sparsity=0.5, tolerance=0.05, steps=steps, flops_weight=lam,
                                                          init="uniform", safeguard=False), total)
    assert off.detail["start"] == "gates" and "metric_l1" not in off.detail
    assert sel.metric >= off.metric


def test_safeguard_with_round_to_keeps_widths_multiples():
    from hf_mixmatch.structured import gradient_search

    model, task, plan, total = _small_cnn_case(32)
    cfg = SearchConfig(sparsity=0.5, tolerance=0.1, steps=0, round_to=4)
    sel = gradient_search(model, plan, task, cfg, total)
    for g in plan.prunable:
        kept = g.size - len(sel.removed.get(g.index, []))
        assert kept >= 1 and (g.size % 4 or kept % 4 == 0), (g.root, g.size, kept)


# ------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("factory,shape", [(_ae, (2, 1, 8, 8)), (_hf_resnet, (2, 1, 16, 16)),
                                           (_hf_vit, (2, 1, 8, 8)), (_timm_resnet, (2, 1, 32, 32)),
                                           (_cifar_resnet, (2, 1, 12, 12))])
def test_save_load_round_trip_exact(factory, shape, tmp_path):
    model = factory()
    x = torch.rand(shape)
    plan = find_groups(model, x[:1])
    pruned, part = prune_physical(model, plan, _random_removed(plan, seed=3))
    recipe = {"example_shape": list(plan.example_shape), **part}
    out = save_structured(pruned, recipe, describe_base(model), tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "structured.json"]
    assert json.loads((out / "structured.json").read_text())["history"]
    loaded = load_structured(out)
    for (k, a), (k2, b) in zip(pruned.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.shape == b.shape
    with torch.no_grad():
        assert torch.equal(_out(pruned(x)), _out(loaded(x)))


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="save_structured"):
        load_structured(tmp_path)
    ae = _ae()
    plan = find_groups(ae, torch.rand(1, 1, 8, 8))
    pruned, part = prune_physical(ae, plan, _random_removed(plan))
    save_structured(pruned, {"example_shape": [1, 1, 8, 8], **part}, describe_base(ae), tmp_path / "a")
    from hf_mixmatch.errors import OutputDirError

    with pytest.raises(OutputDirError, match="overwrite"):
        save_structured(pruned, {"example_shape": [1, 1, 8, 8], **part}, describe_base(ae), tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["kwargs"]["widths"] = [8, 32]  # another base: replayed shapes no longer fit the weights
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError):
        load_structured(tmp_path / "a")


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_results_and_a_loadable_model(tmp_path, capsys):
    from hf_mixmatch.cli import main

    out = tmp_path / "run"
    argv = ["structured", "default", "--dataset", "default", "--sparsity", "0.5", "--tolerance", "0.02",
            "--calib-samples", "32", "--eval-samples", "32", "--search", "gradient", "--steps", "3", "--latency-runs", "1",
            "--flops-weight", "2.5", "--round-to", "2", "--layout", "body-head", "--output-dir", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["flops_weight"] == 2.5
    recipe = json.loads((out / "model" / "structured.json").read_text())
    assert recipe["flops_weight"] == 2.5 and recipe["options"]["flops_weight"] == 2.5
    assert recipe["options"]["layout"] == "body-head" and "body" in recipe["components"]
    assert 0 < recipe["search"]["gradient"]["macs"] < res["dense"]["flops"]
    assert recipe["search"]["gradient"]["start"] in ("gates", "l1")  # which selection the safeguard returned
    for key in ("dense", "pruned"):
        assert set(res[key]["latency_ms"]) == {"b1", "b32"}
        assert res[key]["params"] > 0 and res[key]["flops"] > 0 and 0.0 <= res[key]["accuracy"] <= 1.0
    assert abs(1 - res["pruned"]["params"] / res["dense"]["params"] - 0.5) <= 0.02
    assert res["pruned"]["flops"] < res["dense"]["flops"]
    loaded = load_structured(out / "model")
    assert count_params(loaded) == res["pruned"]["params"]
    # the model folder carries its card and preprocessing, and hf_mixmatch.from_pretrained checks the card
    import hf_mixmatch
    from huggingface_hub import ModelCard

    assert {"README.md", "preprocessor_config.json", "structured.json"} <= {p.name for p in (out / "model").iterdir()}
    block = ModelCard.load(out / "model" / "README.md").data.to_dict()["hf_mixmatch"]
    assert block["params"] == res["pruned"]["params"] and block["flops_dense"] == res["dense"]["flops"]
    assert block["metric"] == res["pruned"]["accuracy"]
    card_text = (out / "model" / "README.md").read_text()  # the reproduce command carries λ and the layout
    assert "--flops-weight 2.5" in card_text and "--layout body-head" in card_text and "--round-to 2" in card_text
    assert recipe["options"]["round_to"] == 2
    again = hf_mixmatch.from_pretrained(out / "model")
    assert count_params(again) == res["pruned"]["params"] and again.mixmatch_recipe["options"]["search"] == "gradient"
    # verify re-measures the share of parameters removed and the accuracy on the same samples
    report = hf_mixmatch.verify(out / "model", "default", eval_samples=32)
    assert report.measured_sparsity == pytest.approx(1 - res["pruned"]["params"] / res["dense"]["params"])
    assert report.measured_accuracy == pytest.approx(res["pruned"]["accuracy"]) and report.ok
    # an existing folder needs --overwrite; an impossible floor is a one-line error, exit code 2
    assert main(argv) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--metric-floor", "1.01"]) == 2
    assert "lower metric floor" in capsys.readouterr().err
    # the failed search replaced nothing: the earlier run is still whole
    assert json.loads((out / "results.json").read_text()) == res and (out / "model" / "README.md").is_file()
    bad = [a if a != "2.5" else "-1" for a in argv] + ["--overwrite"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "flops_weight must be" in err and len(err.splitlines()) == 1
    bad = [a if a != "2" else "0" for a in argv] + ["--overwrite"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "round_to must be" in err and len(err.splitlines()) == 1


def test_swin_mlp_units_and_heads_pruned_with_their_bias_table_columns():
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)
    swin = SwinForImageClassification(SwinConfig(image_size=16, patch_size=2, num_channels=1, embed_dim=8,
                                                 depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=5)).eval()
    x = torch.rand(2, 1, 16, 16)
    plan = find_groups(swin, x[:1])
    assert {g.root.rsplit(".", 1)[-1] for g in plan.prunable} == {"fc1", "attention"}
    heads = [g for g in plan.prunable if g.kind == "heads"]
    assert [(g.size, g.unit_width) for g in heads] == [(2, 4), (2, 8)]
    removed = _random_removed(plan)
    pruned, part = prune_physical(swin, plan, removed)
    block = pruned.swin.encoder.layers[0].blocks[0]
    assert block.mlp.fc1.out_features == 16
    att = block.attention
    assert att.q_proj.out_features == att.v_proj.out_features == 4 and att.o_proj.in_features == 4
    assert att.relative_position_bias.relative_position_bias_table.shape[-1] == 1
    assert part["heads"]["swin.encoder.layers.0.blocks.0.attention"] in ([0], [1])
    assert set(part["attributes"]["swin.encoder.layers.0.blocks.0.attention"].values()) == {1}
    with torch.no_grad(), GateHooks(swin, plan) as gates:
        gates.values = masks_from_removed(plan, removed)
        torch.testing.assert_close(pruned(x).logits, swin(x).logits, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------- card and hf_mixmatch.from_pretrained


def _saved_with_card(tmp_path, factory=_timm_resnet, shape=(2, 1, 32, 32), base="org/tiny-resnet"):
    from hf_mixmatch.card_structured import write_structured_card

    model = factory()
    x = torch.rand(shape)
    plan = find_groups(model, x[:1])
    pruned, part = prune_physical(model, plan, _random_removed(plan, seed=5))
    dense_n, n = count_params(model), count_params(pruned)
    recipe = {"example_shape": list(plan.example_shape), **part, "params": n, "params_dense": dense_n,
              "achieved_sparsity": 1 - n / dense_n, "target_sparsity": 0.5, "winner": "gradient",
              "search": {"gradient": {"metric": 0.8, "sparsity": 1 - n / dense_n, "seconds": 1.0}},
              "metric_name": "accuracy", "base_model": base, "dataset": "org/data",
              "groups": [{"root": g.root, "kind": g.kind, "units": g.size, "components": g.components,
                          "prunable": g.prunable, "removed": _random_removed(plan, seed=5).get(g.index, [])}
                         for g in plan.groups]}
    out = save_structured(pruned, recipe, describe_base(model), tmp_path / "m")
    results = {"model": base, "library": "timm", "dataset": "org/data", "eval_split": "test", "eval_samples": 64,
               "target_sparsity": 0.5, "achieved_sparsity": 1 - n / dense_n, "winner": "gradient",
               "metric_name": "accuracy", "metric_floor": 0.5,
               "dense": {"params": dense_n, "flops": 1000, "latency_ms": {"b1": 2.0, "b32": 20.0}, "accuracy": 0.9,
                         "top5": 1.0},
               "pruned": {"params": n, "flops": 600, "latency_ms": {"b1": 1.5, "b32": 12.0}, "accuracy": 0.8,
                          "top5": 0.95, "threads": 1, "latency_runs": 30}}
    write_structured_card(out, results, recipe)
    return model, pruned, out, x


def test_structured_card_metadata_and_body(tmp_path):
    from huggingface_hub import ModelCard

    _, pruned, out, _ = _saved_with_card(tmp_path)
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "org/tiny-resnet" and data["library_name"] == "timm"
    assert data["pipeline_tag"] == "image-classification"
    assert {"pruned", "structured", "hf-mixmatch", "structured-pruning"} <= set(data["tags"])
    block = data["hf_mixmatch"]
    assert block["method"] == "structured" and block["params"] == count_params(pruned)
    assert block["sparsity"] == pytest.approx(1 - block["params"] / block["params_dense"])
    assert block["flops"] == 600 and block["flops_dense"] == 1000
    assert block["latency_ms"]["pruned"] == {"b1": 1.5, "b32": 12.0} and block["latency_ms"]["dense"]["b32"] == 20.0
    assert block["search"]["winner"] == "gradient" and block["metric"] == 0.8 and block["metric_dense"] == 0.9
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["type"] == "accuracy" and metrics[0]["value"] == 0.8
    body = card.text
    assert "plain `transformers` / `timm` cannot load" in body and "hf_mixmatch.from_pretrained" in body
    assert "| parameters |" in body and "0.60×" in body and "structured.json" in body
    assert "hf-mixmatch structured org/tiny-resnet" in body
    # a local base is named in the body but never put in base_model
    from hf_mixmatch.card_structured import structured_card

    recipe = json.loads((out / "structured.json").read_text())
    local = structured_card({"model": "/tmp/my-model", "achieved_sparsity": 0.5, "dense": {"params": 2, "flops": 2},
                             "pruned": {"params": 1, "flops": 1, "accuracy": 0.5}},
                            {**recipe, "base_model": "/tmp/my-model"})
    assert "base_model" not in local.data.to_dict() and "`local:my-model`" in local.text
    assert "/tmp/my-model" not in str(local) and "# my-model-structured-50" in local.text  # no local path


def test_from_pretrained_loads_structured_folder_exactly(tmp_path):
    import hf_mixmatch

    _, pruned, out, x = _saved_with_card(tmp_path)
    loaded = hf_mixmatch.from_pretrained(out)
    for (k, a), (k2, b) in zip(pruned.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.shape == b.shape and torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(_out(pruned(x)), _out(loaded(x)))
    assert loaded.mixmatch_recipe == json.loads((out / "structured.json").read_text())
    assert loaded.mixmatch_claims["params"] == count_params(pruned)
    assert loaded.mixmatch_claims["method"] == "structured" and loaded.mixmatch_library == "timm"
    assert not loaded.training


def test_timm_preprocessing_travels_in_config(tmp_path):
    model = _timm_resnet()
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.25,), "std": (0.5,), "input_size": (1, 32, 32)}
    plan = find_groups(model, torch.rand(1, 1, 32, 32))
    pruned, part = prune_physical(model, plan, _random_removed(plan))
    base = describe_base(model)  # timm's pretrained_cfg travels in it
    out = save_structured(pruned, {"example_shape": [1, 1, 32, 32], **part}, base, tmp_path / "t")
    loaded = load_structured(out)
    assert tuple(loaded.pretrained_cfg["mean"]) == (0.25,) and tuple(loaded.pretrained_cfg["input_size"]) == (1, 32, 32)


def test_from_pretrained_detects_tampered_structured_claims(tmp_path):
    import hf_mixmatch
    from huggingface_hub import ModelCard

    from hf_mixmatch.errors import SparsityMismatchError

    _, pruned, out, _ = _saved_with_card(tmp_path)
    card = ModelCard.load(out / "README.md")
    card.data.hf_mixmatch["params"] += 1
    card.save(str(out / "README.md"))
    with pytest.raises(SparsityMismatchError, match="card claims"):
        hf_mixmatch.from_pretrained(out)
    assert count_params(hf_mixmatch.from_pretrained(out, check_sparsity=False)) == count_params(pruned)
    card.data.hf_mixmatch["params"] -= 1  # card right again, recipe wrong
    card.save(str(out / "README.md"))
    recipe = json.loads((out / "structured.json").read_text())
    recipe["params"] = recipe["params"] - 7
    (out / "structured.json").write_text(json.dumps(recipe))
    with pytest.raises(SparsityMismatchError, match="structured.json claims"):
        hf_mixmatch.from_pretrained(out)


def test_measure_many_interleaved_and_channels_last_leaves_models_alone():
    from hf_mixmatch.structured import measure_many

    ae = _ae()
    plan = find_groups(ae, torch.rand(1, 1, 8, 8))
    pruned, _ = prune_physical(ae, plan, _random_removed(plan))
    for cl in (False, True):
        stats = measure_many({"dense": ae, "pruned": pruned}, (1, 1, 8, 8), runs=2, threads=1, channels_last=cl)
        assert stats["pruned"]["params"] == count_params(pruned) and stats["dense"]["params"] == count_params(ae)
        assert stats["pruned"]["flops"] < stats["dense"]["flops"]
        assert all(v > 0 for s in stats.values() for v in s["latency_ms"].values())
        assert stats["dense"]["memory_format"] == ("channels_last" if cl else "contiguous")
    assert all(p.is_contiguous() for p in ae.parameters()) and all(p.is_contiguous() for p in pruned.parameters())
