"""Two processes (torchrun, gloo on CPU) give the same scores and accuracies as one process."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import save_tiny_transformers

from hf_mixmatch.signals import load_scores

WORKER = os.path.join(os.path.dirname(__file__), "_dist_worker.py")


def _run(cmd, env):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vit", "resnet"])  # resnet: BatchNorm statistics re-estimated per variant
def test_two_processes_equal_one(tmp_path, image_dataset, kind):
    if shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")):
        pytest.fail("torchrun is not installed next to this python: install torch in the test environment")
    model_dir = save_tiny_transformers(tmp_path / "m", kind)
    # gloo on CPU, also on a GPU machine (2 processes on 1 GPU would share one device)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_MIXMATCH_NO_PROGRESS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RANK", None)
    _run([sys.executable, WORKER, str(model_dir), str(image_dataset), str(tmp_path / "one")], env)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    _run([torchrun, "--standalone", "--nproc_per_node", "2", WORKER, str(model_dir), str(image_dataset),
          str(tmp_path / "two")], env)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["eval_samples"] == one["eval_samples"] == 30
    assert two["dense"] == one["dense"]
    assert (one["bn_recalibration"] is not None) == (kind == "resnet") and two["bn_recalibration"] == one["bn_recalibration"]
    for a, b in zip(one["variants"], two["variants"]):
        assert a["id"] == b["id"] and a["accuracy"] == b["accuracy"] and a["sparsity"] == b["sparsity"]
    s1 = load_scores(tmp_path / "one" / "scores.safetensors")
    s2 = load_scores(tmp_path / "two" / "scores.safetensors")
    assert s1.keys() == s2.keys()
    for sig in s1:
        for layer in s1[sig]:
            torch.testing.assert_close(s2[sig][layer], s1[sig][layer], rtol=1e-5, atol=1e-7)
