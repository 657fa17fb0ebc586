"""Racing: a variant is dropped only when the bound says so, the front equals --eval full, N processes = 1."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hf_mixmatch.evaluate import Hits
from hf_mixmatch.pareto import pareto_front
from hf_mixmatch.racing import RaceConfig, beats, kl_upper, race, sample_order, schedule


def _measurer(population: dict[str, tuple[float, np.ndarray]]):
    """A measure callback over fixed per-image correctness (id -> (sparsity, hits over the whole split))."""
    calls = []

    def measure(vid, indices):
        calls.append((vid, len(indices)))
        sparsity, hits = population[vid]
        top1 = torch.as_tensor(hits[np.asarray(list(indices), dtype=np.int64)], dtype=torch.bool)
        return sparsity, Hits(top1, None)

    return measure, calls


def _full_front(population):
    return pareto_front([{"id": k, "sparsity": s, "accuracy": float(h.mean())} for k, (s, h) in population.items()])


def test_schedule_grows_and_small_splits_get_one_round():
    assert schedule(10_000, RaceConfig(growth=2)) == [256, 512, 1024, 2048, 4096, 10_000]
    assert schedule(10_000, RaceConfig()) == [256, 384, 576, 864, 1296, 1944, 2916, 4374, 6561, 10_000]
    assert schedule(10_000, RaceConfig(last=0.5)) == [256, 384, 576, 864, 1296, 1944, 2916, 4374, 10_000]
    assert schedule(359, RaceConfig()) == [359]  # a first round must leave half of the split unseen to pay off
    assert schedule(512, RaceConfig()) == [256, 384, 512]
    assert schedule(1000, RaceConfig(first=100, growth=3)) == [100, 300, 1000]


def test_sample_order_is_a_seeded_permutation():
    a, b, c = sample_order(500, 0), sample_order(500, 0), sample_order(500, 1)
    assert a == b and a != c and sorted(a) == list(range(500))


@pytest.mark.parametrize("n, finite", [(256, False), (256, True), (1500, True), (1900, True)])
def test_false_drop_rate_is_at_most_delta(n, finite):
    """Drawn without replacement from a split where b is NOT more accurate than a, ``beats`` says it is in at
    most delta of the draws — with the finite-population test too, up to 95% of the split seen; a clear
    difference is detected; no discordant image, no verdict."""
    rng = np.random.default_rng(0)
    n_total, delta, trials = 2000, 0.2, 3000
    for favour_b, favour_a in ((300, 300), (300, 310), (40, 41)):
        a = np.zeros(n_total, bool)
        b = np.zeros(n_total, bool)
        b[:favour_b] = True
        a[favour_b: favour_b + favour_a] = True
        a[1000:1500] = b[1000:1500] = True  # both right
        wrong = 0
        for _ in range(trials):
            idx = rng.permutation(n_total)[:n]
            wrong += beats(torch.as_tensor(b[idx]), torch.as_tensor(a[idx]), delta, n_total if finite else None)
        assert wrong / trials <= delta
    a = torch.zeros(n, dtype=torch.bool)
    b = torch.zeros(n, dtype=torch.bool)
    b[:60] = True  # 60 images where only b is right, none where only a is
    assert beats(b, a, 1e-6) and not beats(a, b, 0.5) and not beats(a, a, 0.5)
    b[:12] = False  # 48 vs 0 discordant: 48 * ln 2 = 33 nats
    assert beats(b, a, 1e-14) and not beats(b, a, 1e-15)


def test_finite_population_test_decides_what_the_sign_test_cannot():
    """10,000 images, 400 discordant (b right on 230, a on 170): after 8,000 images (184 vs 136) the sign test
    alone is at 3.6 nats, short of ln(1/delta) = 4.6; the unseen fifth of the split can hold at most ~90 of the
    discordant images (upper limit) and Serfling's bound makes it significant."""
    n_total, n = 10_000, 8000
    a = torch.zeros(n, dtype=torch.bool)
    b = torch.zeros(n, dtype=torch.bool)
    b[:184] = True
    a[184:320] = True
    assert not beats(b, a, 0.01) and beats(b, a, 0.01, n_total)
    assert not beats(a, b, 0.01, n_total)
    # certain: 15 wins, no loss, 10 images unseen; at 1e-30 only the count argument can decide it
    a, b = torch.zeros(990, dtype=torch.bool), torch.zeros(990, dtype=torch.bool)
    b[:15] = True
    assert beats(b, a, 1e-30, 1000) and not beats(b, a, 1e-30, 1020)


