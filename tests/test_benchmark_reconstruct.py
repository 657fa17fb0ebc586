"""scripts/benchmark_reconstruct.py and its report (scripts/recon_report.py): the generated doc section (verdicts,
markers), its place in the page, and the merging of summaries from separate invocations."""

import json

import pytest
from _scripts import load_script


def _script():
    return load_script("recon_report")


def _run(rows):
    return {"model": "m", "seed": 0, "dense": {"test": 0.9}, "n_test": 1000, "train_log": {}, "commands": ["cmd"],
            "rows": rows, "fixed": {"0.9": {"lamp": {"accuracy": 0.5}, "sparsegpt": {"accuracy": 0.6}}}}


def test_verdicts_use_the_noise_band_and_the_right_pool():
    br = _script()
    nz = br.noise(0.8, 1000)
    assert nz == pytest.approx(2 * 2 ** 0.5 * (0.8 * 0.2 / 1000) ** 0.5)
    rows = [
        # one-shot row: reconstructed baselines are not its rivals, so LAMP (0.80) is the best one
        {"front": "oneshot", "id": "a", "sparsity": 0.8, "test": 0.80 + 2 * nz, "baselines": {"lamp": 0.80}},
        {"front": "recon", "id": "b", "sparsity": 0.8, "test": 0.80, "baselines": {"lamp": 0.70, "lamp+sgpt": 0.80 + 2 * nz}},
        {"front": "recon", "id": "c", "sparsity": 0.9, "test": 0.80, "baselines": {"lamp": 0.80, "lamp+sgpt": 0.80}},
    ]
    text = br.write_section({"runs": [_run(rows)]})
    lines = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| M&M")}
    assert lines["a"].rstrip(" |").endswith("above")
    assert lines["b"].rstrip(" |").endswith("below") and "LAMP +SGPT" in lines["b"]
    assert lines["c"].rstrip(" |").endswith("tie")
    assert "| 0.9 | 50.00 | 60.00 |" in text


def test_section_is_replaced_in_place_and_hand_text_kept(tmp_path):
    br = _script()
    doc = tmp_path / "Q.md"
    doc.write_text("# page\n\n" + br.NOTES_MARKER + "\nhand notes\n")
    br.update_doc(doc, br.write_section({"runs": [_run([])]}))
    doc.write_text(doc.read_text() + "\nanalysis after the section\n")
    br.update_doc(doc, br.write_section({"runs": [_run([])]}))
    text = doc.read_text()
    assert text.count(br.BEGIN) == 1 and text.count(br.END) == 1
    assert "hand notes" in text and "analysis after the section" in text
    assert text.index(br.NOTES_MARKER) < text.index(br.BEGIN)


def _bench_script():
    return load_script("benchmark_reconstruct")


def _entry(**acc):
    return {m: {"sparsity": 0.9, "accuracy": a} for m, a in acc.items()}


def test_fixed_table_compares_the_own_allocator_with_the_best_other_method():
    rr = _script()
    n = 1000
    nz = rr.noise(0.7, n)
    run = {**_run([]), "fixed": {
        "0.8": _entry(lamp=0.6, snip=0.7, **{"lamp+sgpt": 0.7, "rdsgpt+sgpt": 0.7 + 2 * nz}),
        # the own allocator is not its own rival: the best *other* method here is SNIP at 0.7
        "0.9": _entry(lamp=0.5, snip=0.7, **{"lamp+sgpt": 0.6, "rdsgpt+sgpt": 0.7}),
    }, "fixed_finetuned": {"0.8": {  # the best masking method differs between targets
        "rdsgpt+sgpt": {"oneshot": 0.7, "accuracy": 0.71, "steps": 5},
        "lamp": {"oneshot": 0.6, "accuracy": 0.7, "steps": 5}}, "0.9": {
        "rdsgpt+sgpt": {"oneshot": 0.7, "accuracy": 0.70 - 2 * nz, "steps": 5},
        "snip": {"oneshot": 0.7, "accuracy": 0.70, "steps": 5}}}}
    text = rr.write_section({"runs": [run]})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| 0.") and "→" not in line}
    assert rows["0.8"].rstrip(" |").endswith("above") and "SNIP 70.00" in rows["0.8"]
    assert rows["0.9"].rstrip(" |").endswith("tie") and "| +0.00 |" in rows["0.9"]
    ft = {line.split("|")[1].strip(): line for line in text.splitlines() if "→" in line and line.startswith("| 0.")}
    assert ft["0.9"].rstrip(" |").endswith("below") and "| SNIP 70.00 → 70.00 |" in ft["0.9"]
    assert "| LAMP 60.00 → 70.00 | LAMP 70.00 |" in ft["0.8"] and "5 AdamW steps" in text
    pooled = [line for line in text.splitlines() if line.startswith("| m | 0.")]
    assert [p.split("|")[3].strip() for p in pooled] == ["one-shot", "one-shot", "fine-tuned", "fine-tuned"]
    assert "| 1 / 0 / 0 |" in pooled[0] and "| 0 / 0 / 1 |" in pooled[3]


