"""BatchNorm re-estimation after pruning: against a hand-computed pass, across the zoo, and in a run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from zoo_data import photo_batch
from zoo_models import ZOO, build

from hf_mixmatch.bn_recalibrate import BatchNormRecalibrator, batchnorm_modules, recalibrate_batchnorm
from hf_mixmatch.errors import ConfigError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3)
        self.drop = nn.Dropout(0.9)  # would change bn2's statistics if it ran in train mode
        self.conv2, self.bn2 = nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        x = self.drop(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.relu(self.bn2(self.conv2(x))).mean((2, 3)))


def _by_hand(net: Net, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm: (mean over batches of the batch means, mean over batches of the unbiased batch variances),
    each batch normalized with its own statistics (biased variance), dropout off."""
    stats = [([], []), ([], [])]
    with torch.no_grad():
        for x in batches:
            h = x
            for i, (conv, bn) in enumerate(((net.conv1, net.bn1), (net.conv2, net.bn2))):
                a = conv(h)
                mean, var = a.mean((0, 2, 3)), a.var((0, 2, 3), unbiased=True)
                stats[i][0].append(mean)
                stats[i][1].append(var)
                biased = a.var((0, 2, 3), unbiased=False)
                h = torch.relu((a - mean[:, None, None]) / torch.sqrt(biased[:, None, None] + bn.eps)
                               * bn.weight[:, None, None] + bn.bias[:, None, None])
    return [(torch.stack(m).mean(0), torch.stack(v).mean(0)) for m, v in stats]


@pytest.mark.parametrize("n, expected_batches", [(10, [4, 4, 2]), (9, [4, 5])])
def test_statistics_match_a_hand_computed_pass(n, expected_batches):
    net = Net().eval()
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    with torch.no_grad():  # pruning: half of conv1's weights gone, so the dense statistics are stale
        net.conv1.weight[:, :, 0] = 0
    before = net.conv1.weight.clone(), net.fc.weight.clone()
    assert recalibrate_batchnorm(net, x, batch_size=4, forward=lambda m, b: m(b)) == 2
    batches = list(x.split(expected_batches))
    for bn, (mean, var) in zip((net.bn1, net.bn2), _by_hand(net, batches)):
        torch.testing.assert_close(bn.running_mean, mean)
        torch.testing.assert_close(bn.running_var, var)
        assert int(bn.num_batches_tracked) == len(batches)
    assert (net.bn1.momentum, net.bn2.momentum) == (0.3, 0.1)  # put back
    assert not any(m.training for m in net.modules())
    assert torch.equal(net.conv1.weight, before[0]) and torch.equal(net.fc.weight, before[1])  # buffers only


def test_train_mode_flags_are_put_back():
    net = Net().train()
    net.drop.eval()
    recalibrate_batchnorm(net, torch.randn(6, 3, 8, 8), forward=lambda m, b: m(b))
    assert net.training and net.bn1.training and not net.drop.training


def test_too_few_calibration_images_is_a_one_line_error():
    with pytest.raises(ConfigError, match="--calib-samples"):
        BatchNormRecalibrator(Net(), torch.randn(1, 3, 8, 8))


def test_cached_statistics_are_the_recomputed_ones():
    net = Net().eval()
    x = torch.randn(12, 3, 8, 8)
    rec = BatchNormRecalibrator(net, x, batch_size=5, forward=lambda m, b: m(b))
    rec(net, key="a")
    first = net.bn2.running_var.clone()
    net.bn2.reset_running_stats()
    rec(net, key="a")  # from the cache
    torch.testing.assert_close(net.bn2.running_var, first, rtol=0, atol=0)


