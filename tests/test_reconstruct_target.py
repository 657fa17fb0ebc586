"""Reconstruction towards the dense model's outputs (``--reconstruct-target dense``): the closed form, the
equivalence with SparseGPT where the inputs are unchanged, the output error against the dense model, the CLI."""

import json

import torch
from torch import nn

from hf_mixmatch.activations import accumulate_cross, accumulate_hessians
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.masks import prune_count
from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct, sparsegpt_matrix


def _problem(seed=0, n=400, d=12, r=5, noise=0.05):
    """Pruned-model inputs ``xp`` (n, d); dense-model inputs ``xd``: a systematic distortion of them (what the
    layers pruned earlier do) plus a little noise; weights (1, r, d)."""
    g = torch.Generator().manual_seed(seed)
    xp = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    distortion = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    xd = xp @ distortion + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(1, r, d, generator=g, dtype=torch.float64)
    return xp, xd, w


def _dense_error(v, w, xp, xd):
    """sum over samples of ||W x_dense - V x_pruned||^2: what the dense target minimises."""
    return float(((xd @ w[0].T) - (xp @ v[0].T)).pow(2).sum())


def test_nothing_pruned_is_the_least_squares_fit_of_the_dense_outputs():
    xp, xd, w = _problem()
    h, cross = (xp.T @ xp)[None], (xd.T @ xp)[None]
    new, pruned, _ = sparsegpt_matrix(w, h, 0, damp=1e-12, cross=cross)
    closed = torch.linalg.lstsq(xp, xd @ w[0].T).solution.T  # argmin_V ||xd W^T - xp V^T||
    assert not pruned.any()
    torch.testing.assert_close(new[0], closed, rtol=1e-6, atol=1e-8)
    assert _dense_error(new, w, xp, xd) < _dense_error(w, w, xp, xd)  # the refit beats the unchanged weights


def test_unchanged_inputs_give_exactly_sparsegpt():
    xp, _, w = _problem(seed=1)
    h = (xp.T @ xp)[None]
    for k in (0, 17, 40):
        plain = sparsegpt_matrix(w, h, k, blocksize=5)
        towards_dense = sparsegpt_matrix(w, h, k, blocksize=5, cross=h.clone())
        assert torch.equal(plain[1], towards_dense[1])
        torch.testing.assert_close(towards_dense[0], plain[0], rtol=0, atol=1e-12)


def test_same_mask_lower_dense_output_error_than_sparsegpt_and_masking():
    xp, xd, w = _problem(seed=2)
    h, cross = (xp.T @ xp)[None], (xd.T @ xp)[None]
    for k in (15, 30, 45):
        _, mask, _ = sparsegpt_matrix(w, h, k)
        plain, _, _ = sparsegpt_matrix(w, h, k, prune=mask)
        ours, ours_mask, _ = sparsegpt_matrix(w, h, k, prune=mask, cross=cross)
        assert torch.equal(ours_mask, mask) and int((ours == 0).sum()) >= k and bool((ours[mask] == 0).all())
        masked = torch.where(mask, torch.zeros_like(w), w)
        e_ours, e_plain, e_mask = (_dense_error(v, w, xp, xd) for v in (ours, plain, masked))
        assert e_ours <= e_mask and e_ours < e_plain, (k, e_ours, e_plain, e_mask)


def _mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 6)).eval()


def test_cross_term_against_a_direct_computation():
    model, dense = _mlp(), _mlp()
    layers = list_prunable(model)
    with torch.no_grad():
        model[0].weight[:, :5] = 0  # the "pruned" model: the first layer changed, so the later inputs differ
    x = torch.randn(30, 10, generator=torch.Generator().manual_seed(4))
    h, cross = accumulate_cross(model, dense, [layers[1]], x, batch_size=7, forward=lambda m, v: m(v))
    xp, xd = torch.relu(model[0](x)).double(), torch.relu(dense[0](x)).double()
    torch.testing.assert_close(h[layers[1].name][0], xp.T @ xp)
    torch.testing.assert_close(cross[layers[1].name][0], xd.T @ xp)
    torch.testing.assert_close(h[layers[1].name], accumulate_hessians(model, [layers[1]], x, batch_size=7,
                                                                      forward=lambda m, v: m(v))[layers[1].name])


def test_model_outputs_closer_to_the_dense_model_with_exact_counts():
    x = torch.randn(256, 10, generator=torch.Generator().manual_seed(5))
    dense = _mlp()
    with torch.no_grad():
        reference = dense(x)
    sparsities = {"0": 0.7, "2": 0.7, "4": 0.5}
    out = {}
    for target in ("pruned", "dense"):
        model = _mlp()
        layers = list_prunable(model, num_labels=6)
        reconstruct(model, layers, sparsities, x, settings=ReconstructSettings(batch_size=64, target=target),
                    forward=lambda m, v: m(v))
        for layer in layers:
            zeros = int((model.get_submodule(layer.name).weight == 0).sum())
            assert zeros == prune_count(sparsities[layer.name], layer.numel), (target, layer.name)
        with torch.no_grad():
            out[target] = (model(x) - reference).pow(2).sum().item()
        out[target + "_first"] = model[0].weight.detach().clone()
    # the first layer sees the same inputs either way: the same weights; the later ones aim at the dense outputs
    torch.testing.assert_close(out["dense_first"], out["pruned_first"], rtol=0, atol=1e-6)
    assert out["dense"] < out["pruned"], out


def test_cli_records_the_target_and_the_card_reproduces_it(tmp_path):
    from hf_mixmatch.cli import main

    base = ["prune", "default", "--reconstruct", "sparsegpt", "--strategies", "aggressive", "--signals", "magnitude",
            "--save", "pareto", "--quiet", "--eval", "full", "--ranges", "preset"]
    for target, flag in (("dense", []), ("pruned", ["--reconstruct-target", "pruned"])):  # dense: the default
        out = tmp_path / target
        assert main(base + ["--output-dir", str(out), *flag]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["reconstruct"]["settings"]["target"] == target
        saved = [v for v in results["variants"] if v.get("path") and v.get("reconstructed")]
        assert saved
        recipe = json.loads((out / saved[0]["path"] / "mixmatch.json").read_text())
        assert recipe["reconstruct"]["target"] == target
        assert f"--reconstruct-target {target}" in (out / saved[0]["path"] / "README.md").read_text()


def test_a_bad_target_is_a_one_line_error_naming_the_choices(tmp_path, capsys):
    import pytest

    from hf_mixmatch.cli import main
    from hf_mixmatch.config import PruneConfig
    from hf_mixmatch.errors import ConfigError

    with pytest.raises(ConfigError, match="dense"):
        PruneConfig(model="default", output_dir=str(tmp_path / "c"), reconstruct_target="outputs")
    with pytest.raises(ConfigError, match="pruned"):
        ReconstructSettings(target="outputs")
    rc = main(["prune", "default", "--reconstruct", "sparsegpt", "--reconstruct-target", "outputs",
               "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--reconstruct-target" in err[0] and "dense" in err[0]
    assert not (tmp_path / "o").exists()
