"""The memory pre-flight of reconstruction: a layer whose Hessians cannot fit stops the run before any work, in
one line naming the layer and the way out, with nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
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


def test_processes_on_one_host_share_its_memory(tmp_path, monkeypatch):
    model = nn.Sequential(nn.Linear(64, 8))
    config = PruneConfig(model="m", output_dir=str(tmp_path / "o"), reconstruct="sparsegpt")
    need = 4 * 64 * 64 * 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # three processes on this host, each with its own Hessians
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: 3 * need)
    reconstruct_stage.check_memory(config, model, list_prunable(model))
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: 3 * need - 1)
    with pytest.raises(ConfigError, match=r"\(3 processes on this machine, 0\.0 GiB each\).*fewer processes per "
                                          r"machine, or use --reconstruct none and --rd-distortion magnitude$"):
        reconstruct_stage.check_memory(config, model, list_prunable(model))


def test_a_gpu_is_measured_by_its_own_free_memory(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: seen.append(device) or (123, 456))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # one process per GPU: the host's process count does not matter
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: pytest.fail("host memory read for a GPU"))
    assert reconstruct_stage.memory_budget(torch.device("cuda", 1)) == (123, 1, "GPU memory (cuda:1)")
    assert seen == [torch.device("cuda", 1)]
    monkeypatch.setattr(reconstruct_stage, "available_memory", lambda: 789)
    assert reconstruct_stage.memory_budget(torch.device("cpu")) == (789, 4, "memory")


@pytest.mark.slow
def test_every_process_stops_when_one_is_short(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.fail("torchrun is not installed next to this python: install torch in the test environment")
    worker = os.path.join(os.path.dirname(__file__), "_memory_dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RANK", None)
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", worker, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = [(tmp_path / f"rank{i}.txt").read_text() for i in range(2)]
    # rank 0 alone would fit; it stops with rank 1's message instead of waiting for it forever
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0].startswith("error: layer '0' has 64 input features: its Hessians need about 0.0 GiB (2 "
                                  "processes on this machine"), outcomes


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
    assert code == 2 and len(lines) == 1 and "GiB of memory is available" in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
