"""Evaluation at throughput: whole-batch reads, its own batch size (probed), no_grad, same numbers as a plain
loop on many architectures. Speed itself is measured by scripts/benchmark_speed.py, not here."""

import json

import pytest
import torch
from conftest import save_tiny_transformers, tiny_timm, tiny_transformers
from torch.utils.data import Dataset, TensorDataset

from hf_mixmatch.cli import main
from hf_mixmatch.evaluate import (BatchSizeProbe, _shards, agree_batch_size, batch_iter, evaluate, predict_hits,
                                  read_batch)
from hf_mixmatch.models import logits
from hf_mixmatch.precision import layout_candidates


def _data(n=37, num_classes=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, num_classes, (n,), generator=g))


class _BatchOnly(Dataset):
    """A memory-mapped-style dataset: whole batches through get_batch, never one sample at a time."""

    def __init__(self, base: TensorDataset):
        self.base, self.calls = base, []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        raise AssertionError("evaluation must read whole batches, not single samples")

    def get_batch(self, indices):
        self.calls.append(list(indices))
        idx = torch.as_tensor(list(indices))
        return self.base.tensors[0][idx], self.base.tensors[1][idx]


class _Plain(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


def _plain_top1(model, data):
    with torch.no_grad():
        x, y = data.tensors
        return logits(model.eval(), x).argmax(-1) == y


MODELS = [("vit", lambda: tiny_transformers("vit")), ("swin", lambda: tiny_transformers("swin")),
          ("resnet", lambda: tiny_transformers("resnet")), ("convnext", lambda: tiny_transformers("convnext")),
          ("timm_resnet18", lambda: tiny_timm("resnet18")), ("timm_vit", lambda: tiny_timm("vit_tiny_patch16_224"))]


@pytest.mark.parametrize("name,build", MODELS, ids=[m[0] for m in MODELS])
def test_hits_equal_a_plain_loop_at_any_batch_size(name, build):
    model, data = build(), _data()
    expected = _plain_top1(model, data)
    for bs in (1, 7, 64):
        hits = predict_hits(model, data, batch_size=bs)
        assert torch.equal(hits.top1, expected), (name, bs)
        assert hits.top5 is None  # 4 classes: top-5 is undefined
    probe = BatchSizeProbe((4, 8, 16))
    assert torch.equal(predict_hits(model, data, batch_size=probe).top1, expected)
    assert set(probe.per_image) <= {4, 8, 16} and probe.choice in (4, 8, 16)


def test_any_order_of_indices_and_the_three_kinds_of_dataset():
    model, data = tiny_transformers("resnet", num_labels=10), _data(n=50, num_classes=10)
    expected = _plain_top1(model, data)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(1)).tolist()
    batch_only = _BatchOnly(data)
    for ds in (data, batch_only, _Plain(data)):
        hits = predict_hits(model, ds, order[:30], batch_size=8)
        assert torch.equal(hits.top1, expected[order[:30]])
        assert hits.top5 is not None and bool((hits.top5 >= hits.top1).all())
    assert [len(c) for c in batch_only.calls] == [8, 8, 8, 6] and batch_only.calls[0] == order[:8]
    m = evaluate(model, batch_only, batch_size=16)
    assert m["samples"] == 50 and m["accuracy"] == pytest.approx(float(expected.float().mean()))


def test_contiguous_reads_of_a_tensor_dataset_are_views():
    data = _data(n=20)
    x, y = read_batch(data, range(4, 12))
    assert x.data_ptr() == data.tensors[0][4].data_ptr() and torch.equal(y, data.tensors[1][4:12])
    assert [len(b[0]) for b in batch_iter(data, None, 8)] == [8, 8, 4]


def test_evaluation_runs_under_no_grad_not_inference_mode_and_restores_train_mode():
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 16 * 16, 4)

        def forward(self, x):
            seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
            return self.fc(x.flatten(1))

    model = Spy().train()
    evaluate(model, _data(n=10), batch_size=4)
    assert seen == [(False, False)] * 3 and model.training


def test_shards_cover_every_position_once_in_order():
    for n in (0, 1, 5, 10, 33):
        for world in (1, 2, 3, 4):
            blocks = _shards(n, world)
            assert len(blocks) == world
            assert [i for a, b in blocks for i in range(a, b)] == list(range(n))


def test_probe_picks_the_fastest_per_image_and_stops_when_sizes_get_slower():
    # 512 would be the fastest, but 256 is 28% slower than 128 (> 25%): the probe stops before trying 512
    per_image = {64: 10e-3, 128: 7.8e-3, 256: 10e-3, 512: 5e-3}
    probe = BatchSizeProbe((64, 128, 256, 512))
    sizes = []
    while probe.plan:
        size, nhwc = probe.next()
        assert not nhwc
        sizes.append(size)
        timed = probe.plan[0][1]
        probe.record(size, size, per_image[size] * size if timed else 99.0)  # warm-up batches: not measurements
    assert sizes == [64] * 5 + [128] * 3 + [256] * 2  # a warm-up batch, then 256 images (or one batch) per size
    assert probe.per_image == pytest.approx({(64, False): 10e-3, (128, False): 7.8e-3, (256, False): 10e-3})
    assert probe.next() == (128, False) and probe.choice == 128
    short = BatchSizeProbe((8, 16))
    for _ in range(33):  # warm-up + 32 batches of 8 = 256 images
        short.record(8, 8, 0.8)
    short.record(16, 5, 0.1)  # a short last batch is not a measurement
    assert short.per_image == {(8, False): pytest.approx(0.1)} and short.choice == 8 and not short.plan
    assert agree_batch_size(short) == (8, False)


