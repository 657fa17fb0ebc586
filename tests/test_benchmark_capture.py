"""scripts/benchmark_capture.py: the padding table measures what it says (the library's Hessian is exact, the one
from the module's attributes is not) and the cost table runs."""

from _scripts import load_script


def test_padding_table_and_cost_rows(capsys):
    bench = load_script("benchmark_capture")
    rows = bench.padding_errors([(7, 2), (9, 3)])
    assert rows[0]["library_error"] < 1e-12 < 0.3 < rows[0]["attribute_error"]
    assert rows[0]["positions"] == 16 and rows[0]["attribute_positions"] == 9
    assert rows[1]["attribute_error"] < 1e-12  # 9x9 at stride 3 needs no padding: nothing to get wrong
    cost = bench.capture_cost(["test_resnet"], images=1, repeats=1)
    assert cost[0]["op_s"] > 0 and cost[0]["hooks_s"] > 0
    assert bench.main(["--sizes", "7:2", "--models", ""]) == 0
    assert "| 7×7 | 2 | 16 | 9 |" in capsys.readouterr().out