def test_without_the_own_allocator_the_fixed_table_has_no_verdict():
    rr = _script()
    text = rr.write_section({"runs": [_run([])]})
    assert "| 0.9 | 50.00 | 60.00 |" in text and "verdict" not in text.split("Fixed global targets")[1]
    assert "fixed targets against" not in text


def test_summaries_of_separate_invocations_merge_per_model_and_seed(tmp_path):
    rr = _script()
    front = {**_run([{"front": "recon", "id": "a", "sparsity": 0.9, "test": 0.8, "baselines": {"lamp": 0.7}}]),
             "command": "c1", "fixed": {}}
    more = {**_run([{"front": "recon", "id": "a", "sparsity": 0.9, "test": 0.8, "baselines": {"rd+sgpt": 0.75}}]),
            "command": "c2", "fixed": {"0.9": _entry(lamp=0.5)}}
    later = {**_run([]), "command": "c3", "fixed": {"0.5": _entry(lamp=0.85), "0.9": _entry(**{"rdsgpt+sgpt": 0.6})},
             "fixed_finetuned": {"0.9": {"lamp+sgpt": {"oneshot": 0.6, "accuracy": 0.7}}}}
    other_seed = {**_run([]), "seed": 1, "command": "c4"}
    for i, r in enumerate((front, more, later, other_seed)):
        (tmp_path / f"summary_{i}.json").write_text(json.dumps({"runs": [r]}))
    merged = {(r["model"], r["seed"]): r for r in rr.merge_summaries(tmp_path)}
    assert set(merged) == {("m", 0), ("m", 1)}
    m = merged[("m", 0)]
    assert m["commands"] == ["c1", "c2", "c3"]
    assert m["rows"][0]["baselines"] == {"lamp": 0.7, "rd+sgpt": 0.75}
    assert list(m["fixed"]) == ["0.5", "0.9"]  # numeric order, whatever the invocation order
    assert set(m["fixed"]["0.9"]) == {"lamp", "rdsgpt+sgpt"}
    assert m["fixed_finetuned"]["0.9"]["lamp+sgpt"]["accuracy"] == 0.7


class _FakeBench:
    """Records what the fixed stage asks for; a method's accuracy is read from a table."""

    ACC = {"lamp": 0.5, "snip": 0.7, "wanda": 0.1}

    def __init__(self):
        self.calls = []

    def baseline(self, method, target, *, reconstruct, rank_by=None, finetune=False):
        self.calls.append((method, target, reconstruct, rank_by, finetune))
        acc = self.ACC.get(method, 0.6) if not reconstruct else 0.8
        return {"sparsity": target, "accuracy": acc, **({"oneshot": acc, "best_step": 0, "time_s": 0.0} if finetune
                                                        else {})}


def test_fixed_stage_runs_rd_allocations_when_asked_and_fine_tunes_the_strong_ones():
    br = _bench_script()
    args = br.parse_args(["--fixed-targets", "0.5,0.9", "--rd", "--rd-own", "--finetune-min", "0.8",
                          "--finetune-steps", "7"])
    bench = _FakeBench()
    fixed = br._fixed("m", 0, bench, args)
    assert list(fixed) == ["0.5", "0.9"]
    assert set(fixed["0.9"]) == {"lamp", "snip", "wanda", "wanda_lamp", "sparsegpt", "lamp+sgpt", "erk+sgpt",
                                 "rd+sgpt", "rdsgpt+sgpt"}
    bench.calls.clear()
    ft = br._fixed_finetuned("m", 0, bench, fixed, args)
    assert list(ft) == ["0.9"]  # 0.5 is below --finetune-min
    # the reconstructed allocations + the best masking method one-shot there (SNIP), each fine-tuned
    assert set(ft["0.9"]) == {"rdsgpt+sgpt", "rd+sgpt", "lamp+sgpt", "erk+sgpt", "snip"}
    assert all(c[4] for c in bench.calls) and ("snip", 0.9, False, None, True) in bench.calls
    assert all(e["steps"] == 7 for e in ft["0.9"].values())
    no_rd = br._fixed("m", 0, _FakeBench(), br.parse_args(["--fixed-targets", "0.9"]))
    assert "rd+sgpt" not in no_rd["0.9"] and "rdsgpt+sgpt" not in no_rd["0.9"]


