"""--precision: autocast for evaluation and scoring, scores accumulated in fp32, channels_last on CUDA only."""

import json
import types

import pytest
import torch
from conftest import save_tiny_transformers, tiny_transformers
from torch.utils.data import TensorDataset

from hf_mixmatch.cli import main
from hf_mixmatch.errors import ConfigError
from hf_mixmatch.evaluate import evaluate
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.pipeline import PruneConfig, _precision
from hf_mixmatch.precision import autocast, check_precision, to_device, wants_channels_last
from hf_mixmatch.signals import compute_scores


def test_autocast_fp32_is_a_no_op_and_bf16_lowers_matmuls():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with autocast("fp32", "cpu"):
        assert lin(x).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert lin(x).dtype == torch.bfloat16
    assert lin.weight.dtype == torch.float32  # weights are never cast


@pytest.mark.parametrize("bad", ["fp64", "half", ""])
def test_unknown_precision_is_refused(bad, tmp_path, capsys):
    with pytest.raises(ConfigError):
        check_precision(bad)
    with pytest.raises(ConfigError, match="--precision must be one of fp32\\|bf16\\|fp16"):
        PruneConfig(model="default", precision=bad)
    rc = main(["prune", "default", "--output-dir", str(tmp_path / "o"), "--precision", bad])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--precision" in err and err.startswith("hf-mixmatch: error:") and "\n" not in err


def test_precision_follows_the_accelerator_unless_given():
    acc = types.SimpleNamespace(mixed_precision="bf16", device=torch.device("cpu"))
    assert _precision(PruneConfig(model="default"), acc) == "bf16"  # accelerate launch --mixed_precision bf16
    assert _precision(PruneConfig(model="default", precision="fp32"), acc) == "fp32"
    assert _precision(PruneConfig(model="default"), types.SimpleNamespace(mixed_precision="no", device="cpu")) == "fp32"


def test_channels_last_only_for_conv_models_on_cuda():
    for kind, is_conv in (("resnet", True), ("convnext", True), ("vit", False), ("swin", False)):
        model = tiny_transformers(kind)
        assert wants_channels_last(model, "cuda") == is_conv, kind
        assert not wants_channels_last(model, "cpu")
    x = to_device(torch.randn(2, 3, 8, 8), torch.device("cpu"), channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_bf16_evaluation_runs_in_bf16_and_stays_close_to_fp32():
    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model

    loaded = load_model("default")
    data = load_data("default", loaded.preprocess, num_labels=loaded.num_labels, eval_samples=200)
    model = loaded.model
    dtypes = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    fp32 = evaluate(model, data.eval, batch_size=64)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    bf16 = evaluate(model, data.eval, batch_size=64, precision="bf16")
    handle.remove()
    assert set(dtypes) == {torch.bfloat16}
    assert fp32["accuracy"] > 0.9 and abs(bf16["accuracy"] - fp32["accuracy"]) <= 0.02


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_bf16_scores_are_fp32_and_agree_with_fp32_scores(kind):
    model = tiny_transformers(kind)
    layers = list_prunable(model, num_labels=4)
    g = torch.Generator().manual_seed(0)
    calib = TensorDataset(torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 4, (16,), generator=g))
    kw = dict(signals=("gradient", "grasp"), batch_size=8, progress=False)
    ref = compute_scores(model, layers, calib, **kw)
    low = compute_scores(model, layers, calib, precision="bf16", **kw)
    for sig in ref:
        a = torch.cat([t.flatten() for t in ref[sig].values()])
        b = torch.cat([t.flatten() for t in low[sig].values()])
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9, sig


def test_a_bf16_run_records_its_precision_and_does_not_reuse_fp32_scores(tmp_path, image_dataset):
    model_dir = save_tiny_transformers(tmp_path / "m", "resnet")
    base = ["prune", str(model_dir), "--dataset", str(image_dataset), "--calib-samples", "16", "--quiet",
            "--strategies", "conservative,aggressive", "--save", "none", "--output-dir", str(tmp_path / "run")]
    assert main(base) == 0
    assert main(base + ["--overwrite", "--precision", "bf16"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["evaluation"]["precision"] == "bf16" and res["config"]["precision"] == "bf16"
    assert res["timings"]["scoring_cached"] is False


@pytest.mark.parametrize("native", [True, False])
def test_emulated_reduced_precision_on_the_cpu_is_warned_once_in_one_line(native, monkeypatch):
    import warnings

    from hf_mixmatch import precision as prec

    monkeypatch.setattr(prec, "cpu_supports", lambda p: p == "fp32" or native)
    acc = types.SimpleNamespace(mixed_precision="no", device=torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _precision(PruneConfig(model="m", output_dir="o", precision="bf16"), acc) == "bf16"
        assert _precision(PruneConfig(model="m", output_dir="o", precision="fp32"), acc) == "fp32"
    msgs = [str(w.message) for w in caught]
    if native:
        assert msgs == []
    else:
        assert len(msgs) == 1 and "emulated" in msgs[0] and "--precision fp32" in msgs[0] and "\n" not in msgs[0]
    assert prec.cpu_supports("fp32")
