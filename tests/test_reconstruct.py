"""SparseGPT reconstruction: closed-form least squares on tiny layers, exact counts, determinism, processes."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import save_tiny_transformers, tiny_transformers
from torch import nn

from hf_mixmatch.errors import ConfigError
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.masks import measure_sparsity, prune_count
from hf_mixmatch.reconstruct import (ReconstructSettings, nondominated_layers, reconstruct,
                                     reconstruction_candidates, sparsegpt_matrix)


def _problem(seed=0, d=12, rows=5, n=300):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    return x, torch.randn(1, rows, d, generator=g, dtype=torch.float64)


def _row_errors(x, w, v):
    return ((x @ (w - v)[0].T) ** 2).sum(0)  # per row: || X w_r - X v_r ||^2


def _least_squares(x, w, prune):
    """Per row: the kept weights minimizing || X w - X v || with v = 0 on the pruned entries."""
    out = torch.zeros_like(w)
    for r in range(w.shape[1]):
        keep = ~prune[0, r]
        sol = torch.linalg.lstsq(x[:, keep], x @ w[0, r], driver="gelsd").solution
        out[0, r, keep] = sol
    return out


def test_pruned_prefix_gives_the_least_squares_optimum():
    # When every pruned column precedes every kept one, sequential OBS compensates every error on all kept weights:
    # the result is exactly the least-squares optimum for that mask (undamped), whatever the block size.
    x, w = _problem()
    prune = torch.zeros_like(w, dtype=torch.bool)
    prune[..., :4] = True
    expected = _least_squares(x, w, prune)
    for blocksize in (1, 5, 128):
        new, pruned, reset = sparsegpt_matrix(w, (x.T @ x)[None], 0, blocksize=blocksize, damp=0.0, prune=prune)
        assert torch.equal(pruned, prune) and reset == 0
        torch.testing.assert_close(new, expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("seed,blocksize", [(0, 3), (1, 4), (2, 128), (3, 1)])
def test_any_mask_is_between_the_optimum_and_plain_masking(seed, blocksize):
    x, w = _problem(seed)
    k = 31
    new, pruned, _ = sparsegpt_matrix(w, (x.T @ x)[None], k, blocksize=blocksize, damp=0.01)
    assert int(pruned.sum()) == k and torch.equal(new[pruned], torch.zeros(k, dtype=new.dtype))
    masked = torch.where(pruned, torch.zeros_like(w), w)
    err = _row_errors(x, w, new)
    assert (err <= _row_errors(x, w, masked) + 1e-9).all()  # the safeguard makes this exact per row
    assert (err >= _row_errors(x, w, _least_squares(x, w, pruned)) - 1e-6).all()  # nothing beats the optimum
    assert err.sum() < _row_errors(x, w, masked).sum()  # and on correlated inputs it does compensate


def test_block_quotas_add_up_to_the_layer_count_for_every_count():
    x, w = _problem(4, d=10, rows=3)
    h = (x.T @ x)[None]
    for k in range(0, 31):
        _, pruned, _ = sparsegpt_matrix(w, h, k, blocksize=3)
        assert int(pruned.sum()) == k


def test_hostile_layer_statistics():
    w = torch.randn(1, 4, 6, dtype=torch.float64)
    zeros = torch.zeros(1, 6, 6, dtype=torch.float64)  # every input dead: still a valid, exact mask
    new, pruned, _ = sparsegpt_matrix(w, zeros, 12)
    assert int(pruned.sum()) == 12 and torch.isfinite(new).all()
    rank_one = torch.ones(1, 6, 6, dtype=torch.float64)  # singular H: damping makes it factorizable
    new, pruned, _ = sparsegpt_matrix(w, rank_one, 5)
    assert int(pruned.sum()) == 5 and torch.isfinite(new).all()
    with pytest.raises(ConfigError):
        ReconstructSettings(damp=-1.0)
    with pytest.raises(ConfigError):
        ReconstructSettings(method="obc")


def _grouped_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 1, groups=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.Flatten(),
                         nn.Linear(8 * 3 * 3, 5)).eval()


@pytest.mark.parametrize("target", ["pruned", "dense"])
@pytest.mark.parametrize("kind", ["vit", "swin", "resnet", "convnext", "grouped"])
def test_exact_per_layer_counts_after_reconstruction(kind, target):
    model = _grouped_cnn() if kind == "grouped" else tiny_transformers(kind)
    forward = (lambda m, x: m(x)) if kind == "grouped" else None
    layers = list_prunable(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 8 if kind == "grouped" else 16, 8 if kind == "grouped" else 16, generator=g)
    rhos = [0.0, 0.5, 0.97, 1.0, 1 / 3]
    sparsities = {layer.name: rhos[i % len(rhos)] for i, layer in enumerate(layers)}
    kwargs = {"forward": forward} if forward else {}
    out = reconstruct(model, layers, sparsities, x, settings=ReconstructSettings(batch_size=5, blocksize=7, target=target),
                      **kwargs)
    _, per_layer = measure_sparsity(model, layers)
    for layer in layers:
        k = prune_count(sparsities[layer.name], layer.numel)
        assert per_layer[layer.name] == k / layer.numel, layer.name  # no kept weight became zero, none was missed
        assert int((~out["masks"][layer.name]).sum()) == k
    assert out["masked_only"] == []


def test_first_layer_output_error_not_above_masking_and_deterministic():
    model = _grouped_cnn()
    layers = list_prunable(model)
    x = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    dense = {layer.name: model.get_submodule(layer.name).weight.detach().clone() for layer in layers}
    sparsities = {layer.name: 0.6 for layer in layers}

    def run():
        for layer in layers:
            model.get_submodule(layer.name).weight.data.copy_(dense[layer.name])
        reconstruct(model, layers, sparsities, x, settings=ReconstructSettings(batch_size=4), forward=lambda m, v: m(v))
        return {layer.name: model.get_submodule(layer.name).weight.detach().clone() for layer in layers}

    first, second = run(), run()
    for name in first:
        assert torch.equal(first[name], second[name])
    conv = model[0]
    with torch.no_grad():
        ref = nn.functional.conv2d(x, dense["0"], conv.bias, padding=1)
        rec = nn.functional.conv2d(x, first["0"], conv.bias, padding=1)
        masked = nn.functional.conv2d(x, torch.where(first["0"] == 0, 0.0, dense["0"]), conv.bias, padding=1)
    assert ((rec - ref) ** 2).sum() < ((masked - ref) ** 2).sum()


def test_candidate_rule_is_non_dominated_depth():
    pts = [{"id": "a", "sparsity": 0.5, "accuracy": 0.9}, {"id": "b", "sparsity": 0.6, "accuracy": 0.8},
           {"id": "c", "sparsity": 0.5, "accuracy": 0.7}, {"id": "d", "sparsity": 0.4, "accuracy": 0.6},
           {"id": "e", "sparsity": 0.6, "accuracy": 0.5}]
    assert nondominated_layers(pts) == {"a": 1, "b": 1, "c": 2, "e": 2, "d": 3}
    assert reconstruction_candidates(pts, 1) == ["a", "b"]
    assert reconstruction_candidates(pts, 2) == ["a", "b", "c", "e"]


def test_run_candidates_add_curve_variants_and_twins_of_a_reconstructed_allocation():
    """Rule 1 alone would skip the curve strategies' variants (built for reconstruction, poor when masked) and
    leave a masked twin (same allocation, another signal) to compete with its own reconstruction."""
    from types import SimpleNamespace

    from hf_mixmatch.reconstruct_stage import candidates

    layers = [SimpleNamespace(name="l0"), SimpleNamespace(name="l1")]

    def var(vid, strategy, acc, alloc):
        return {"id": vid, "strategy": strategy, "sparsity": sum(alloc) / 2, "accuracy": acc,
                "target_layers": {"l0": alloc[0], "l1": alloc[1]}}

    alive = [var("act-balanced", "balanced", 0.90, (0.5, 0.7)), var("mag-balanced", "balanced", 0.89, (0.5, 0.7)),
             var("act-rd_balanced", "rd_balanced", 0.40, (0.3, 0.9)),  # dominated masked: not rule 1's
             var("mag-rd_balanced", "rd_balanced", 0.35, (0.3, 0.9)),
             var("act-conservative", "conservative", 0.95, (0.2, 0.2)),
             var("act-aggressive", "aggressive", 0.20, (0.9, 0.9)),
             {**var("act-rd_p90", "rd_p90", 0.10, (0.4, 0.9)), "dropped_by": "act-aggressive"},  # raced out masked
             {**var("act-p90", "percentile_90", 0.12, (0.85, 0.8)), "dropped_by": "act-aggressive"}]
    sgpt = SimpleNamespace(reconstruct_depth=1, ranges="rd", rd_distortion="sparsegpt")
    got = candidates(alive, sgpt, layers)
    assert got[:3] == ["act-balanced", "act-conservative", "act-aggressive"]  # rule 1: the one-shot front
    assert set(got[3:]) == {"act-rd_balanced", "mag-rd_balanced", "mag-balanced", "act-rd_p90"} and len(got) == 7
    magnitude_curves = SimpleNamespace(reconstruct_depth=1, ranges="rd", rd_distortion="magnitude")
    assert candidates(alive, magnitude_curves, layers) == ["act-balanced", "act-conservative", "act-aggressive",
                                                           "mag-balanced"]


def test_pipeline_reconstructs_candidates_and_saves_what_it_evaluated(tmp_path, image_dataset):
    from hf_mixmatch.evaluate import evaluate
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    model_dir = save_tiny_transformers(tmp_path / "m", "vit")
    run = run_mixmatch(PruneConfig(model="unused", dataset=str(image_dataset), output_dir=str(tmp_path / "run"),
                                   progress=False, calib_samples=16, save="pareto", reconstruct="sparsegpt",
                                   reconstruct_depth=9, strategies=("conservative", "aggressive", "balanced"),
                                   range_targets=(0.5, 0.7), baselines=("sparsegpt", "lamp")),
                       loaded=load_model(model_dir))
    res = run.results
    assert res["reconstruct"]["candidates"] and "reconstruct_s" in res["timings"]
    done = [v for v in run.variants if v.get("reconstructed")]
    assert {v["id"] for v in done if "same_as" not in v} == set(res["reconstruct"]["candidates"])
    assert all(v["masked"]["sparsity"] == v["sparsity"] for v in done)  # reconstruction keeps the sparsity
    assert all(b.get("reconstructed") for b in res["baselines"])  # same treatment for the baselines
    saved = [v for v in run.pareto if v.get("reconstructed")]
    # depth 9 >= the 9 variants: every variant is a candidate (on random weights any of them may be on the front)
    assert saved, "the front should hold a reconstructed variant"
    v = saved[0]
    recipe = json.loads((tmp_path / "run" / v["path"] / "mixmatch.json").read_text())
    assert recipe["reconstructed"] is True and recipe["reconstruct"]["damp"] == 0.01
    reloaded = load_model(str(tmp_path / "run" / v["path"]))
    layers = list_prunable(reloaded.model)
    overall, _ = measure_sparsity(reloaded.model, layers)
    assert math.isclose(overall, v["sparsity"])
    from hf_mixmatch.data import load_data

    data = load_data(str(image_dataset), reloaded.preprocess, calib_samples=16, num_labels=reloaded.num_labels)
    assert evaluate(reloaded.model.eval(), data.eval)["accuracy"] == v["accuracy"]
    card = (tmp_path / "run" / v["path"] / "README.md").read_text()
    assert "**Reconstructed:** yes" in card and "blocks of 128 columns" in card and "--reconstruct sparsegpt" in card


def test_bad_reconstruct_settings_are_one_line_errors(tmp_path, capsys):
    from hf_mixmatch.cli import main

    rc = main(["prune", "default", "--output-dir", str(tmp_path / "o"), "--reconstruct-depth", "0",
               "--reconstruct", "sparsegpt"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hf-mixmatch: error:") and "--reconstruct-depth" in err[0]
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("target,refit", [("pruned", 0), ("dense", 0), ("dense", 20)])
def test_two_processes_reconstruct_like_one(tmp_path, target, refit):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.fail("torchrun is not installed next to this python: install torch in the test environment")
    model_dir = save_tiny_transformers(tmp_path / "m", "vit")
    worker = os.path.join(os.path.dirname(__file__), "_recon_dist_worker.py")
    # gloo on CPU, also on a GPU machine (2 processes on 1 GPU would share one device)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RANK", None)
    for cmd, out in (([sys.executable], "one.pt"), ([torchrun, "--standalone", "--nproc_per_node", "2"], "two.pt")):
        proc = subprocess.run(cmd + [worker, str(model_dir), str(tmp_path / out), target, str(refit)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["processes"] == 1 and two["processes"] == 2
    # Hessians summed over processes differ from one process's only in rounding (float32 forwards, summation order).
    # SparseGPT's weights keep that to 1e-5. The refit solves each row's kept weights exactly, so along the Hessian's
    # weakest directions it magnifies rounding ~1000x; those directions barely move the outputs, which stay equal.
    for name, w in one["weights"].items():
        assert torch.equal(w == 0, two["weights"][name] == 0), name  # same masks
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-6 if refit == 0 else 5e-4)
        torch.testing.assert_close(two["activation"][name], one["activation"][name], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(two["logits"], one["logits"], rtol=1e-5, atol=1e-5)


def test_layers_reading_one_input_share_one_hessian():
    from hf_mixmatch.activations import accumulate_hessians, forward_groups

    model = tiny_transformers("vit")
    layers = list_prunable(model)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    groups, uncalled = forward_groups(model, layers, x[:1])
    assert not uncalled and [layer.name for g in groups for layer in g] == [layer.name for layer in layers]
    qkv = next(g for g in groups if len(g) == 3)
    assert {layer.role for layer in qkv} == {"attn_qkv"}
    shared = accumulate_hessians(model, qkv, x, batch_size=4)
    assert shared[qkv[0].name] is shared[qkv[1].name] is shared[qkv[2].name]
    captured = []
    handle = model.get_submodule(qkv[2].name).register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    feats = torch.cat(captured).reshape(-1, captured[0].shape[-1]).double()
    torch.testing.assert_close(shared[qkv[2].name][0], feats.T @ feats, rtol=1e-9, atol=1e-9)


def test_transformers_conv1d_is_reconstructed_transposed():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(6)
    model = nn.Sequential(Conv1D(8, 6), nn.ReLU(), Conv1D(3, 8)).eval()  # weights (in, out)
    layers = list_prunable(model, num_labels=3)
    assert [layer.kind for layer in layers] == ["conv1d_t", "conv1d_t"]
    x = torch.randn(10, 5, 6, generator=torch.Generator().manual_seed(7))
    dense = model[0].weight.detach().clone()
    reconstruct(model, layers, {layer.name: 0.5 for layer in layers}, x, forward=lambda m, v: m(v))
    _, per_layer = measure_sparsity(model, layers)
    assert all(per_layer[layer.name] == prune_count(0.5, layer.numel) / layer.numel for layer in layers)
    w = model[0].weight.detach()
    feats = x.reshape(-1, 6)
    rec, masked = feats @ w, feats @ torch.where(w == 0, 0.0, dense)
    assert ((rec - feats @ dense) ** 2).sum() <= ((masked - feats @ dense) ** 2).sum()


def test_fine_tuning_starts_from_the_reconstructed_weights(tmp_path, image_dataset, monkeypatch):
    from hf_mixmatch import finetune as finetune_module
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    starts = []
    real = finetune_module.finetune

    def spy(model, layers, *args, **kwargs):
        starts.append({layer.name: model.get_submodule(layer.name).weight.detach().clone() for layer in layers})
        return real(model, layers, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "finetune", spy)
    run = run_mixmatch(PruneConfig(model="unused", dataset=str(image_dataset), output_dir=str(tmp_path / "run"),
                                   progress=False, calib_samples=16, save="none", reconstruct="sparsegpt",
                                   reconstruct_depth=1, strategies=("aggressive",), signals=("magnitude",),
                                   range_targets=(0.5,), finetune_steps=2, finetune_samples=32),
                       loaded=load_model(save_tiny_transformers(tmp_path / "m", "vit")))
    (v,) = run.variants
    assert v["reconstructed"] and v["finetune"]["sparsity_after"] == v["sparsity"]
    loaded = load_model(save_tiny_transformers(tmp_path / "m2", "vit"))
    layers = list_prunable(loaded.model)
    from hf_mixmatch.data import load_data

    data = load_data(str(image_dataset), loaded.preprocess, calib_samples=16, num_labels=loaded.num_labels)
    device = next(iter(starts[0].values())).device  # the run's device (CUDA on a GPU machine)
    settings = run.results["reconstruct"]["settings"]  # what the run records re-derives its weights
    assert settings["target"] == "dense" and settings["batch_size"] == 64
    reconstruct(loaded.model.to(device).eval(), layers, v["target_layers"], data.calib.tensors[0].to(device),
                settings=ReconstructSettings(**settings))
    for layer in layers:  # what fine-tuning started from is the reconstruction, not a plain mask
        assert torch.equal(starts[0][layer.name], loaded.model.get_submodule(layer.name).weight.detach())


def test_reconstruction_defaults_to_rd_ranges_unless_ranges_are_given():
    """The benchmark's finding made the default: with SparseGPT, RD/DP's ranges (docs/BENCHMARKS_quality.md)."""
    from hf_mixmatch.pipeline import PruneConfig

    assert PruneConfig(model="m", output_dir="o").ranges == "observed"
    assert PruneConfig(model="m", output_dir="o", reconstruct="sparsegpt").ranges == "rd"
    assert PruneConfig(model="m", output_dir="o", reconstruct="sparsegpt", ranges="observed").ranges == "observed"
    assert PruneConfig(model="m", output_dir="o", ranges="preset").ranges == "preset"
    # and its RD curves measure what a reconstructed variant pays, unless told otherwise
    assert PruneConfig(model="m", output_dir="o", reconstruct="sparsegpt").rd_distortion == "sparsegpt"
    assert PruneConfig(model="m", output_dir="o", ranges="rd").rd_distortion == "magnitude"
    assert PruneConfig(model="m", output_dir="o", reconstruct="sparsegpt", rd_distortion="magnitude").rd_distortion == "magnitude"
    with pytest.raises(ConfigError, match="--rd-distortion"):
        PruneConfig(model="m", output_dir="o", rd_distortion="obs")


def test_reconstructing_run_takes_ranges_from_reconstructed_rd_curves(tmp_path, image_dataset):
    """The default reconstructing run: ranges = min/max of RD/DP on SparseGPT-distortion curves, recorded as such."""
    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch
    from hf_mixmatch.rd import default_grid, distortion_curves
    from hf_mixmatch.rd_dp import rd_ranges

    run = run_mixmatch(PruneConfig(model="unused", dataset=str(image_dataset), output_dir=str(tmp_path / "run"),
                                   progress=False, calib_samples=16, save="none", reconstruct="sparsegpt",
                                   reconstruct_depth=1, strategies=("conservative", "aggressive"),
                                   signals=("magnitude",), range_targets=(0.4, 0.7), rd_grid_step=0.1),
                       loaded=load_model(save_tiny_transformers(tmp_path / "m", "vit")))
    table = run.results["ranges"]
    assert table["source"] == "rd:sparsegpt"
    loaded = load_model(save_tiny_transformers(tmp_path / "m2", "vit"))
    layers = list_prunable(loaded.model)
    data = load_data(str(image_dataset), loaded.preprocess, calib_samples=16, num_labels=loaded.num_labels)
    grid = default_grid(0.1)
    curves = distortion_curves(loaded.model.eval(), layers, data.calib.tensors[0], grid=grid, method="sparsegpt")
    expected = rd_ranges(curves, layers, (0.4, 0.7), grid=grid)
    magnitude = rd_ranges(distortion_curves(loaded.model, layers, data.calib.tensors[0], grid=grid), layers,
                          (0.4, 0.7), grid=grid)
    for name, (lo, hi) in expected.items():
        assert table["ranges"][name][:2] == pytest.approx([lo, hi], abs=1e-9)
    assert expected != magnitude  # the two curve families allocate differently on this model
