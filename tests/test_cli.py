"""End to end through the CLI: the embedded default, variant folders re-loaded with plain libraries,
and one clear error (exit code 2, no traceback, no results.json) per bad input."""

import json
from pathlib import Path

import pytest
import torch
from conftest import make_image_dataset, save_tiny_transformers

from hf_mixmatch.cli import main
from hf_mixmatch.data import load_data
from hf_mixmatch.evaluate import evaluate
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.masks import measure_sparsity
from hf_mixmatch.models import load_model


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["prune", "default", "--output-dir", str(out), "--quiet", "--save", "pareto"])
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def test_default_run_shape(default_run):
    out, res = default_run
    assert res["dataset"] == "hf-mixmatch/digits" and res["eval_split"] == "test"
    assert len(res["variants"]) == 39  # 3 signals x (the paper's 10 + signal_balanced, signal_p90, signal_max)
    assert {v["signal"] for v in res["variants"]} == {"magnitude", "gradient", "hybrid"}
    assert 0.9 <= res["dense"]["accuracy"] <= 1.0 and res["dense"]["top5"] >= res["dense"]["accuracy"]
    for v in res["variants"]:
        assert v["method"] == "mixmatch" and 0 <= v["accuracy"] <= 1 and 0 <= v["sparsity"] < 1
        assert set(v["layers"]) == set(res["layer_roles"])
    ids = {v["id"] for v in res["variants"]}
    assert res["pareto"] and set(res["pareto"]) <= ids
    def chosen_on(v):  # the split the front is chosen on: front members keep their selection numbers there
        return v["sparsity"], v.get("select", v)["accuracy"]

    for vid in res["pareto"]:  # nothing on the front is dominated where the front was chosen
        p = chosen_on(next(v for v in res["variants"] if v["id"] == vid))
        assert not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in map(chosen_on, res["variants"]))
    assert (out / "report.md").is_file() and (out / "pareto.png").is_file() and (out / "scores.safetensors").is_file()
    saved = [v for v in res["variants"] if v["path"]]
    assert {v["id"] for v in saved} == set(res["pareto"])


def test_saved_variants_reload_with_plain_transformers(default_run):
    from transformers import AutoModelForImageClassification

    out, res = default_run
    base = load_model("default")
    data = load_data("default", base.preprocess, calib_samples=8, num_labels=base.num_labels)
    for v in [v for v in res["variants"] if v["path"]]:
        folder = out / v["path"]
        assert (folder / "model.safetensors").is_file() and (folder / "mixmatch.json").is_file()
        assert (folder / "preprocessor_config.json").is_file() and (folder / "README.md").is_file()
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        layers = list_prunable(model)
        sparsity, per_layer = measure_sparsity(model, layers)
        assert sparsity == pytest.approx(v["sparsity"], abs=1e-12)
        assert per_layer == pytest.approx(v["layers"], abs=1e-12)
        acc = evaluate(model, data.eval, batch_size=64)
        assert acc["accuracy"] == pytest.approx(v["accuracy"], abs=1e-12)
        recipe = json.loads((folder / "mixmatch.json").read_text())
        assert recipe["signal"] == v["signal"] and recipe["strategy"] == v["strategy"]
        assert recipe["base_model"] == "default" and recipe["seed"] == 0 and recipe["ranges"]


def test_recipe_rederives_the_masks(default_run):
    """mixmatch.json + the base model + the calibration recipe give back the same weights."""
    from safetensors.torch import load_file

    from hf_mixmatch.masks import apply_sparsities
    from hf_mixmatch.signals import compute_scores

    out, res = default_run
    v = next(v for v in res["variants"] if v["path"] and v["signal"] != "magnitude") if any(
        v["path"] and v["signal"] != "magnitude" for v in res["variants"]) else next(v for v in res["variants"] if v["path"])
    recipe = json.loads((out / v["path"] / "mixmatch.json").read_text())
    base = load_model(recipe["base_model"])
    data = load_data("default", base.preprocess, calib_samples=recipe["calib_samples"], seed=recipe["seed"],
                     calib_split=recipe["calib_split"], eval_split=recipe["eval_split"])
    layers = list_prunable(base.model)
    scores = compute_scores(base.model, layers, data.calib, signals=(recipe["signal"],),
                            batch_size=recipe["batch_size"], progress=False)
    apply_sparsities(base.model, layers, recipe["target_layers"], scores[recipe["signal"]])
    saved = load_file(str(out / v["path"] / "model.safetensors"))
    for layer in layers:
        assert torch.equal(saved[layer.param_name] == 0, base.model.get_submodule(layer.name).weight == 0)


