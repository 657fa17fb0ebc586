"""Labels line up with the model's classes, or the run stops with one line naming the fix."""

import json

import datasets
import numpy as np
import pytest
from conftest import make_image_dataset

from hf_mixmatch.data import load_data
from hf_mixmatch.errors import DatasetError
from hf_mixmatch.labels import align_labels, check_labels, is_generic, load_label_map
from hf_mixmatch.models import Preprocess

PRE = Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels=3)
NAMES = ["cat", "dog", "bird", "fish"]


def _dataset(path, labels_by_split, feature):
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    feats = datasets.Features({"image": datasets.Image(), "label": feature})
    for split, labels in labels_by_split.items():
        imgs = [Image.fromarray(np.full((6, 9, 3), 40 * i % 256, dtype=np.uint8)) for i in range(len(labels))]
        datasets.Dataset.from_dict({"image": imgs, "label": labels}, features=feats).to_parquet(
            str(path / f"{split}.parquet"))
    return path


@pytest.mark.parametrize("names, generic", [
    (None, True), ([], True), (["LABEL_0", "LABEL_1"], True), (["0", "1", "2"], True), (["label_0", "label_1"], True),
    (["LABEL_1", "LABEL_0"], False), (["cat", "dog"], False), (["0", "2"], False),
])
def test_generic_names(names, generic):
    assert is_generic(names) is generic


def test_same_names_same_order_is_identity():
    a = align_labels(NAMES, dict(enumerate(NAMES)), 4)
    assert a.how == "identity" and not a.remapped and a.map_values(np.array([3, 0])).tolist() == [3, 0]


def test_same_names_other_order_remaps_by_name_and_says_so():
    model = {0: "Dog", 1: "fish", 2: "cat", 3: "bird"}  # case and order differ
    with pytest.warns(UserWarning, match="remapped .* by name"):
        a = align_labels(NAMES, model, 4)
    assert a.how == "by_name" and a.remapped
    assert a.map_values(np.arange(4)).tolist() == [2, 0, 3, 1]
    assert a.to_dict()["mapping"] == {"cat": 2, "dog": 0, "bird": 3, "fish": 1}


def test_dataset_subset_of_model_classes_maps_by_name():
    with pytest.warns(UserWarning, match="2 of the model's 4 classes"):
        a = align_labels(["fish", "cat"], dict(enumerate(NAMES)), 4)
    assert a.map_values(np.array([0, 1, 1])).tolist() == [3, 0, 0]


def test_different_names_stop_with_label_map_hint():
    with pytest.raises(DatasetError, match=r"--label-map FILE") as exc:
        align_labels(["cat", "dog", "horse", "fish"], dict(enumerate(NAMES)), 4)
    assert "horse" in str(exc.value) and "\n" not in str(exc.value)


def test_generic_model_names_go_by_index_with_a_warning():
    with pytest.warns(UserWarning, match="by index|class i"):
        a = align_labels(NAMES, {i: f"LABEL_{i}" for i in range(4)}, 4)
    assert a.how == "by_index" and a.map_values(np.array([2])).tolist() == [2]
    assert align_labels(["0", "1"], dict(enumerate(["x", "y"])), 2).how == "by_index"  # generic dataset side


def test_string_labels_go_through_the_name_map():
    a = align_labels(None, dict(enumerate(NAMES)), 4, string_labels=True)
    assert a.map_values(np.array(["fish", "Cat", "horse"], dtype=object)).tolist() == [3, 0, -1]
    with pytest.raises(DatasetError, match="--label-map"):
        align_labels(None, {0: "LABEL_0", 1: "LABEL_1"}, 2, string_labels=True)


def test_label_map_by_name_and_index(tmp_path):
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"cat": "fish", "dog": 0, "2": 1, "fish": "2"}))
    a = align_labels(NAMES, {0: "x", 1: "y", 2: "z", 3: "fish"}, 4, label_map=load_label_map(f))
    assert a.how == "label_map" and a.map_values(np.arange(4)).tolist() == [3, 0, 1, 2]
    for text, match in (("[1, 2]", "JSON object"), ("{", "not valid JSON"), ('{"cat": "nope"}', "neither")):
        f.write_text(text)
        with pytest.raises(DatasetError, match=match):
            align_labels(NAMES, dict(enumerate(NAMES)), 4, label_map=load_label_map(f))
    with pytest.raises(DatasetError, match="not found"):
        load_label_map(tmp_path / "missing.json")


def test_check_labels_names_split_values_and_count():
    check_labels(np.array([0, 3, 1]), np.array([0, 3, 1]), 4, "test")
    with pytest.raises(DatasetError, match=r"split 'validation' has 3 rows .* 0\.\.3 \(values \[-1, 7\]\)"):
        check_labels(np.array([0, 7, -1, 7]), np.array([0, 7, -1, 7]), 4, "validation")


