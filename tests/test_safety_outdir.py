"""The run-directory manifest: --overwrite deletes exactly what hf-mixmatch wrote, and never a user's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_mixmatch.errors import OutputDirError
from hf_mixmatch.outdir import MANIFEST, check_output_dir, contains, prepare_output_dir, read_manifest, record, record_dir


def _earlier_run(out: Path) -> Path:
    """A run dir as a finished run leaves it, plus user files next to and inside what the tool wrote."""
    prepare_output_dir(out, overwrite=False)
    record_dir(out, "variants")
    record(out, "variants/a", "results.json", "report.md")
    record(out, "scores.safetensors", cache=True)
    (out / "variants" / "a").mkdir(parents=True)
    (out / "variants" / "a" / "model.safetensors").write_bytes(b"w")
    (out / "results.json").write_text("{}")
    (out / "report.md").write_text("r")
    (out / "scores.safetensors").write_bytes(b"s")
    (out / "thesis.tex").write_text("mine")  # the user's, not recorded
    (out / "variants" / "notes.txt").write_text("mine too")
    return out


def test_overwrite_removes_exactly_the_recorded_entries(tmp_path):
    out = _earlier_run(tmp_path / "run")
    with pytest.raises(OutputDirError, match="--overwrite"):
        check_output_dir(out, overwrite=False)
    prepare_output_dir(out, overwrite=True)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert left == [MANIFEST, "scores.safetensors", "thesis.tex", "variants", "variants/notes.txt"]
    assert (out / "thesis.tex").read_text() == "mine" and (out / "scores.safetensors").read_bytes() == b"s"
    assert set(read_manifest(out)["entries"]) == {"scores.safetensors", "variants"}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_non_empty_dir_is_refused_and_untouched(tmp_path, overwrite):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text("my own results")  # same name as ours, but no manifest: not ours
    with pytest.raises(OutputDirError, match="not written by hf-mixmatch"):
        prepare_output_dir(out, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_a_damaged_or_foreign_manifest_counts_as_absent(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for text in ("not json", json.dumps({"entries": {"keep.txt": {}}}), json.dumps([1, 2])):
        (out / MANIFEST).write_text(text)
        with pytest.raises(OutputDirError, match="not written by hf-mixmatch"):
            prepare_output_dir(out, overwrite=True)
    assert (out / "keep.txt").read_text() == "x"


def test_an_edited_manifest_never_reaches_outside(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    out = tmp_path / "run"
    prepare_output_dir(out, overwrite=False)
    record(out, "../precious.txt", str(outside), "results.json")
    (out / "results.json").write_text("{}")
    prepare_output_dir(out, overwrite=True)
    assert outside.read_text() == "keep" and not (out / "results.json").exists()


@pytest.mark.parametrize("where", ["cwd", "home"])
def test_cwd_and_home_are_never_cleared(tmp_path, monkeypatch, where):
    out = _earlier_run(tmp_path / "place")
    if where == "cwd":
        monkeypatch.chdir(out)
        target = "."
    else:
        monkeypatch.setenv("HOME", str(out))
        target = str(out)
    with pytest.raises(OutputDirError, match="working directory" if where == "cwd" else "home directory"):
        prepare_output_dir(target, overwrite=True)
    assert (out / "results.json").exists() and (out / "thesis.tex").exists()


def test_root_is_never_cleared():
    with pytest.raises(OutputDirError):
        check_output_dir(Path("/").anchor, overwrite=True)


def test_only_caches_left_by_a_failed_run_need_no_overwrite(tmp_path):
    out = tmp_path / "run"
    prepare_output_dir(out, overwrite=False)
    record(out, "scores.safetensors", cache=True)
    (out / "scores.safetensors").write_bytes(b"s")
    assert prepare_output_dir(out, overwrite=False) == out and (out / "scores.safetensors").exists()


def test_contains_follows_links(tmp_path):
    (tmp_path / "run" / "variants").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "run" / "variants" / "link")
    assert contains(tmp_path / "run", "variants") is not None
    for rel in ("variants/link", "../elsewhere", "/etc", ".", "variants/../.."):
        assert contains(tmp_path / "run", rel) is None, rel