def _fails(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("hf-mixmatch: error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def setup(tmp_path):
    data = make_image_dataset(tmp_path / "data")
    model = save_tiny_transformers(tmp_path / "model", "resnet")
    return tmp_path, str(model), str(data)


def test_bad_model(setup, capsys):
    tmp, model, data = setup
    _fails(capsys, ["prune", "nobody/nothing", "--dataset", data, "--output-dir", str(tmp / "o")], "could not be fetched")
    _fails(capsys, ["prune", str(tmp / "missing-dir"), "--dataset", data, "--output-dir", str(tmp / "o")],
           "does not exist")
    assert not (tmp / "o" / "results.json").exists()


def test_not_an_image_classifier(setup, capsys):
    from transformers import BertConfig, BertModel

    tmp, model, data = setup
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         vocab_size=50)).save_pretrained(tmp / "bert")
    _fails(capsys, ["prune", str(tmp / "bert"), "--dataset", data, "--output-dir", str(tmp / "o")],
           "not an image classifier")


def test_dataset_without_image_column(setup, capsys):
    import datasets

    tmp, model, data = setup
    (tmp / "txt").mkdir()
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet(str(tmp / "txt" / "train.parquet"))
    _fails(capsys, ["prune", model, "--dataset", str(tmp / "txt"), "--output-dir", str(tmp / "o")], "--image-column")


def test_label_count_mismatch(setup, capsys):
    tmp, model, _ = setup
    data = make_image_dataset(tmp / "d7", num_classes=7)
    _fails(capsys, ["prune", model, "--dataset", str(data), "--output-dir", str(tmp / "o")], "7 classes")
    assert not (tmp / "o" / "results.json").exists()


@pytest.mark.parametrize("flag", ["--calib-samples", "--eval-samples"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_sample_counts(setup, capsys, flag, value):
    tmp, model, data = setup
    _fails(capsys, ["prune", model, "--dataset", data, "--output-dir", str(tmp / "o"), flag, value], "must be > 0")


def test_empty_split(setup, capsys):
    import datasets
    from PIL import Image

    tmp, model, _ = setup
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))})
    img = Image.new("RGB", (8, 8))
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": [img] * 4, "label": [0, 1, 2, 3]}, features=feats),
        "test": datasets.Dataset.from_dict({"image": [], "label": []}, features=feats),
    }).save_to_disk(str(tmp / "empty"))
    _fails(capsys, ["prune", model, "--dataset", str(tmp / "empty"), "--output-dir", str(tmp / "o")], "empty")


def test_output_dir_errors(setup, capsys):
    tmp, model, data = setup
    (tmp / "afile").write_text("x")
    _fails(capsys, ["prune", model, "--dataset", data, "--output-dir", str(tmp / "afile" / "sub")], "cannot write")
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("x")
    _fails(capsys, ["prune", model, "--dataset", data, "--output-dir", str(tmp / "full")], "not written by hf-mixmatch")
    _fails(capsys, ["prune", model, "--dataset", data, "--output-dir", str(tmp / "full"), "--overwrite"],
           "not written by hf-mixmatch")
    assert (tmp / "full" / "keep.txt").read_text() == "x"


def test_unknown_strategy_and_signal(setup, capsys):
    tmp, model, data = setup
    _fails(capsys, ["prune", model, "--dataset", data, "--output-dir", str(tmp / "o"), "--strategies", "nope"],
           "choose from")
    _fails(capsys, ["prune", model, "--dataset", data, "--output-dir", str(tmp / "o"), "--signals", "taylor"],
           "choose from")


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--dataset", "--output-dir", "--calib-samples", "--eval-samples", "--eval-split", "--calib-split",
                "--batch-size", "--seed", "--ranges", "--save", "--overwrite", "--baselines", "--finetune-steps"):
        assert opt in text


def test_console_script_and_python_m_share_the_entry_that_exits_130_when_interrupted(monkeypatch):
    """The installed ``hf-mixmatch`` script runs :func:`cli.entry` (as ``python -m`` does): an interrupted run
    leaves with ``os._exit(130)``, never by the SIGINT CPython re-raises after a Ctrl-C inside an import."""
    from importlib.metadata import entry_points

    from hf_mixmatch import cli

    (script,) = entry_points(group="console_scripts", name="hf-mixmatch")
    assert script.value == "hf_mixmatch.cli:entry"
    assert "entry()" in (Path(cli.__file__).parent / "__main__.py").read_text()

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    for code, caught in ((130, Exited), (0, SystemExit), (2, SystemExit)):
        monkeypatch.setattr(cli, "main", lambda code=code: code)
        with pytest.raises(caught) as exc:
            cli.entry()
        assert exc.value.args[0] == code if caught is Exited else exc.value.code == code
