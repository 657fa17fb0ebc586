"""Evaluation data resident on the accelerator (``hf_mixmatch.resident``): same batches, same numbers, placed only
when it fits; and a clear error when torchrun starts more processes than there are GPUs."""

import numpy as np
import pytest
import torch

from hf_mixmatch.errors import ConfigError
from hf_mixmatch.evaluate import predict_hits, read_batch
from hf_mixmatch.resident import DeviceSplit, make_resident, split_bytes


@pytest.fixture(scope="module")
def digits():
    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model

    loaded = load_model("default")
    return loaded, load_data("default", loaded.preprocess, calib_samples=32, eval_samples=300)


def test_device_split_serves_the_same_batches_for_any_index_pattern(digits):
    _, data = digits
    host = data.eval
    dev = DeviceSplit(host, "cpu", chunk=37)  # chunk borders inside the split
    assert len(dev) == len(host) == 300
    rng = np.random.default_rng(0)
    for idx in (range(0, 300), range(10, 77), rng.permutation(300)[:91].tolist(), [5, 5, 299, 0], []):
        (xh, yh), (xd, yd) = read_batch(host, idx), read_batch(dev, idx)
        assert torch.equal(xh, xd) and torch.equal(yh, yd)
    with pytest.raises(IndexError):
        dev.get_batch([300])
    assert dev.split == host.split and dev.skipped == host.skipped  # other attributes are the host split's


def test_device_split_gives_the_same_hits(digits):
    loaded, data = digits
    model = loaded.model.eval()
    order = np.random.default_rng(1).permutation(300).tolist()
    for idx in (None, order):
        a = predict_hits(model, data.eval, idx, batch_size=64)
        b = predict_hits(model, DeviceSplit(data.eval, "cpu"), idx, batch_size=64)
        assert torch.equal(a.top1, b.top1) and torch.equal(a.top5, b.top5)


def test_make_resident_places_what_fits_selection_first(digits):
    _, data = digits
    eval_bytes = split_bytes(data.eval)
    assert eval_bytes == 300 * data.eval.get_batch([0])[0][0].numel() * 4
    assert make_resident(data, "cpu")[0] is data  # CPU: nothing moves
    assert make_resident(data, "cpu", mode="never", free_bytes=1 << 40)[0] is data
    placed, record = make_resident(data, "cpu", free_bytes=4 * eval_bytes)  # budget: a quarter of free memory
    assert isinstance(placed.eval, DeviceSplit) and record["resident"] == ["eval"]
    assert placed.calib is data.calib and data.eval is not placed.eval  # the caller's data is unchanged
    small, record = make_resident(data, "cpu", free_bytes=4 * eval_bytes - 4)
    assert small is data and record["resident"] == []
    with pytest.raises(ConfigError, match="--eval-resident"):
        make_resident(data, "cpu", mode="always")


def test_make_resident_prefers_the_selection_split(digits):
    import dataclasses

    _, data = digits
    sel = dataclasses.replace(data, select=data.eval)  # a selection split of 300 images
    size = split_bytes(data.eval)
    placed, record = make_resident(sel, "cpu", free_bytes=4 * size)  # room for one of the two
    assert record["resident"] == ["select"] and isinstance(placed.select, DeviceSplit)
    assert not isinstance(placed.eval, DeviceSplit)
    placed, record = make_resident(sel, "cpu", free_bytes=8 * size)
    assert record["resident"] == ["select", "eval"]


def test_more_processes_than_gpus_is_a_one_line_error(monkeypatch):
    from hf_mixmatch.pipeline import _accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"2 processes on this machine but 1 visible GPU.*--nproc_per_node 1"):
        _accelerator(None)


def test_a_run_with_resident_data_gives_the_same_results(tmp_path, monkeypatch):
    """The whole pipeline (selection racing, front on eval, baselines) reading DeviceSplits: same numbers."""
    from hf_mixmatch import pipeline, resident
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    def config(out, resident="auto"):
        return PruneConfig(model="default", output_dir=str(tmp_path / out), progress=False, save="none",
                           calib_samples=64, strategies=("balanced", "aggressive", "percentile_30"),
                           eval_resident=resident)

    loaded = load_model("default")
    host = run_mixmatch(config("host", "never"), loaded=loaded).results
    assert host["evaluation"]["resident"]["resident"] == []  # host batches
    monkeypatch.setattr(pipeline, "make_resident",
                        lambda data, device, mode: resident.make_resident(data, device, mode=mode, free_bytes=1 << 40))
    dev = run_mixmatch(config("dev"), loaded=loaded).results
    assert dev["evaluation"]["resident"]["resident"] == ["select", "eval"]
    assert dev["pareto"] == host["pareto"] and dev["dense"] == host["dense"]
    for a, b in zip(host["variants"], dev["variants"]):
        assert (a["id"], a["accuracy"], a["sparsity"], a["samples"]) == (b["id"], b["accuracy"], b["sparsity"],
                                                                         b["samples"])
    assert [b["accuracy"] for b in host.get("baselines", [])] == [b["accuracy"] for b in dev.get("baselines", [])]
