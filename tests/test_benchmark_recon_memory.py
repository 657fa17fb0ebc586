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
