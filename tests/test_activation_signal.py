"""The ``activation`` signal (Wanda's |w_ij| * ||x_j||_2) against brute force, and the ``wanda`` baseline."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from hf_mixmatch import activations
from hf_mixmatch.allocators import allocate
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.masks import apply_sparsities, prune_count
from hf_mixmatch.signals import compute_scores


def _plain(model, x):
    return model(x)


def _scores(model, x, signals=("activation", "activation_row"), batch_size=3):
    layers = list_prunable(model, num_labels=None)
    calib = TensorDataset(x, torch.zeros(len(x), dtype=torch.long))
    return layers, compute_scores(model, layers, calib, signals=signals, batch_size=batch_size, forward=_plain,
                                  progress=False)


def test_linear_matches_brute_force_over_tokens():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 3)).eval()
    x = torch.randn(7, 4, 6)  # 7 samples x 4 tokens
    layers, scores = _scores(model, x)
    with torch.no_grad():
        hidden = model[1](model[0](x))
    for name, inp in (("0", x), ("2", hidden)):
        norm = torch.sqrt((inp.reshape(-1, inp.shape[-1]).double() ** 2).sum(0))  # over every token of every sample
        expected = model.get_submodule(name).weight.detach().double().abs() * norm[None, :]
        torch.testing.assert_close(scores["activation"][name].double(), expected, rtol=1e-5, atol=1e-7)


def _brute_conv_norms(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``(G, C/G * kh * kw)`` by explicit loops over output positions (padding done by hand)."""
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    if conv.padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    else:
        ph, pw = conv.padding
        pads = (pw, pw, ph, ph)
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    xp = torch.nn.functional.pad(x.double(), pads, mode=mode)
    g = conv.groups
    cg = conv.in_channels // g
    out = torch.zeros(g, cg * kh * kw, dtype=torch.float64)
    for i in range(0, xp.shape[2] - dh * (kh - 1), sh):
        for j in range(0, xp.shape[3] - dw * (kw - 1), sw):
            patch = xp[:, :, i : i + dh * (kh - 1) + 1 : dh, j : j + dw * (kw - 1) + 1 : dw]  # (N, C, kh, kw)
            for grp in range(g):
                out[grp] += (patch[:, grp * cg : (grp + 1) * cg].reshape(len(x), -1) ** 2).sum(0)
    return out


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), groups=2, dilation=(1, 2)),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, padding="same", padding_mode="reflect"),
])
def test_conv_matches_brute_force_per_channel_and_kernel_position(kwargs, monkeypatch):
    torch.manual_seed(1)
    conv = nn.Conv2d(**kwargs)
    model = nn.Sequential(conv).eval()
    x = torch.randn(5, kwargs["in_channels"], 7, 6)
    monkeypatch.setattr(activations, "CHUNK_ELEMENTS", 50)  # many chunks: accumulation must not depend on it
    _, scores = _scores(model, x)
    norms = _brute_conv_norms(conv, x).sqrt()
    g = conv.groups
    w = conv.weight.detach().double()
    expected = (w.reshape(g, w.shape[0] // g, -1).abs() * norms[:, None, :]).reshape(w.shape)
    torch.testing.assert_close(scores["activation"]["0"].double(), expected, rtol=1e-5, atol=1e-7)


def test_transformers_conv1d_is_read_transposed():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(2)
    model = nn.Sequential(Conv1D(5, 4), nn.ReLU(), nn.Linear(5, 2)).eval()  # Conv1D(nf=out, nx=in): weight (4, 5)
    x = torch.randn(6, 3, 4)
    layers, scores = _scores(model, x)
    assert layers[0].kind == "conv1d_t"
    norm = torch.sqrt((x.reshape(-1, 4).double() ** 2).sum(0))
    expected = model[0].weight.detach().double().abs() * norm[:, None]  # (in, out): input features are rows
    torch.testing.assert_close(scores["activation"]["0"].double(), expected, rtol=1e-5, atol=1e-7)


def test_row_ranks_give_wanda_per_output_row_masks():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5)).eval()
    x = torch.randn(8, 3, 6, 6)
    layers, scores = _scores(model, x)
    weights = {layer.name: model.get_submodule(layer.name).weight for layer in layers}
    alloc = allocate("wanda", weights=weights, layers=layers, target=0.5, scores=scores)
    assert alloc.rank_by == "activation_row"
    original = {n: w.detach().clone() for n, w in weights.items()}
    masks = apply_sparsities(model, layers, alloc.sparsities, scores[alloc.rank_by])
    for layer in layers:
        keep = masks[layer.name].reshape(layer.shape[0], -1)
        act = scores["activation"][layer.name].reshape(layer.shape[0], -1)
        k = prune_count(alloc.sparsities[layer.name], layer.numel)
        per_row = (~keep).sum(1)
        assert int(per_row.sum()) == k and int(per_row.max() - per_row.min()) <= 1  # every row loses the same share
        for row in range(keep.shape[0]):  # ... and inside a row, the lowest |w| * ||x|| go
            lost, kept = act[row][~keep[row]], act[row][keep[row]]
            if len(lost) and len(kept):
                assert lost.max() <= kept.min()
        w = weights[layer.name].detach().reshape(layer.shape[0], -1)
        assert torch.equal(w[~keep], torch.zeros(int((~keep).sum())))
        assert torch.equal(w[keep], original[layer.name].reshape(layer.shape[0], -1)[keep])


