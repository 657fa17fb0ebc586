"""Fault and fuzz suite: bad input to every command ends in one line and exit 2, and loses no user file.

Each case runs the real command line in-process against a world of files a careless user might have: an earlier
run (with a manifest) that also holds the user's notes, a folder of the user's own, tiny models and datasets.
After every case the user's files and the earlier run are checked byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_image_dataset, save_tiny_transformers

from hf_mixmatch.cli import main
from hf_mixmatch.outdir import prepare_output_dir, record


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    w = {"root": root, "model": save_tiny_transformers(root / "model", "resnet"),
         "data": make_image_dataset(root / "data", n_train=16, n_test=8)}
    prev = root / "prev"  # an earlier run the user wants to keep unless a new run really replaces it
    prepare_output_dir(prev, overwrite=False)
    record(prev, "results.json")
    (prev / "results.json").write_text('{"earlier": "run"}')
    (prev / "notes.txt").write_text("the user's notes")
    foreign = root / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    (root / "cfg_not_json").mkdir()
    (root / "cfg_not_json" / "config.json").write_text("{not json")
    (root / "bad_ranges.json").write_text("[1, 2")
    (root / "a_file").write_text("x")
    run = root / "pushrun"  # push: a results.json whose variant path leads outside the run
    (run / "variants").mkdir(parents=True)
    (root / "outside_variant").mkdir()
    (root / "outside_variant" / "model.safetensors").write_bytes(b"secret")
    (run / "results.json").write_text(json.dumps({"base_model": "org/m", "variants": [
        {"id": "v", "signal": "magnitude", "strategy": "uniform", "sparsity": 0.5, "accuracy": 0.9,
         "path": "../outside_variant"}]}))
    (root / "broken_run").mkdir()
    (root / "broken_run" / "results.json").write_text('{"variants": [')
    w.update(prev=prev, foreign=foreign, run=run)
    return w


def _snapshot(root: Path) -> dict[str, bytes]:
    skip = ("model", "data")  # inputs, read-only for every command
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in skip}


def _p(w, key):
    return str(w[key]) if key in w else str(w["root"] / key)


# (command line with {placeholders} from the world, text the one error line must contain)
CASES = [
    # prune: options, model, data, ranges, output dir; always aimed at the earlier run with --overwrite, which
    # must survive because everything is validated before the directory is touched
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --seed -1", "--seed"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --finetune-lr nan", "--finetune-lr"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --finetune-lr -1e-3", "--finetune-lr"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --batch-size 0", "--batch-size"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --calib-samples x", "--calib-samples"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --range-targets 0.5,1.5", "range-targets"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --range-targets nan", "range-targets"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --rd-grid-step 0", "--rd-grid-step"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --signals bogus", "unknown signal"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --strategies bogus", "unknown strategy"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --ranges preset:nope", "no preset"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --ranges {root}/missing.json", "--ranges must"),
    ("prune {model} --dataset {data} --output-dir {prev} --overwrite --ranges {bad_ranges.json}", "range file"),
    ("prune nobody/nothing --dataset {data} --output-dir {prev} --overwrite", "could not be fetched"),
    ("prune {cfg_not_json} --dataset {data} --output-dir {prev} --overwrite", "cfg_not_json/config.json is not valid"),
    ("prune {model} --dataset {root}/no-such-data --output-dir {prev} --overwrite", "not found"),
    ("prune {model} --dataset {data} --output-dir {foreign}", "not written by hf-mixmatch"),
    ("prune {model} --dataset {data} --output-dir {foreign} --overwrite", "not written by hf-mixmatch"),
    ("prune {model} --dataset {data} --output-dir {prev}", "--overwrite"),
    ("prune {model} --dataset {data} --output-dir {a_file}", "is a file"),
    ("prune {model} --dataset {data} --output-dir {a_file}/sub", "cannot write"),
    ("prune {model}", "--output-dir"),
    # structured
    ("structured {model} --dataset {data} --output-dir {foreign} --overwrite", "not written by hf-mixmatch"),
    ("structured {model} --dataset {data} --output-dir {prev} --overwrite --flops-weight -1", "flops_weight"),
    ("structured nobody/nothing --dataset {data} --output-dir {prev} --overwrite", "could not be fetched"),
    ("structured {model} --dataset {data} --output-dir {prev} --overwrite --sparsity nan", "sparsity"),
    # push
    ("push {root}/nowhere --namespace me", "results.json"),
    ("push {broken_run} --namespace me", "broken_run/results.json is not valid JSON"),
    ("push {run} --namespace me", "outside"),
    ("push {prev} --namespace me", "base_model"),
    # search
    ("search --min-sparsity nan", "--min-sparsity"),
    ("search --min-accuracy 2", "--min-accuracy"),
    ("search --limit 0", "--limit"),
    # download
    ("download bad..id", "repo id"),
    ("download a/b/c", "namespace/name"),
    # verify
    ("verify {model} --dataset {data} --tolerance -1", "--tolerance"),
    ("verify {model} --dataset {data} --tolerance nan", "--tolerance"),
    ("verify {model} --dataset {data} --batch-size 0", "--batch-size"),
    ("verify bad..id --dataset {data}", "repo id"),
    ("verify {a_file} --dataset {data}", "is a file"),
    # no command at all / unknown command
    ("frobnicate", "invalid choice"),
]


@pytest.mark.parametrize("line, expected", CASES, ids=[c[0].split(" {")[0] + f"[{i}]" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(world, capsys, line, expected):
    fields = {k: _p(world, k) for k in ("model", "data", "prev", "foreign", "run", "root", "cfg_not_json",
                                         "bad_ranges.json", "a_file", "broken_run")}
    argv = line
    for k, v in fields.items():
        argv = argv.replace("{" + k + "}", v)
    before = _snapshot(world["root"])
    code = main(argv.split())
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.startswith("hf-mixmatch")]  # the rest: library progress bars
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("hf-mixmatch: error:"), err
    assert err.strip().splitlines()[-1] == lines[0], err
    assert expected in lines[0], err
    assert "Traceback" not in err
    assert _snapshot(world["root"]) == before  # the earlier run, the user's notes and thesis: all intact


def test_unexpected_errors_are_one_line_pointing_to_debug(world, capsys, monkeypatch):
    import hf_mixmatch.pipeline

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(hf_mixmatch.pipeline, "run_mixmatch", boom)
    argv = ["prune", "default", "--output-dir", str(world["root"] / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--debug" in err and "ZeroDivisionError" in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug"] + argv)
    with pytest.raises(ZeroDivisionError):  # -v / --verbose stay aliases
        main(["-v"] + argv)
    with pytest.raises(ZeroDivisionError):  # and --debug works after the command too
        main(argv + ["--debug"])


# ------------------------------------------------------------------------------------ full or read-only disk

QUICK = ["--signals", "magnitude", "--strategies", "conservative,aggressive", "--calib-samples", "16",
         "--eval-samples", "32", "--save", "all", "--quiet"]


@pytest.mark.parametrize("victim, err_no, expected", [("mixmatch.json", "ENOSPC", "no space left"),
                                                      ("report.md", "EROFS", "read-only")])
def test_a_disk_that_fills_or_turns_read_only_mid_run(tmp_path, capsys, monkeypatch, victim, err_no, expected):
    import errno
    import os

    out = tmp_path / "run"
    real = Path.write_text

    def write_text(self, *a, **k):
        if self.name == victim:
            raise OSError(getattr(errno, err_no), os.strerror(getattr(errno, err_no)), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main(["prune", "default", "--output-dir", str(out)] + QUICK) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hf-mixmatch: error:") and expected in err[-1] and "Traceback" not in "\n".join(err)
    assert not (out / "results.json").exists()  # nothing claims the run finished
    if victim == "mixmatch.json":  # the variant being written is removed whole, no temp folder left
        assert not [p for p in (out / "variants").iterdir()]
    # the same command then works without --overwrite: only caches of the failed run are left
    monkeypatch.setattr(Path, "write_text", real)
    if victim == "mixmatch.json":
        assert main(["prune", "default", "--output-dir", str(out)] + QUICK) == 0
        assert (out / "results.json").is_file()


# ----------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_at_several_points_exits_130_and_loses_nothing(tmp_path):
    """SIGINT to `python -m hf_mixmatch prune default ... --overwrite` over an earlier run that holds the user's
    notes: during start-up, right after the earlier run was cleared, and once the scores are cached."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    points = {"startup": lambda out: True, "cleared": lambda out: not (out / "results.json").exists(),
              "scored": lambda out: (out / "scores.safetensors").exists()}
    procs = {}
    for name in points:
        out = tmp_path / name
        prepare_output_dir(out, overwrite=False)
        record(out, "results.json")
        (out / "results.json").write_text('{"earlier": "run"}')
        (out / "notes.txt").write_text("mine")
        cmd = [sys.executable, "-m", "hf_mixmatch", "prune", "default", "--output-dir", str(out), "--overwrite",
               "--signals", "magnitude", "--calib-samples", "32", "--eval-samples", "256", "--save", "all", "--quiet"]
        procs[name] = (out, subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True), time.monotonic())
    sent = set()
    deadline = time.monotonic() + 240
    while len(sent) < len(procs) and time.monotonic() < deadline:
        for name, (out, proc, t0) in procs.items():
            if name not in sent and time.monotonic() - t0 > 1.0 and points[name](out):
                proc.send_signal(signal.SIGINT)
                sent.add(name)
            assert proc.poll() is None or name in sent, f"{name}: the run ended before the interrupt point"
        time.sleep(0.02)
    for name, (out, proc, _) in procs.items():
        _, err = proc.communicate(timeout=120)
        ours = [line for line in err.splitlines() if line.startswith("hf-mixmatch")]
        assert proc.returncode == 130, (name, err)
        assert len(ours) == 1 and "interrupted" in ours[0] and "Traceback" not in err, (name, err)
        assert (out / "notes.txt").read_text() == "mine", name
        assert not (out / "results.json").exists() or name == "startup", name
        if name == "startup":  # interrupted before the directory was touched: the earlier run is intact
            assert (out / "results.json").read_text() == '{"earlier": "run"}'
        for folder in (out / "variants").glob("*") if (out / "variants").is_dir() else []:
            assert not folder.name.startswith("."), f"{name}: temp folder {folder} left behind"
            assert {"config.json", "mixmatch.json"} <= {p.name for p in folder.iterdir()}, folder


@pytest.mark.parametrize("delay", [0.2, 0.5, 0.8, 1.2, 1.6])
def test_ctrl_c_while_the_command_line_imports_torch_exits_130_in_one_line(tmp_path, delay):
    """A Ctrl-C that lands while torch's C++ extension initialises must not abort the process (SIGABRT)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hf_mixmatch", "prune", "default", "--output-dir",
                             str(tmp_path / "out"), "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "terminate called" not in err, err
    assert [line for line in err.splitlines() if line.startswith("hf-mixmatch")][0].startswith("hf-mixmatch: interrupted")
