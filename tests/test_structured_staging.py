"""The structured model folder appears whole or not at all: written into a recorded hidden sibling, renamed into
place once complete; an earlier run of the tool is replaced only then; nothing the tool did not write is touched."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from hf_mixmatch.errors import OutputDirError
from hf_mixmatch.outdir import MANIFEST, open_output_dir, prepare_output_dir, read_manifest, record, staged_dir


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _earlier_run(out: Path) -> Path:
    """An earlier run of the tool (manifest, model folder, results.json) plus a file of the user's."""
    prepare_output_dir(out, overwrite=False)
    record(out, "model")
    (out / "model").mkdir()
    (out / "model" / "config.json").write_text('{"earlier": true}')
    (out / "model" / "model.safetensors").write_bytes(b"earlier weights")
    record(out, "results.json")
    (out / "results.json").write_text('{"earlier": "results"}')
    (out / "notes.txt").write_text("the user's notes")
    return out


def _write_model(folder: Path, tag: str) -> None:
    (folder / "model.safetensors").write_bytes(tag.encode() * 10)
    (folder / "config.json").write_text(json.dumps({"tag": tag}))


def test_a_complete_folder_replaces_the_earlier_one_and_its_results(tmp_path):
    out = _earlier_run(tmp_path / "run")
    out = open_output_dir(out, overwrite=True)
    assert _tree(out)["results.json"] == b'{"earlier": "results"}'  # opening clears nothing
    with staged_dir(out, "model") as staging:
        assert staging.parent == out and staging.name.startswith(".model.partial-") and not any(staging.iterdir())
        assert staging.name in read_manifest(out)["entries"]  # recorded before it is written
        _write_model(staging, "new")
        assert (out / "model" / "model.safetensors").read_bytes() == b"earlier weights"  # still the earlier one
    tree = _tree(out)
    assert tree.pop("model/model.safetensors") == b"new" * 10 and json.loads(tree.pop("model/config.json")) == {"tag": "new"}
    assert tree.pop("notes.txt") == b"the user's notes"
    assert set(tree) == {MANIFEST}  # the earlier results.json went, no hidden sibling is left
    assert set(read_manifest(out)["entries"]) == {"model"}


@pytest.mark.parametrize("fresh", [False, True], ids=["over-earlier-run", "fresh-dir"])
def test_a_failure_halfway_leaves_the_earlier_run_and_nothing_that_looks_complete(tmp_path, fresh):
    out = tmp_path / "run"
    if not fresh:
        _earlier_run(out)
    out = open_output_dir(out, overwrite=True)
    before, manifest = _tree(out), read_manifest(out)
    with pytest.raises(OSError):
        with staged_dir(out, "model") as staging:
            (staging / "config.json").write_text("{}")
            (staging / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _tree(out) == before and read_manifest(out) == manifest
    assert {p.name for p in out.iterdir()} == {p.split("/")[0] for p in before}  # no hidden leftovers
    if fresh:
        assert not (out / "model").exists()


def test_a_killed_write_is_hidden_and_cleared_by_the_next_run(tmp_path):
    out = open_output_dir(_earlier_run(tmp_path / "run"), overwrite=True)
    ctx = staged_dir(out, "model")
    staging = ctx.__enter__()  # the process dies here: no exit, no cleanup
    _write_model(staging, "killed")
    assert (out / "model" / "model.safetensors").read_bytes() == b"earlier weights"
    assert json.loads((out / "results.json").read_text()) == {"earlier": "results"}
    with pytest.raises(OutputDirError, match="--overwrite"):  # the run dir holds a run: no silent reuse
        open_output_dir(out, overwrite=False)
    out = open_output_dir(out, overwrite=True)
    with staged_dir(out, "model") as again:
        _write_model(again, "next")
    assert not staging.exists() and (out / "model" / "model.safetensors").read_bytes() == b"next" * 10
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "model", "notes.txt"])
    assert set(read_manifest(out)["entries"]) == {"model"}


def test_a_model_folder_the_tool_did_not_write_is_never_replaced(tmp_path):
    out = prepare_output_dir(tmp_path / "run", overwrite=False)
    (out / "model").mkdir()
    (out / "model" / "mine.bin").write_bytes(b"user data")
    before = _tree(out)
    with pytest.raises(OutputDirError, match="not written by hf-mixmatch"):
        with staged_dir(out, "model"):
            pytest.fail("nothing may be written")
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == [MANIFEST, "model"]


# ----------------------------------------------------------------------------------- the real command, faults


ARGV = ["structured", "default", "--dataset", "default", "--sparsity", "0.3", "--tolerance", "0.05",
        "--calib-samples", "16", "--eval-samples", "16", "--select-samples", "16", "--search", "grid",
        "--latency-runs", "1"]


def _half_written_safetensors(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"\x00" * 64)  # a truncated file where the weights should be
    raise OSError(errno.ENOSPC, "No space left on device", filename)


def _failing_card(model_dir, results, recipe=None, **kwargs):
    raise RuntimeError("card rendering failed")


@pytest.mark.parametrize("fault", ["safetensors", "card"])
def test_structured_cli_fault_keeps_the_earlier_model_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys,
                                                                                     fault):
    import hf_mixmatch.card_structured
    import hf_mixmatch.structured.io
    from hf_mixmatch.cli import main
    from hf_mixmatch.structured import load_structured

    out = tmp_path / "run"
    assert main(ARGV + ["--output-dir", str(out)]) == 0
    (out / "notes.txt").write_text("the user's notes")
    earlier = _tree(out)
    assert {"model/model.safetensors", "model/config.json", "model/structured.json", "model/README.md",
            "results.json"} <= set(earlier)
    capsys.readouterr()
    if fault == "safetensors":
        monkeypatch.setattr(hf_mixmatch.structured.io, "save_file", _half_written_safetensors)
    else:
        monkeypatch.setattr(hf_mixmatch.card_structured, "write_structured_card", _failing_card)
    code = main(ARGV + ["--output-dir", str(out), "--overwrite", "--seed", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == (2 if fault == "safetensors" else 1) and err[-1].startswith("hf-mixmatch: error:")
    assert "Traceback" not in "\n".join(err)
    assert ("no space left" if fault == "safetensors" else "--debug") in err[-1].lower()
    assert _tree(out) == earlier  # byte for byte: the earlier model, its results and the user's notes
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "model", "results.json", "notes.txt"])
    load_structured(out / "model")  # the earlier model is still whole
    # a fresh directory with the same fault: no model folder, no results, nothing hidden left behind
    fresh = tmp_path / "fresh"
    assert main(ARGV + ["--output-dir", str(fresh)]) == code
    assert sorted(p.name for p in fresh.iterdir()) == [MANIFEST]
    monkeypatch.undo()
    # without the fault the next run replaces the earlier model (and a fresh dir needs no --overwrite)
    assert main(ARGV + ["--output-dir", str(fresh)]) == 0
    assert main(ARGV + ["--output-dir", str(out), "--overwrite", "--seed", "1"]) == 0
    assert (out / "notes.txt").read_text() == "the user's notes"
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "model", "results.json", "notes.txt"])
    assert json.loads((out / "model" / "structured.json").read_text())["options"]["seed"] == 1
    assert json.loads((out / "results.json").read_text())["model_dir"] == str(out / "model")
    load_structured(out / "model")