def test_scores_are_deterministic_and_batch_split_invariant():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.randn(10, 8)
    _, a = _scores(model, x, batch_size=3)
    _, b = _scores(model, x, batch_size=10)
    for name in a["activation"]:
        torch.testing.assert_close(a["activation"][name], b["activation"][name], rtol=1e-6, atol=0)


def test_wanda_needs_the_signal_and_names_the_fix():
    from hf_mixmatch.errors import ConfigError

    model = nn.Sequential(nn.Linear(4, 3))
    layers = list_prunable(model)
    with pytest.raises(ConfigError, match="activation_row"):
        allocate("wanda", weights={"0": model[0].weight}, layers=layers, target=0.5, scores={})


def test_three_d_convolutions_are_refused_with_a_fix():
    from hf_mixmatch.errors import ConfigError

    model = nn.Sequential(nn.Conv3d(2, 2, 2)).eval()
    with pytest.raises(ConfigError, match="weight-only signal"):
        _scores(model, torch.randn(2, 2, 3, 3, 3))


def test_activation_signal_in_a_run_and_cached(tmp_path, image_dataset):
    from conftest import save_tiny_transformers

    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch
    from hf_mixmatch.signals import load_scores

    model_dir = save_tiny_transformers(tmp_path / "m", "swin")
    cfg = dict(model="unused", dataset=str(image_dataset), output_dir=str(tmp_path / "run"), progress=False,
               calib_samples=16, save="none", signals=("activation",), strategies=("balanced", "signal_p90"),
               baselines=("wanda",))
    run = run_mixmatch(PruneConfig(**cfg), loaded=load_model(model_dir))
    assert {v["signal"] for v in run.variants} == {"activation"}
    assert all(b["rank_by"] == "activation_row" for b in run.results["baselines"])
    cached = load_scores(tmp_path / "run" / "scores.safetensors")
    assert {"activation", "activation_row"} <= set(cached)
    again = run_mixmatch(PruneConfig(**cfg, overwrite=True), loaded=load_model(model_dir))
    assert again.results["timings"]["scoring_cached"] is True
    assert [v["accuracy"] for v in again.variants] == [v["accuracy"] for v in run.variants]
    assert not math.isnan(run.variants[0]["sparsity"])


def test_only_selectable_signals_in_a_run(tmp_path):
    from hf_mixmatch.errors import ConfigError
    from hf_mixmatch.pipeline import PruneConfig

    PruneConfig(model="m", output_dir=str(tmp_path), signals=("magnitude", "activation"))
    with pytest.raises(ConfigError, match="activation_row"):  # a derived ranking, not a signal to run strategies on
        PruneConfig(model="m", output_dir=str(tmp_path), signals=("activation_row",))
