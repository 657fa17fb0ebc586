import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import TensorDataset

from hf_mixmatch.errors import ConfigError, SparsityMismatchError
from hf_mixmatch.finetune import FinetuneResult, finetune, verify_masks
from hf_mixmatch.layers import list_prunable, weights_of

torch.set_num_threads(1)


def _data(n, seed):
    """Separable toy images: class = whether the top half is brighter than the bottom half."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=gen)
    y = (x[:, :, :2].mean(dim=(1, 2, 3)) > x[:, :, 2:].mean(dim=(1, 2, 3))).long()
    return TensorDataset(x, y)


def _pruned_model(sparsity=0.6):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    layers = list_prunable(model)
    with torch.no_grad():
        for w in weights_of(model, layers).values():
            k = int(sparsity * w.numel())
            w.view(-1)[w.abs().reshape(-1).argsort()[:k]] = 0
    masks = {name: w.detach() != 0 for name, w in weights_of(model, layers).items()}
    return model, layers, masks


def _accuracy(model, ds):
    with torch.no_grad():
        x, y = ds.tensors
        return (model(x).argmax(-1) == y).float().mean().item()


def test_finetune_keeps_pruned_weights_zero_and_learns():
    model, layers, masks = _pruned_model()
    train, val = _data(512, 0), _data(256, 1)
    before = _accuracy(model, val)
    result = finetune(
        model, layers, train, val, accelerator=Accelerator(cpu=True), steps=120, lr=1e-2, weight_decay=0.1, batch_size=32, eval_every=20, patience=3, progress=False
    )
    assert isinstance(result, FinetuneResult)
    for name, w in weights_of(model, layers).items():
        assert (w.detach()[~masks[name]] == 0).all()  # every pruned weight exactly zero
        assert int((w.detach() == 0).sum()) >= int((~masks[name]).sum())
    after = _accuracy(model, val)
    assert result.initial_val_accuracy == pytest.approx(before)
    assert after == pytest.approx(result.best_val_accuracy)  # best weights restored
    assert after >= before and after > 0.9
    assert result.history[0]["step"] == 0 and result.history[-1]["step"] == result.steps
    assert 0 < result.steps <= 120
    assert result.best_step > 0 and max(h["val_accuracy"] for h in result.history) == result.best_val_accuracy


def test_early_stopping_restores_best_weights():
    model, layers, masks = _pruned_model()
    train, val = _data(256, 2), _data(128, 3)
    # a huge learning rate wrecks the model; validation stops training and restores the best weights
    result = finetune(model, layers, train, val, accelerator=Accelerator(cpu=True), epochs=50, lr=50.0, batch_size=32, eval_every=1, patience=2, progress=False)
    assert result.stopped_early and result.steps < 50 * 8
    assert _accuracy(model, val) == pytest.approx(result.best_val_accuracy)
    verify_masks(model, layers, masks)


def test_verify_masks_detects_drift():
    model, layers, masks = _pruned_model()
    verify_masks(model, layers, masks)
    name = layers[1].name
    with torch.no_grad():
        w = weights_of(model, layers)[name]
        idx = (~masks[name]).reshape(-1).nonzero()[0]
        w.view(-1)[idx] = 1e-3
    with pytest.raises(SparsityMismatchError):
        verify_masks(model, layers, masks)


def test_finetune_validates_options():
    model, layers, _ = _pruned_model()
    with pytest.raises(ConfigError):
        finetune(model, layers, _data(8, 0), _data(8, 1), accelerator=Accelerator(cpu=True), lr=0.0, progress=False)
    with pytest.raises(ConfigError):
        finetune(model, layers, _data(8, 0), TensorDataset(torch.zeros(0, 1, 4, 4), torch.zeros(0).long()), accelerator=Accelerator(cpu=True), progress=False)
