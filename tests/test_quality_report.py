"""scripts/benchmark_quality.py's report (scripts/quality_report.py, scripts/quality_doc.py): the per-variant
win / tie / loss check against the noise band, the best-in-band table, and ``--report-only`` rebuilding the doc
from a summary without losing the hand-written analysis below the marker."""

import json
import math

import pytest
from _scripts import load_script

N = 1000  # evaluation images: noise 2*sqrt(2)*SE = 3.58 points at 80%, 4.10 at 70%


def _run(variants, baselines, pareto):
    return {"ranges": "observed", "pareto": pareto, "timings": {}, "wall_s": 1.0,
            "variants": [{"id": i, "signal": "magnitude", "strategy": "balanced", "sparsity": s, "accuracy": a}
                         for i, s, a in variants],
            "baselines": [{"matched_to": m, "method": meth, "sparsity": s, "accuracy": a} for m, meth, s, a in baselines]}


def _model():
    # seed 0: front v1 (85%, 0.80) and v2 (92%, 0.70); v3 (86%, 0.75) is dominated by v1
    seed0 = _run([("v1", 0.85, 0.80), ("v2", 0.92, 0.70), ("v3", 0.86, 0.75)],
                 [("v1", "lamp", 0.85, 0.70),   # M&M +10: a win
                  ("v1", "snip", 0.85, 0.79),   # +1: a tie
                  ("v2", "lamp", 0.92, 0.60),   # +10: a win
                  ("v2", "snip", 0.92, 0.75),   # -5: a loss (noise 4.10 at 70%)
                  ("v3", "lamp", 0.86, 0.20), ("v3", "snip", 0.86, 0.20)],
                 ["v1", "v2"])
    seed1 = _run([("w1", 0.83, 0.82)], [("w1", "lamp", 0.83, 0.81), ("w1", "snip", 0.83, 0.81)], ["w1"])
    empty = {"rows": []}
    return {"dense": 0.85, "seeds": {"0": {"oneshot": [seed0], "finetuned": [], "fixed": empty},
                                     "1": {"oneshot": [seed1], "finetuned": [], "fixed": empty}}}


def test_front_check_counts_wins_ties_and_losses_against_the_noise_band():
    qr = load_script("quality_report")
    assert 2 * math.sqrt(2) * qr.binom_se(0.8, N) == pytest.approx(3.58, abs=0.01)
    fc = qr.front_check(_model(), "oneshot", ("lamp", "snip"), N)
    # only front members are checked (v3 beats both baselines by 55 points and must not count)
    assert fc["lamp"] == {"pairs": 3, "wins": 2, "ties": 1, "losses": 0, "worst": 0.0, "worst_at": None}
    snip = fc["snip"]
    assert (snip["pairs"], snip["wins"], snip["ties"], snip["losses"]) == (3, 0, 2, 1)
    assert snip["worst"] == pytest.approx(-5.0)
    assert "seed 0" in snip["worst_at"] and "v2" in snip["worst_at"]


def test_band_table_takes_the_most_accurate_variant_of_each_band_per_seed():
    qr = load_script("quality_report")
    tab = qr.band_table(_model(), "oneshot", ("lamp", "snip"))
    assert list(tab) == [(0.8, 0.9), (0.9, 1.0)]
    band = tab[(0.8, 0.9)]
    # seed 0: v1 (0.80) over v3 (0.75); seed 1: w1
    assert band["mm_id"] == ["observed|v1", "observed|w1"]
    assert band["mm"] == pytest.approx([5.0, 3.0])         # drops from dense 85%
    assert band["lamp"] == pytest.approx([15.0, 4.0])
    assert tab[(0.9, 1.0)]["snip"] == pytest.approx([10.0])
    assert qr.mean_std([5.0, 3.0]) == "4.00 ± 1.41" and qr.mean_std([]) == "–"


def test_report_only_rebuilds_the_doc_and_keeps_the_hand_written_analysis(tmp_path):
    bq = load_script("benchmark_quality")
    qd = load_script("quality_doc")
    model = {**_model(), "train_log": None, "ranges": ["observed"], "range_targets": [0.7, 0.8, 0.9]}
    summary = {"args": {"baselines": ["lamp", "snip"], "eval_samples": N, "calib_samples": 128, "strategies": None,
                        "ranges": ["observed"], "range_targets": [0.7, 0.8, 0.9], "baseline_match": "pareto",
                        "rd_calib": 64, "rd_grid_step": 0.05, "finetune_steps": 0},
               "machine": {"threads": 1, "torch": "x"}, "command": "scripts/benchmark_quality.py", "wall_s": 60.0,
               "models": {"tiny": model}}
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "summary.json").write_text(json.dumps(summary))
    doc = tmp_path / "doc.md"
    doc.write_text("old tables\n" + qd.NOTES_MARKER + "\nmy analysis\n")
    assert bq.main(["--report-only", "--runs-dir", str(runs), "--doc", str(doc), "--img-dir", str(tmp_path / "img")]) == 0
    text = doc.read_text()
    assert "old tables" not in text
    assert text.endswith(qd.NOTES_MARKER + "\nmy analysis\n")
    assert "### tiny, one-shot: accuracy drop" in text
    assert "| SNIP | 3 | 0 | 2 | 1 | -5.00 (seed 0 observed v2 @ 0.920" in text
    assert "- (b) tiny oneshot: front vs matched baselines, 6 pairs: **not met**: losses beyond noise vs SNIP (1)" in text
    assert (tmp_path / "img" / "quality_tiny.png").stat().st_size > 0
