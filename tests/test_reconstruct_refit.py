"""The refit of the kept weights after SparseGPT: the least-squares optimum for the mask, never worse, exact zeros."""

import pytest
import torch
from conftest import tiny_transformers

from hf_mixmatch.errors import ConfigError
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.masks import prune_count
from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct, refit_kept, sparsegpt_matrix


def _problem(seed, d=16, rows=6, n=400, groups=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(groups, n, d, generator=g, dtype=torch.float64) @ torch.randn(groups, d, d, generator=g,
                                                                                 dtype=torch.float64)
    return x, torch.randn(groups, rows, d, generator=g, dtype=torch.float64)


def _damped_optimum(h, lam, target, prune):
    """Closed form, row by row: argmin over v (zero where pruned) of (v - t) (H + lam I) (v - t)^T."""
    out = torch.zeros_like(target)
    for gi in range(target.shape[0]):
        hd = h[gi] + lam[gi] * torch.eye(h.shape[-1], dtype=h.dtype)
        for r in range(target.shape[1]):
            keep = ~prune[gi, r]
            out[gi, r, keep] = torch.linalg.solve(hd[keep][:, keep], (target[gi, r] @ hd)[keep])
    return out


def _damped_error(v, h, lam, target):
    hd = h + lam[:, None, None] * torch.eye(h.shape[-1], dtype=h.dtype)
    diff = v - target
    return torch.einsum("grd,gde,gre->gr", diff, hd, diff)


@pytest.mark.parametrize("seed,groups,cross", [(0, 1, False), (1, 2, False), (2, 1, True), (3, 3, True)])
def test_refit_reaches_the_closed_form_optimum_for_the_mask(seed, groups, cross):
    x, w = _problem(seed, groups=groups)
    h = x.transpose(1, 2) @ x
    # dense target: inputs of the dense model differ from the pruned model's
    c = (x + 0.3 * torch.randn_like(x)).transpose(1, 2) @ x if cross else None
    k = int(0.75 * w.numel())
    base, pruned, _ = sparsegpt_matrix(w, h, k, blocksize=5, damp=0.01, cross=c)
    refit, pruned2, reset = sparsegpt_matrix(w, h, k, blocksize=5, damp=0.01, cross=c, refit=64)
    assert torch.equal(pruned, pruned2) and reset == 0  # the mask is SparseGPT's; the refit only moves kept weights
    assert int(pruned.sum()) == k and bool((refit[pruned] == 0).all())
    lam = 0.01 * h.diagonal(dim1=-2, dim2=-1).mean(-1)
    lin = w @ h if c is None else w @ c
    hd_inv = torch.linalg.inv(h + lam[:, None, None] * torch.eye(h.shape[-1], dtype=h.dtype))
    target = (lin + lam[:, None, None] * w) @ hd_inv  # the unconstrained (ridge) optimum SparseGPT starts from
    expected = _damped_optimum(h, lam, target, pruned)
    torch.testing.assert_close(refit, expected, rtol=1e-7, atol=1e-9)
    # and on correlated inputs SparseGPT alone is strictly short of it
    assert _damped_error(base, h, lam, target).sum() > _damped_error(refit, h, lam, target).sum() * (1 + 1e-6)


def test_each_step_lowers_the_error_and_keeps_pruned_entries_zero():
    x, w = _problem(5, d=30, rows=4)
    h = x.transpose(1, 2) @ x
    base, pruned, _ = sparsegpt_matrix(w, h, int(0.6 * w.numel()), blocksize=7)
    lam = 0.01 * h.diagonal(dim1=-2, dim2=-1).mean(-1)
    errors = []
    for iters in range(0, 12):
        v = refit_kept(base, ~pruned, h, lam, w, iters=iters)
        assert bool((v[pruned] == 0).all())
        errors.append(_damped_error(v, h, lam, w))
    for before, after in zip(errors, errors[1:]):
        assert (after <= before * (1 + 1e-12) + 1e-12).all()
    assert errors[-1].sum() < errors[0].sum()


def test_hostile_statistics_stay_finite():
    w = torch.randn(1, 4, 6, dtype=torch.float64)
    for h in (torch.zeros(1, 6, 6, dtype=torch.float64), torch.ones(1, 6, 6, dtype=torch.float64)):
        new, pruned, _ = sparsegpt_matrix(w, h, 12, refit=20)
        assert int(pruned.sum()) == 12 and torch.isfinite(new).all() and bool((new[pruned] == 0).all())
    every = torch.ones(1, 4, 6, dtype=torch.bool)  # everything pruned: nothing to refit
    assert bool((refit_kept(torch.zeros_like(w), ~every, torch.eye(6)[None].double(), torch.ones(1).double(), w,
                            iters=5) == 0).all())
    with pytest.raises(ConfigError):
        ReconstructSettings(refit=-1)


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_model_refit_keeps_exact_counts_and_lowers_layer_error(kind):
    model = tiny_transformers(kind)
    layers = list_prunable(model, num_labels=model.config.num_labels)
    inputs = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sparsities = {layer.name: 0.7 for layer in layers}
    with torch.no_grad():
        dense_logits = model(inputs).logits
    errors = {}
    for refit in (0, 32):
        m = tiny_transformers(kind)
        masks = reconstruct(m, layers, sparsities, inputs, settings=ReconstructSettings(refit=refit))["masks"]
        for layer in layers:
            assert int((~masks[layer.name]).sum()) == prune_count(0.7, layer.numel)
        with torch.no_grad():
            errors[refit] = float(((m(inputs).logits - dense_logits) ** 2).mean())
    assert errors[32] < errors[0]


def test_cli_records_the_refit_and_the_card_reproduces_it(tmp_path, capsys):
    import json

    from hf_mixmatch.cli import main

    out = tmp_path / "run"
    assert main(["prune", "default", "--reconstruct", "sparsegpt", "--reconstruct-refit", "8", "--strategies",
                 "aggressive", "--signals", "magnitude", "--save", "pareto", "--quiet", "--eval", "full", "--ranges",
                 "preset", "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["reconstruct"]["settings"]["refit"] == 8
    saved = [v for v in results["variants"] if v.get("path") and v.get("reconstructed")]
    assert saved
    recipe = json.loads((out / saved[0]["path"] / "mixmatch.json").read_text())
    assert recipe["reconstruct"]["refit"] == 8
    card = (out / saved[0]["path"] / "README.md").read_text()
    assert "--reconstruct-refit 8" in card and "8 conjugate-gradient steps" in card
    capsys.readouterr()
    rc = main(["prune", "default", "--reconstruct", "sparsegpt", "--reconstruct-refit", "-1", "--output-dir",
               str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--reconstruct-refit" in err[0]
    assert not (tmp_path / "bad").exists()
