"""scripts/benchmark_reconstruct.py: the generated doc section (verdicts, markers) and its place in the page."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _script():
    if "benchmark_reconstruct" in sys.modules:
        return sys.modules["benchmark_reconstruct"]
    spec = importlib.util.spec_from_file_location("benchmark_reconstruct", REPO / "scripts" / "benchmark_reconstruct.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark_reconstruct"] = module
    spec.loader.exec_module(module)
    return module


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
