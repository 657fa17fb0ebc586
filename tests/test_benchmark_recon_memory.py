"""scripts/benchmark_recon_memory.py runs end to end on a tiny timm model and reports every step it measures."""

from _scripts import load_script


def test_memory_benchmark_reports_the_forward_and_each_calibration_size(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = load_script("benchmark_recon_memory")
    assert bench.main(["--models", "test_vit", "--targets", "forward,dense", "--calib", "4,8", "--batch-size", "4",
                       "--refits", "0,5"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| test_vit |")]
    steps = [row.split(" | ")[5] for row in rows]
    assert steps == ["one forward", "reconstruct, target dense", "reconstruct, target dense, refit 5",
                     "reconstruct, target dense", "reconstruct, target dense, refit 5"]
    assert [row.split(" | ")[6] for row in rows] == ["–", "4", "4", "8", "8"]
    cells = rows[1].split(" | ")
    layers, group, total = int(cells[1]), float(cells[3]), float(cells[4])
    assert layers > 0 and group <= total


def test_one_linear_layer_reports_the_pre_flight_estimate():
    """``linear:D``: one D-input layer, whose estimate is the pre-flight's (4 Hessians with the dense target, 3 with
    SparseGPT's) times its D x D float64 matrix."""
    from hf_mixmatch import reconstruct_stage
    from hf_mixmatch.config import PruneConfig

    bench = load_script("benchmark_recon_memory")
    for target in ("dense", "pruned"):
        row = bench.child("linear:256", target, 4, 0.5, 4, 0)
        assert row["layers"] == 2 and row["largest_hessian_mb"] == 256 * 256 * 8 / bench.MB
        config = PruneConfig(model="m", output_dir="unused", reconstruct="sparsegpt", reconstruct_target=target)
        assert row["preflight_mb"] == reconstruct_stage.hessian_buffers(config) * row["largest_hessian_mb"]
        assert row["peak_growth_mb"] >= 0
