"""scripts/zoo_table.py: rows for the zoo page, rendered again from their JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "zoo_table.py"


def _script():
    return load_script("zoo_table")


def test_zoo_table_rows_page_and_rerender(tmp_path, capsys):
    zoo_table = _script()
    page, rows = tmp_path / "zoo.md", tmp_path / "rows.json"
    assert zoo_table.main(["--only", "mixer", "mobilenetv3_small_050", "--write", str(page), "--json", str(rows)]) == 0
    data = {r["id"]: r for r in json.loads(rows.read_text())}
    assert set(data) == {"mixer", "mobilenetv3_small_050"}
    assert data["mixer"]["roles"] == "patch 1 up 4 down 4 head 1"
    assert data["mixer"]["prune"].startswith("ok (")
    assert data["mobilenetv3_small_050"]["prune"].endswith("no GraSP")
    assert all(r["structured"].startswith(("ok (", "not supported: ")) for r in data.values())
    text = page.read_text()
    assert text.startswith("# Zoo") and zoo_table.COMMAND in text and "| mixer | timm |" in text
    assert "`prune` succeeded on 2/2 architectures" in text
    # the same page from the saved rows, without running anything
    again = tmp_path / "again.md"
    assert zoo_table.main(["--from-json", str(rows), "--write", str(again)]) == 0
    assert again.read_text() == text


def test_zoo_table_unknown_case_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _script().main(["--only", "no_such_model"])
    assert exc.value.code == 2
    assert "unknown case id(s) ['no_such_model']" in capsys.readouterr().err