def test_kl_upper_limit():
    q = kl_upper(torch.tensor([0.0, 0.04, 0.5, 1.0], dtype=torch.float64), 1000, math.log(100))
    assert q[3] == 1.0 and (q[:3] > torch.tensor([0.0, 0.04, 0.5], dtype=torch.float64)).all()
    p = torch.tensor([0.0, 0.04, 0.5], dtype=torch.float64)
    kl = torch.xlogy(p, p / q[:3]) + torch.xlogy(1 - p, (1 - p) / (1 - q[:3]))
    assert torch.allclose(1000 * kl, torch.full_like(kl, math.log(100)), rtol=1e-6)


def test_constructed_case_naive_early_stop_would_drop_a_front_variant_racing_keeps_it():
    n_total, seed = 2000, 3
    order = np.asarray(sample_order(n_total, seed))
    first = RaceConfig().first
    rng = np.random.default_rng(0)

    def hits(prefix_correct: int, total_correct: int) -> np.ndarray:
        """Correct on ``prefix_correct`` of the first round's images, ``total_correct`` overall."""
        h = np.zeros(n_total, dtype=bool)
        h[order[rng.choice(first, prefix_correct, replace=False)]] = True
        rest = order[first:]
        h[rest[rng.choice(len(rest), total_correct - prefix_correct, replace=False)]] = True
        return h

    population = {
        "sparser": (0.9, hits(222, 1600)),  # 86.7% on the first 256 images, 80.0% on the split
        "front": (0.8, hits(198, 1620)),    # 77.3% on the first 256 images, 81.0% on the split: on the front
        "weak": (0.5, hits(51, 400)),       # 20%: clearly dominated
    }
    assert _full_front(population) == ["front", "sparser"]
    # a naive early stop (drop what looks dominated on the first round) would drop "front"
    first_round = {k: h[order[:first]].mean() for k, (_, h) in population.items()}
    assert first_round["sparser"] > first_round["front"] + 0.09

    measure, _ = _measurer(population)
    log = race(list(population), measure, n_total, config=RaceConfig(), seed=seed)
    assert log.rounds == [256, 384, 576, 864, 1296, 2000]
    assert log.lanes["front"].dropped_by is None and log.lanes["front"].samples == n_total
    assert log.lanes["weak"].dropped_by in ("front", "sparser") and log.lanes["weak"].samples == first
    assert pareto_front([{"id": k, "sparsity": population[k][0], "accuracy": log.lanes[k].hits.metrics()["accuracy"]}
                         for k in log.survivors]) == ["front", "sparser"]


@pytest.mark.parametrize("seed", range(5))
def test_racing_front_equals_full_front_on_random_populations(seed):
    """40 correlated variants (a shared per-image difficulty) along a sparsity-accuracy trade-off with noise."""
    rng = np.random.default_rng(seed)
    n_total = 4000
    difficulty = rng.random(n_total)
    population = {}
    for i in range(40):
        sparsity = float(rng.uniform(0.5, 0.95))
        skill = float(np.clip(1.15 - sparsity + rng.normal(0, 0.12), 0.05, 0.99))
        population[f"v{i}"] = (sparsity, (difficulty + rng.normal(0, 0.1, n_total)) < skill)
    measure, calls = _measurer(population)
    log = race(list(population), measure, n_total, seed=seed)
    front = pareto_front([{"id": k, "sparsity": population[k][0], "accuracy": log.lanes[k].hits.metrics()["accuracy"]}
                          for k in log.survivors])
    assert front == _full_front(population)
    evaluated = sum(n for _, n in calls)
    assert evaluated == sum(lane.samples for lane in log.lanes.values())
    assert evaluated < 0.6 * n_total * len(population)  # racing evaluated much less than full
    for lane in log.lanes.values():  # dropped lanes keep their accuracy on the images they saw
        assert lane.samples in log.rounds and (lane.dropped_by is None) == (lane.samples == n_total)


def test_full_mode_evaluates_everything_once_in_order():
    population = {"a": (0.5, np.ones(3000, bool)), "b": (0.6, np.zeros(3000, bool))}
    measure, calls = _measurer(population)
    log = race(["a", "b"], measure, 3000, mode="full")
    assert calls == [("a", 3000), ("b", 3000)] and log.survivors == ["a", "b"] and log.rounds == [3000]


# ------------------------------------------------------------------------- real runs (embedded model)


def _digits_config(out, **kw):
    from hf_mixmatch.pipeline import PruneConfig

    # the embedded digits model evaluated on its 1,438-image training split (calibrated on test): big enough
    # for racing rounds at 256 and 512 images
    return PruneConfig(model="default", dataset="default", output_dir=str(out), eval_split="train", calib_split="test",
                       calib_samples=128, save="none", progress=False, signals=("magnitude", "gradient"),
                       select_split="none", **kw)  # race on the whole eval split, not a held-out selection slice