def test_the_guard_keeps_whichever_statistics_fit_the_calibration_images_better():
    """Labels given: the re-estimated statistics are kept exactly when they lower the calibration cross-entropy
    (computed here on a twin), and the model then holds the kept ones; across these draws both outcomes occur."""
    from hf_mixmatch.bn_recalibrate import batchnorm_state, calibration_loss

    fwd = lambda m, b: m(b)  # noqa: E731
    outcomes = set()
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(16, 3, 8, 8, generator=g) * (1 + seed % 3)
        net = Net().eval()
        recalibrate_batchnorm(net, torch.randn(64, 3, 8, 8, generator=g), batch_size=64, forward=fwd)
        y = net(x).argmax(1).detach() if seed % 2 else torch.randint(2, (16,), generator=g)
        with torch.no_grad():
            net.conv1.weight[:, :, seed % 3] = 0
        dense_loss = calibration_loss(net, x, y, batch_size=8, forward=fwd)
        twin = Net().eval()
        twin.load_state_dict(net.state_dict())
        recalibrate_batchnorm(twin, x, batch_size=8, forward=fwd)
        recal_loss = calibration_loss(twin, x, y, batch_size=8, forward=fwd)
        dense_state = batchnorm_state(batchnorm_modules(net))
        rec = BatchNormRecalibrator(net, x, y, batch_size=8, forward=fwd)
        kept = rec(net, key="v")
        assert kept == (recal_loss < dense_loss) and rec.chosen["v"] == kept
        want = batchnorm_state(batchnorm_modules(twin)) if kept else dense_state
        for got, ref in zip(batchnorm_state(batchnorm_modules(net)), want):
            for a, b in zip(got, ref):
                torch.testing.assert_close(a, b)
        outcomes.add(kept)
    assert outcomes == {True, False}


def _reference_statistics(model, x):
    """PyTorch's own train-mode BatchNorm on one batch, inputs captured by pre-hooks (momentum 0: the buffers
    stay as they are): per BatchNorm, the mean and unbiased variance over every dimension but the channels."""
    mods = batchnorm_modules(model)
    seen, handles = {}, []
    def capture(mod, args):  # the first call of each BatchNorm (a hook that returns None leaves the input alone)
        if mod not in seen:
            seen[mod] = args[0].detach().transpose(0, 1).reshape(args[0].shape[1], -1)

    for m in mods:
        handles.append(m.register_forward_pre_hook(capture))
    saved = [(m.momentum, m.training) for m in mods]
    for m in mods:
        m.momentum, m.training = 0.0, True
    try:
        with torch.no_grad():
            from hf_mixmatch.models import logits

            logits(model, x)
    finally:
        for h in handles:
            h.remove()
        for m, (momentum, training) in zip(mods, saved):
            m.momentum, m.training = momentum, training
    return {m: (seen[m].mean(1), seen[m].var(1, unbiased=True)) for m in mods if m in seen}


ZOO_CASES = [c for c in ZOO if not c.slow]


@pytest.mark.parametrize("case", ZOO_CASES, ids=[c.id for c in ZOO_CASES])
def test_zoo(case):
    """Every zoo architecture: models without BatchNorm are left bit for bit as they were; with BatchNorm, the
    statistics are PyTorch's train-mode ones on the calibration images, and only BatchNorm ran in train mode."""
    model = build(case)
    x = photo_batch(case.size, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: modes.append((type(mod).__name__, mod.training)))
             for m in model.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm)]
    n = recalibrate_batchnorm(model, x, batch_size=6)
    for h in hooks:
        h.remove()
    assert not any(training for _, training in modes), [name for name, t in modes if t][:3]
    assert not any(m.training for m in model.modules())
    after = model.state_dict()
    if n == 0:
        assert all(torch.equal(after[k], v) for k, v in before.items())
        return
    changed = {k for k, v in before.items() if not torch.equal(after[k], v)}
    assert changed and all(k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
                           for k in changed)
    reference = _reference_statistics(model, x)
    assert reference, "a BatchNorm the forward never calls cannot be the only kind"
    for m, (mean, var) in reference.items():
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5)


def test_zoo_has_both_kinds():
    kinds = {bool(batchnorm_modules(build(c))) for c in ZOO_CASES}
    assert kinds == {True, False}


# --------------------------------------------------------------------------------------------------- in a run


