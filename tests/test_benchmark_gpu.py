"""scripts/benchmark_gpu.py runs end to end (on CPU here) and reports every run it times."""

from types import SimpleNamespace

import torch
from _scripts import load_script


def test_benchmark_gpu_times_every_run_and_compares_fronts(monkeypatch):
    monkeypatch.setenv("HF_MIXMATCH_NO_PROGRESS", "1")
    benchmark_gpu = load_script("benchmark_gpu")

    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model

    loaded = load_model("default")
    data = load_data("default", loaded.preprocess, calib_samples=32, eval_samples=120)
    args = SimpleNamespace(batch_size=32, eval_batch_size=64, strategies="balanced,aggressive", profile=None)
    row = benchmark_gpu.bench_model("default", loaded, data, args, torch.device("cpu"))
    assert row["eval_samples"] == 120 and row["dense"]["same_correctness"] > 0.9
    for mode, precision, resident in benchmark_gpu.RUNS:
        run = row[f"{mode}_{precision}_{resident}"]
        assert run["run_s"] > 0 and 0 < run["floor_resident_s"] and 0 < run["floor_host_s"]
        assert run["resident"] == []  # CPU: host batches
        assert run["unique_variants"] == 6
    assert row["host_front_differences"] == []  # the same run twice on CPU
    text = benchmark_gpu.report([row], {"device_name": "CPU", "torch": "t", "transformers": "x", "timm": "y"})
    assert text.count("\n  run ") == len(benchmark_gpu.RUNS) and "racing/full variants time" in text