@pytest.mark.slow
def test_racing_front_equals_full_front_on_the_embedded_model(tmp_path):
    from hf_mixmatch.cli import summary
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import run_mixmatch
    from hf_mixmatch.report import report_markdown

    loaded = load_model("default")
    full = run_mixmatch(_digits_config(tmp_path / "full", eval="full"), loaded=loaded).results
    raced = run_mixmatch(_digits_config(tmp_path / "race", eval="racing"), loaded=loaded).results
    assert raced["pareto"] == full["pareto"]
    probe = raced["evaluation"]["batch_size_probe"]  # candidates timed on the dense model, fastest per image chosen
    sizes = {"64", "128", "256", "512"}
    assert {"64", "64-nhwc"} <= set(probe) <= sizes | {f"{s}-nhwc" for s in sizes}  # a conv model: both layouts
    larger = {k for k in probe if not k.startswith("64")}  # probed in the faster layout only
    assert larger and len({k.endswith("-nhwc") for k in larger}) == 1
    best = min(probe, key=probe.get)
    assert raced["evaluation"]["batch_size"] == int(best.split("-")[0])
    assert raced["evaluation"]["channels_last"] == best.endswith("-nhwc")
    by_id = {v["id"]: v for v in full["variants"]}
    dropped = [v for v in raced["variants"] if v.get("dropped_by")]
    assert dropped, "nothing was raced out: the test would not show anything"
    assert raced["evaluation"]["images_evaluated"] < full["evaluation"]["images_evaluated"]
    for v in raced["variants"]:
        if v.get("dropped_by"):
            assert v["samples"] in raced["evaluation"]["rounds"][:-1] and v["id"] not in raced["pareto"]
            assert by_id[v["dropped_by"]]["sparsity"] >= v["sparsity"]
        else:
            # CPU kernels give the same numbers at any batch size; on CUDA the probe may pick another batch size
            # in each run, and another kernel can flip an image or two
            tol = 2 / 1438 if torch.cuda.is_available() else 0.0
            assert v["samples"] == 1438 and abs(v["accuracy"] - by_id[v["id"]]["accuracy"]) <= tol
    text = report_markdown(raced)
    assert "raced out" in text and f"| {dropped[0]['samples']} `train` |" in text
    assert "raced out after" in summary(raced, tmp_path)
    assert (tmp_path / "race" / "pareto.png").stat().st_size > 0


@pytest.mark.slow
def test_racing_two_processes_equal_one(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    worker = os.path.join(os.path.dirname(__file__), "_race_worker.py")
    # gloo on CPU, also on a GPU machine (2 processes on 1 GPU would share one device)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_MIXMATCH_NO_PROGRESS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RANK", None)
    for cmd, out in (([sys.executable, worker], "one"), ([torchrun, "--standalone", "--nproc_per_node", "2", worker], "two")):
        proc = subprocess.run([*cmd, str(tmp_path / out)], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["evaluation"]["dropped"] > 0
    assert two["pareto"] == one["pareto"]
    for a, b in zip(one["variants"], two["variants"]):
        assert (a["id"], a["samples"], a.get("dropped_by"), a["accuracy"]) == \
               (b["id"], b["samples"], b.get("dropped_by"), b["accuracy"])
    assert two["evaluation"]["images_evaluated"] == one["evaluation"]["images_evaluated"]


def test_front_is_chosen_on_the_selection_data_and_measured_on_the_eval_split(tmp_path, image_dataset):
    from conftest import save_tiny_transformers

    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    loaded = load_model(save_tiny_transformers(tmp_path / "m", "resnet"))
    data = load_data(image_dataset, loaded.preprocess, calib_samples=40, num_labels=loaded.num_labels)
    data.select, data.select_split = data.calib, "train"  # what the data branch provides as PreparedData.select
    res = run_mixmatch(PruneConfig(model="m", output_dir=str(tmp_path / "run"), save="none", progress=False,
                                   strategies=("conservative", "aggressive", "late_heavy", "percentile_70"),
                                   baselines=("uniform",)), loaded=loaded, data=data).results
    assert res["select_split"] == "train" and res["eval_split"] == "test"
    by_id = {v["id"]: v for v in res["variants"]}
    for v in res["variants"]:
        if v["id"] in res["pareto"]:
            assert (v["split"], v["samples"]) == ("test", 32)
            assert (v["select"]["split"], v["select"]["samples"]) == ("train", 40)
        elif "same_as" not in v:
            assert (v["split"], v["samples"]) == ("train", 40) and "select" not in v
    # the front is the front of the selection accuracies
    from hf_mixmatch.pareto import pareto_front

    unique = [v for v in res["variants"] if "same_as" not in v]
    sel = [{**v, "accuracy": v["select"]["accuracy"]} if "select" in v else v for v in unique]
    assert pareto_front(sel) == res["pareto"]
    assert res["baselines"] and all((b["split"], b["samples"]) == ("test", 32) for b in res["baselines"])
    assert all(by_id[b["matched_to"]]["id"] in res["pareto"] for b in res["baselines"])