def _run(tmp_path, image_dataset, name, **kw):
    from conftest import save_tiny_transformers

    from hf_mixmatch import PruneConfig, run_mixmatch
    from hf_mixmatch.models import load_model

    model_dir = tmp_path / "m"
    if not model_dir.exists():  # a tiny ResNet whose stored statistics are far off (variances 1e4 too small):
        save_tiny_transformers(model_dir, "resnet")  # re-estimating them is what brings its outputs back
        from safetensors.torch import load_file, save_file

        state = load_file(str(model_dir / "model.safetensors"))
        save_file({k: v * 1e-4 if k.endswith("running_var") else v for k, v in state.items()},
                  str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    kw = {"calib_samples": 24, **kw}
    cfg = PruneConfig(model=str(model_dir), dataset=str(image_dataset), output_dir=str(tmp_path / name),
                      eval_samples=20, batch_size=8, progress=False, save="all",
                      strategies=("conservative", "aggressive"), signals=("magnitude",), range_targets=(0.6, 0.9),
                      eval="full", **kw)
    return run_mixmatch(cfg, loaded=load_model(str(model_dir)))


def _buffers(folder):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if "running_" in k}


def test_a_run_saves_and_reports_the_recalibrated_statistics(tmp_path, image_dataset):
    from hf_mixmatch.verification import verify

    run = _run(tmp_path, image_dataset, "on", baselines=("lamp",))
    info = run.results["bn_recalibration"]
    assert {k: info[k] for k in ("samples", "batch_size", "images")} == {"samples": 24, "batch_size": 8,
                                                                         "images": "calibration"}
    assert info["layers"] > 0 and "cross-entropy" in info["rule"]
    base = _buffers(tmp_path / "m")
    verified = 0
    for v in run.variants:
        folder = run.output_dir / v["path"]
        saved = _buffers(folder)
        assert saved.keys() == base.keys() and isinstance(v["bn_recalibrated"], bool)
        # the statistics saved are the re-estimated ones exactly when the guard kept them
        assert any(not torch.equal(saved[k], base[k]) for k in base) == v["bn_recalibrated"], v["id"]
        recipe = json.loads((folder / "mixmatch.json").read_text())
        assert recipe["bn_recalibration"] == info and recipe["bn_recalibrate"] is True
        assert recipe["bn_recalibrated"] == v["bn_recalibrated"]
        if v["id"] in run.results["pareto"]:  # measured on the eval split: the published number is true of the
            report = verify(str(folder), str(image_dataset))  # saved weights and statistics
            assert report.measured_accuracy == pytest.approx(v["accuracy"], abs=1e-9), v["id"]
            verified += 1
    assert verified and run.results["baselines"]
    # re-derivable: the variant's own weights, the base statistics re-estimated on the run's calibration images
    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model

    v = next(v for v in run.variants if v["bn_recalibrated"])
    variant = load_model(str(run.output_dir / v["path"]))
    data = load_data(str(image_dataset), variant.preprocess, calib_samples=24, eval_samples=20, seed=0,
                     num_labels=variant.num_labels)
    variant.model.load_state_dict(base, strict=False)
    recalibrate_batchnorm(variant.model.eval(), data.calib.tensors[0], batch_size=8)
    state = variant.model.state_dict()
    for k, tensor in _buffers(run.output_dir / v["path"]).items():
        torch.testing.assert_close(state[k], tensor, rtol=1e-5, atol=1e-6)


def test_no_bn_recalibrate_keeps_the_base_statistics(tmp_path, image_dataset):
    from hf_mixmatch.card import variant_card

    run = _run(tmp_path, image_dataset, "off", bn_recalibrate=False)
    assert run.results["bn_recalibration"] is None
    base = _buffers(tmp_path / "m")
    v = run.variants[0]
    saved = _buffers(run.output_dir / v["path"])
    assert all(torch.equal(saved[k], base[k]) for k in base)
    recipe = json.loads((run.output_dir / v["path"] / "mixmatch.json").read_text())
    card = str(variant_card(run.results, v, recipe))
    assert "--no-bn-recalibrate" in card and "BatchNorm statistics" not in card


def test_one_calibration_image_fails_before_the_output_dir_is_made(tmp_path, image_dataset):
    with pytest.raises(ConfigError, match="--calib-samples"):
        _run(tmp_path, image_dataset, "one", calib_samples=1)
    assert not (tmp_path / "one").exists()
    _run(tmp_path, image_dataset, "one_off", calib_samples=1, bn_recalibrate=False)  # the fix the error names works
    assert (tmp_path / "one_off" / "results.json").exists()