@pytest.mark.parametrize("nhwc_per_image, expected", [(6e-3, True), (11e-3, False)])
def test_probe_chooses_the_layout_first_then_sizes_in_it(nhwc_per_image, expected):
    """The layout is timed at the smallest size (warm-up + 64 images each), then the larger sizes in the
    faster layout only; a 359-image split still gets its layout measured."""
    nchw = {64: 10e-3, 128: 7.8e-3, 256: 8e-3, 512: 9e-3}
    per_image = {**{(k, False): v for k, v in nchw.items()},
                 **{(k, True): v * nhwc_per_image / 10e-3 for k, v in nchw.items()}}
    probe = BatchSizeProbe((64, 128, 256, 512), layouts=(False, True))
    seen = []
    while probe.plan:
        size, nhwc = probe.next()
        seen.append((size, nhwc))
        timed = probe.plan[0][1]
        probe.record(size, size, per_image[(size, nhwc)] * size if timed else 99.0)
    assert seen[:4] == [(64, True), (64, True), (64, False), (64, False)]  # NHWC on replayed batches first
    assert {lay for _, lay in seen[4:]} == {expected} and [s for s, _ in seen[4:]] == [128] * 3 + [256] * 2 + [512] * 2
    assert probe.best == (128, expected) and probe.channels_last is expected and probe.next() == probe.best
    small = BatchSizeProbe((64, 128), layouts=(False, True))
    for n in (64, 64, 64, 64, 103):  # 359 images: the 128 warm-up batch is short
        size, nhwc = small.next()
        small.record(size, n, 0.5 if nhwc else 1.0)
    assert small.best == (64, True) and not small.plan


@pytest.mark.parametrize("n", [3, 20, 128])
def test_replayed_layout_batches_leave_the_hits_unchanged(n, monkeypatch):
    """The other layout is timed on replayed batches (the first images again): hits equal a plain loop at any
    split size, even a split under one batch; a 2-batch split still gets both layouts timed; a split too
    small to time the first layout keeps it (an uncompared layout is never chosen)."""
    model, data = tiny_transformers("resnet", num_labels=4), _data(n=n)
    expected = _plain_top1(model, data)
    probe = BatchSizeProbe((16, 32), layouts=(False, True))
    assert torch.equal(predict_hits(model, data, batch_size=probe).top1, expected)
    timed_layouts = {nhwc for _, nhwc in probe.per_image}
    assert timed_layouts == ({False, True} if n >= 32 else set())
    assert probe.channels_last is (n >= 32 and probe.per_image[(16, True)] < probe.per_image[(16, False)])


def test_nhwc_inputs_give_the_same_hits_and_the_run_records_the_layout():
    model, data = tiny_transformers("resnet", num_labels=4), _data()
    expected = _plain_top1(model, data)
    assert torch.equal(predict_hits(model, data, batch_size=16, channels_last=True).top1, expected)
    assert layout_candidates(model, "cpu") == (False, True) and layout_candidates(model, "cuda") == (True,)
    vit = tiny_transformers("vit", num_labels=4)
    assert layout_candidates(vit, "cpu") == (False,) == layout_candidates(vit, "cuda")


def test_run_records_the_probed_or_given_eval_batch_size(tmp_path, image_dataset):
    model_dir = save_tiny_transformers(tmp_path / "m", "vit")
    base = ["prune", str(model_dir), "--dataset", str(image_dataset), "--calib-samples", "16", "--quiet",
            "--strategies", "conservative,aggressive", "--signals", "magnitude", "--save", "none",
            "--select-split", "none"]
    assert main(base + ["--output-dir", str(tmp_path / "auto")]) == 0
    auto = json.loads((tmp_path / "auto" / "results.json").read_text())["evaluation"]
    assert auto["batch_size"] == 64 and auto["batch_size_probe"] == {}  # 32 images: only the warm-up batch ran
    assert main(base + ["--output-dir", str(tmp_path / "fixed"), "--eval-batch-size", "5", "--eval", "full"]) == 0
    fixed = json.loads((tmp_path / "fixed" / "results.json").read_text())
    assert fixed["evaluation"]["batch_size"] == 5 and fixed["evaluation"]["batch_size_probe"] == {}
    assert fixed["evaluation"]["mode"] == "full" and fixed["select_split"] == fixed["eval_split"] == "test"
    assert all(v["samples"] == 32 and v["split"] == "test" for v in fixed["variants"])


@pytest.mark.parametrize("args,needle", [(["--eval-batch-size", "0"], "--eval-batch-size must be > 0"),
                                         (["--eval-batch-size", "-3"], "--eval-batch-size must be > 0")])
def test_bad_eval_options_are_one_line_errors(tmp_path, capsys, args, needle):
    rc = main(["prune", "default", "--output-dir", str(tmp_path / "o"), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("hf-mixmatch: error:") and needle in err and "\n" not in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_unknown_eval_mode_is_refused(tmp_path, capsys):
    rc = main(["prune", "default", "--output-dir", str(tmp_path / "o"), "--eval", "fast"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "invalid choice: 'fast'" in err and "\n" not in err