def test_out_of_range_labels_in_eval_split_stop_the_run(tmp_path):
    path = _dataset(tmp_path / "d", {"train": [0, 1, 2, 3] * 3, "test": [0, 1, 5, 2, 9, 5]}, datasets.Value("int64"))
    with pytest.raises(DatasetError, match=r"split 'test' has 3 rows .* \(values \[5, 9\]\)"):
        load_data(path, PRE, calib_samples=4, num_labels=4, id2label={}, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.arrow"))  # checked before anything was decoded


def test_out_of_range_labels_in_training_split_stop_the_run(tmp_path):
    path = _dataset(tmp_path / "d", {"train": [0, 1, -1, 3] * 3, "test": [0, 1, 2, 3]}, datasets.Value("int64"))
    with pytest.raises(DatasetError, match=r"split 'train' has \d+ rows .*-1"):
        load_data(path, PRE, calib_samples=12, num_labels=4)


def test_permuted_class_names_are_remapped_end_to_end(tmp_path):
    path = _dataset(tmp_path / "d", {"train": [0, 1, 2, 3] * 2, "test": [0, 1, 2, 3, 3]},
                    datasets.ClassLabel(names=NAMES))
    model_names = {0: "fish", 1: "bird", 2: "dog", 3: "cat"}
    with pytest.warns(UserWarning, match="remapped"):
        data = load_data(path, PRE, calib_samples=8, num_labels=4, id2label=model_names)
    _, y = data.eval.get_batch(range(len(data.eval)))
    assert y.tolist() == [3, 2, 1, 0, 0]
    assert sorted(data.calib.tensors[1].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert data.labels["how"] == "by_name" and data.labels["mapping"]["cat"] == 3


def test_string_label_column_end_to_end(tmp_path):
    path = _dataset(tmp_path / "d", {"train": ["dog", "cat"] * 3, "test": ["cat", "fish", "dog"]},
                    datasets.Value("string"))
    data = load_data(path, PRE, calib_samples=4, num_labels=4, id2label=dict(enumerate(NAMES)))
    assert data.eval.get_batch([0, 1, 2])[1].tolist() == [0, 3, 1]
    with pytest.raises(DatasetError, match=r"split 'test' has 1 rows .*'horse'"):
        path2 = _dataset(tmp_path / "e", {"train": ["dog", "cat"] * 3, "test": ["cat", "horse"]},
                         datasets.Value("string"))
        load_data(path2, PRE, calib_samples=4, num_labels=4, id2label=dict(enumerate(NAMES)))


def test_label_map_file_through_load_data(tmp_path):
    path = make_image_dataset(tmp_path / "d", n_train=8, n_test=8)  # classes c0..c3
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"c0": "b", "c1": "a", "c2": "d", "c3": "c"}))
    model = dict(enumerate("abcd"))
    with pytest.raises(DatasetError, match="--label-map"):
        load_data(path, PRE, calib_samples=4, num_labels=4, id2label=model)
    data = load_data(path, PRE, calib_samples=4, num_labels=4, id2label=model, label_map=str(f))
    assert data.eval.get_batch(range(4))[1].tolist() == [1, 0, 3, 2]
    assert data.labels["how"] == "label_map"


def test_pipeline_records_the_remap_in_results(tmp_path, image_dataset):
    from conftest import tiny_transformers

    from hf_mixmatch.models import load_model
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    model = tiny_transformers("resnet")
    model.config.id2label = {0: "c3", 1: "c2", 2: "c1", 3: "c0"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(tmp_path / "m")
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        tmp_path / "m")
    cfg = PruneConfig(model=str(tmp_path / "m"), dataset=str(image_dataset), output_dir=str(tmp_path / "run"),
                      calib_samples=8, signals=("magnitude",), strategies=("balanced",), save="pareto", progress=False)
    with pytest.warns(UserWarning, match="remapped"):
        res = run_mixmatch(cfg, loaded=load_model(tmp_path / "m"))
    assert res.results["labels"]["how"] == "by_name"
    assert res.results["labels"]["mapping"] == {"c0": 3, "c1": 2, "c2": 1, "c3": 0}
    # the summary, the report and every saved card say so
    from hf_mixmatch.cli import summary

    needle = "remapped to the model's (by_name): c0→3, c1→2, c2→1, c3→0"
    assert needle in summary(res.results, tmp_path / "run")
    assert needle in (tmp_path / "run" / "report.md").read_text()
    cards = [(tmp_path / "run" / v["path"] / "README.md").read_text() for v in res.pareto]
    assert cards and all("remapped to the model's (by_name)" in c for c in cards)
    # and `verify` measures the claims the same way (labels matched by name), so they hold
    from hf_mixmatch.verification import verify

    report = verify(tmp_path / "run" / res.pareto[0]["path"], str(image_dataset), tolerance=1e-9)
    assert report.ok and report.measured_accuracy == pytest.approx(res.pareto[0]["accuracy"], abs=1e-12)
