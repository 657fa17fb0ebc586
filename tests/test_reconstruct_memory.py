"""The memory pre-flight of reconstruction: a layer whose Hessians cannot fit stops the run before any work, in
one line naming the layer and the way out, with nothing written."""

from __future__ import annotations

import pytest
from torch import nn

from hf_mixmatch import reconstruct_stage
from hf_mixmatch.config import PruneConfig
from hf_mixmatch.errors import ConfigError
from hf_mixmatch.layers import list_prunable


@pytest.mark.parametrize("kw, buffers", [
    (dict(reconstruct="sparsegpt"), 4),  # Hessian, X_dense^T X, two factorization buffers
    (dict(reconstruct="sparsegpt", reconstruct_target="pruned"), 3),
    (dict(ranges="rd", rd_distortion="sparsegpt"), 3),  # SparseGPT curves without reconstruction
    (dict(ranges="rd", rd_distortion="magnitude"), 0),
    (dict(), 0),
])
def test_buffers_per_mode(tmp_path, kw, buffers):
    config = PruneConfig(model="m", output_dir=str(tmp_path / "o"), **kw)
    assert reconstruct_stage.hessian_buffers(config) == buffers


def test_the_largest_layer_decides_and_the_bound_is_exact(tmp_path, monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.Conv2d(8, 8, 5, groups=2), nn.Flatten(), nn.Linear(40, 3))
    layers = list_prunable(model)
    config = PruneConfig(model="m", output_dir=str(tmp_path / "o"), reconstruct="sparsegpt")
    need = 4 * 2 * (4 * 25) ** 2 * 8  # the grouped 5x5 conv: 2 groups of 4 channels x 25 positions
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: need)
    reconstruct_stage.check_memory(config, model, layers)
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: need - 1)
    with pytest.raises(ConfigError, match=r"layer '1' has 100 input features in 2 groups: .*--reconstruct none"):
        reconstruct_stage.check_memory(config, model, layers)
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: None)  # unknown: no check
    reconstruct_stage.check_memory(config, model, layers)


def test_available_memory_reads_this_machine():
    avail = reconstruct_stage.available_memory()
    assert avail is None or avail > 0


def test_cli_stops_before_writing_anything(tmp_path, capsys, monkeypatch):
    from conftest import make_image_dataset, save_tiny_transformers

    from hf_mixmatch.cli import main

    data = make_image_dataset(tmp_path / "data")
    model = save_tiny_transformers(tmp_path / "model", "resnet")
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: 1 << 10)
    code = main(["prune", str(model), "--dataset", str(data), "--output-dir", str(tmp_path / "o"),
                 "--reconstruct", "sparsegpt"])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("hf-mixmatch: error:")]
    assert code == 2 and len(lines) == 1 and "GiB is available" in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