def test_no_pooled_front_table_without_front_rows():
    rr = _script()
    assert "All seeds: the reconstructed M&M front" not in rr.write_section({"runs": [_run([])]})
    row = {"front": "recon", "id": "a", "sparsity": 0.85, "test": 0.8, "baselines": {"lamp": 0.7}}
    assert "| m | 0 | 1 | 1 | 0 | 0 | 0 |" in rr.write_section({"runs": [_run([row])]})


def test_a_tie_where_the_best_baseline_is_within_noise_of_dense_says_no_method_can_be_above():
    rr = _script()
    nz = rr.noise(0.89, 1000)  # dense 0.90 (``_run``): a baseline at 0.89 leaves less room than the noise band
    rows = [{"front": "recon", "id": "a", "sparsity": 0.85, "test": 0.895, "baselines": {"lamp+sgpt": 0.89}},
            {"front": "recon", "id": "b", "sparsity": 0.9, "test": 0.80, "baselines": {"lamp+sgpt": 0.80}},
            {"front": "recon", "id": "c", "sparsity": 0.9, "test": 0.80 + 2 * nz, "baselines": {"lamp+sgpt": 0.80}}]
    text = rr.write_section({"runs": [_run(rows)]})
    verdict = {line.split("|")[2].strip(): line.rstrip(" |").rsplit("|", 1)[1].strip()
               for line in text.splitlines() if line.startswith("| M&M")}
    assert verdict == {"a": "tie, no room", "b": "tie", "c": "above"}
    assert "| m | 0 | 3 | 1 | 2 | 0 | 1 |" in text


def test_extra_test_pool_never_overlaps_training_calibration_or_selection(monkeypatch):
    """``--extra-test N``: the last N training images join the test pool; calibration and selection are drawn
    from training images 20000..end-N only (the label of each fake image is its index, so overlaps show)."""
    import numpy as np

    bench = load_script("recon_bench")
    n_train, n_test = 20400, 30

    def fake_read_split(split, root, samples=None):
        n = n_train if split == "train" else n_test
        labels = np.arange(n) if split == "train" else -1 - np.arange(n)
        return np.zeros((n, 28, 28), dtype=np.uint8), labels[:samples]

    monkeypatch.setattr(bench, "read_split", fake_read_split)
    calib, select, test = bench.splits("unused", 3, 50, 100, None, extra_test=200)
    c, s, t = (set(ds.tensors[1].tolist()) for ds in (calib, select, test))
    assert len(c) == 50 and len(s) == 100 and not c & s
    assert all(20000 <= i < n_train - 200 for i in c | s)
    assert t == set(range(-n_test, 0)) | set(range(n_train - 200, n_train)) and len(test) == n_test + 200
    # without the extra pool the draw may use every training image past 20000, and test is the test split alone
    _, _, test0 = bench.splits("unused", 3, 50, 100, None)
    assert set(test0.tensors[1].tolist()) == set(range(-n_test, 0))
    with pytest.raises(SystemExit, match="--extra-test"):
        bench.splits("unused", 3, 50, 100, None, extra_test=300)


def _tiny_resnet_on_fake_fashion(tmp_path, monkeypatch):
    """A tiny timm ResNet saved at ``tmp_path/m``; recon_bench reads random 28x28 images with 4 classes instead of
    Fashion-MNIST (20,300 training, 40 test)."""
    import numpy as np
    from conftest import save_tiny_transformers

    bench = load_script("recon_bench")
    rng = np.random.default_rng(0)

    def fake_read_split(split, root, samples=None):
        n = 20300 if split == "train" else 40
        return rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)[:samples], (np.arange(n) % 4)[:samples]

    monkeypatch.setattr(bench, "read_split", fake_read_split)
    save_tiny_transformers(tmp_path / "m", "resnet")


def test_benchmark_bn_prints_every_method_and_size_with_dense_statistics_untouched(tmp_path, monkeypatch, capsys):
    """scripts/benchmark_bn.py on a tiny ResNet and fake Fashion-MNIST: one row per method and target; with the
    dense statistics and no pruning (target 0) the accuracy is the dense model's."""
    _tiny_resnet_on_fake_fashion(tmp_path, monkeypatch)
    bn = load_script("benchmark_bn")
    assert bn.main(["--model", str(tmp_path / "m"), "--targets", "0,0.9", "--methods", "lamp,rd+sgpt",
                    "--calib-sizes", "0,16", "--guard-size", "16", "--rd-grid-step", "0.25",
                    "--rd-cache", str(tmp_path / "rd")]) == 0
    out = capsys.readouterr().out
    dense = float(out.split("dense ")[1].split("%")[0])
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| lamp") or line.startswith("| rd")]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [("lamp", "0.00"), ("lamp", "0.90"), ("rd+sgpt", "0.00"),
                                                           ("rd+sgpt", "0.90")]
    assert float(rows[0][2]) == dense
    # re-estimation changes the statistics, so at 90% sparsity the two columns are different models
    assert all(float(r[4]) == pytest.approx(float(r[3]) - float(r[2]), abs=0.011) for r in rows)
    # the guarded column is one of the two measured ones (N = 16 both ways), as its "kept" column says
    assert all(float(r[5]) == float(r[3] if r[6].strip() == "re-estimated" else r[2]) for r in rows)
    # structured: channels removed by the structured search, then the same columns; the last two: the library's path
    assert bn.main(["--model", str(tmp_path / "m"), "--targets", "0,0.3", "--methods", "structured",
                    "--calib-sizes", "0,16", "--guard-size", "16", "--select", "32"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| structured")]
    assert len(rows) == 1 and rows[0][1].strip() == "0.30" and "of params" in rows[0][0]
    r = rows[0]
    shares = [float(x.strip().rstrip("%")) for x in r[0].split("(")[1].split(" of params")[0].split("/")]
    assert len(shares) == 2 and all(abs(x - 30) <= 2 for x in shares)  # both searches within the tolerance
    assert float(r[4]) == pytest.approx(float(r[3]) - float(r[2]), abs=0.011)
    assert 0 <= float(r[5]) <= 100 and r[6].strip() in ("re-estimated", "dense")


def test_baselines_reconstruct_with_their_target_and_the_front_with_the_runs(monkeypatch):
    """``--baseline-target`` sets every '+SGPT' baseline's target (default: SparseGPT's own); the M&M rows are
    re-measured with the target their run recorded; the report's header says which was which."""
    import hf_mixmatch.reconstruct as rec

    bench_mod, br = load_script("recon_bench"), _bench_script()
    seen = []
    monkeypatch.setattr(rec, "reconstruct", lambda model, layers, sp, x, settings, **kw: seen.append(settings.target))
    bench = bench_mod.Bench.__new__(bench_mod.Bench)
    bench.model, bench.layers, bench.calib = None, [], type("D", (), {"tensors": (None, None)})()
    for argv, expected in (([], "pruned"), (["--baseline-target", "dense"], "dense")):
        bench.args = br.parse_args(argv)
        bench.prune({}, rank_by=None, reconstruct=True)
        bench.prune({}, rank_by=None, reconstruct=True, target="dense" if expected == "pruned" else "pruned")
        assert seen[-2:] == [expected, "dense" if expected == "pruned" else "pruned"]
    assert br.parse_args([]).reconstruct_target == "dense"
    refits = []
    monkeypatch.setattr(rec, "reconstruct", lambda model, layers, sp, x, settings, **kw: refits.append(settings.refit))
    for argv, expected in (([], 0), (["--baseline-refit", "20"], 20)):  # default: SparseGPT as its paper runs it
        bench.args = br.parse_args(argv)
        bench.prune({}, rank_by=None, reconstruct=True)
        bench.prune({}, rank_by=None, reconstruct=True, refit=5)
        assert refits[-2:] == [expected, 5]
    rr = _script()
    run = {**_run([]), "baseline_target": "pruned", "n_variants": 3, "mixmatch_s": 1.0, "timings": {},
           "reconstruct": {"settings": {"target": "dense"}, "rule": "r", "candidates": []}}
    assert "reconstruction target: M&M the dense model's outputs, `+SGPT` baselines SparseGPT's own" in \
        rr.write_section({"runs": [run]})
    assert "reconstruction target" not in rr.write_section({"runs": [_run([])]})  # older summaries: both SparseGPT's
    run["reconstruct"]["settings"]["refit"] = 20
    assert "M&M the dense model's outputs + kept-weight refit (20 steps), `+SGPT` baselines SparseGPT's own" in \
        rr.write_section({"runs": [run]})


def test_benchmark_target_measures_both_targets_per_allocation(tmp_path, monkeypatch, capsys):
    """scripts/benchmark_target.py on a tiny ResNet and fake Fashion-MNIST: one row per sparsity, both targets per
    allocation; with nothing pruned both are the dense model; the gain column is their difference."""
    _tiny_resnet_on_fake_fashion(tmp_path, monkeypatch)
    bt = load_script("benchmark_target")
    rows = bt.main(["--model", str(tmp_path / "m"), "--targets", "0,0.8", "--methods", "lamp,rd",
                    "--calib-samples", "16", "--select-samples", "16", "--rd-grid-step", "0.25", "--bn-recalibrate"])
    out = capsys.readouterr().out
    dense = float(out.split("dense ")[1].split("%")[0])
    table = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 0")]
    assert [r[0].strip() for r in table] == ["0", "0.8"] and len(table[0]) == 1 + 4 + 2
    assert all(float(c) == dense for c in table[0][1:5])
    for r in table:
        assert float(r[5]) == pytest.approx(float(r[2]) - float(r[1]), abs=0.011)
        assert float(r[6]) == pytest.approx(float(r[4]) - float(r[3]), abs=0.011)
    assert rows[1][("lamp", "dense", 0)] >= 0 and set(rows[1]) >= {("rd", "pruned", 0), ("rd", "dense", 0)}


def test_benchmark_target_compares_refits(tmp_path, monkeypatch, capsys):
    """--recon-targets dense --refits 0,8: one column per refit; the gain is the refit's."""
    _tiny_resnet_on_fake_fashion(tmp_path, monkeypatch)
    bt = load_script("benchmark_target")
    rows = bt.main(["--model", str(tmp_path / "m"), "--targets", "0.8", "--methods", "lamp", "--recon-targets",
                    "dense", "--refits", "0,8", "--calib-samples", "16", "--select-samples", "16"])
    out = capsys.readouterr().out
    assert "| sparsity | lamp dense | lamp dense refit 8 | lamp gain |" in out
    row = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| 0.8")).split("|")[1:-1]]
    assert float(row[3]) == pytest.approx(float(row[2]) - float(row[1]), abs=0.011)
    assert set(rows[0]) >= {("lamp", "dense", 0), ("lamp", "dense", 8)}


def test_front_rows_are_remeasured_with_the_runs_own_reconstruction(tmp_path, monkeypatch):
    """The reconstructed front is re-measured on test with the target and refit the M&M run recorded; every '+SGPT'
    baseline with the baselines' own (--baseline-target / --baseline-refit)."""
    import hf_mixmatch.signals as signals

    br = _bench_script()
    out = tmp_path / "m" / "seed0"
    out.mkdir(parents=True)
    variant = {"id": "magnitude-rd_p70", "signal": "magnitude", "sparsity": 0.9, "accuracy": 0.8,
               "reconstructed": True, "target_layers": {"a": 0.9}}
    (out / "results.json").write_text(json.dumps({
        "variants": [variant], "pareto": [variant["id"]], "timings": {"total_s": 1.0}, "dense": {"accuracy": 0.9},
        "reconstruct": {"settings": {"target": "dense", "refit": 20}, "rule": "r", "candidates": []}}))
    monkeypatch.setattr(signals, "load_scores", lambda path: {"snip": {}, "activation_row": {}})

    class Bench(_FakeBench):
        scores = None
        measured = []

        def measure(self, sparsities, *, rank_by, reconstruct, data, target=None, refit=None):
            self.measured.append((reconstruct, target, refit))
            return {"sparsity": 0.9, "accuracy": 0.85}

        def add_rd_scores(self, out, *, rd, own):
            pass

    bench = Bench()
    bench.test = None
    args = br.parse_args(["--reuse", "--fronts", "recon", "--baseline-refit", "0"])
    rows = br._fronts("m", 0, bench, out, None, args)["rows"]
    assert bench.measured == [(True, "dense", 20)]
    assert rows[0]["target"] == "dense" and rows[0]["refit"] == 20
    assert {c[0] for c in bench.calls if c[2]} == set(br.RECON)  # the '+SGPT' baselines go through Bench.baseline
