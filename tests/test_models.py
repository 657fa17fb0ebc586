import pytest
import torch
from conftest import tiny_transformers
from torch import nn

from hf_mixmatch.errors import ConfigError, ModelLoadError
from hf_mixmatch.models import Preprocess, load_model, logits


def test_transformers_dir(tiny_vit_dir):
    lm = load_model(tiny_vit_dir)
    assert lm.library == "transformers" and lm.num_labels == 4
    assert lm.preprocess.input_size == (3, 16, 16) and lm.preprocess.to_dict()["image_mean"] == [0.5, 0.5, 0.5]
    assert logits(lm.model, torch.zeros(2, 3, 16, 16)).shape == (2, 4)


def test_timm_local_dir(tiny_timm_dir):
    lm = load_model(tiny_timm_dir)
    assert lm.library == "timm" and lm.num_labels == 4
    assert lm.preprocess.input_size == (3, 16, 16)
    assert logits(lm.model, torch.zeros(1, 3, 16, 16)).shape == (1, 4)


def test_save_pretrained_roundtrip_with_plain_libraries(tmp_path, tiny_vit_dir, tiny_timm_dir):
    import timm
    from transformers import AutoModelForImageClassification

    lm = load_model(tiny_vit_dir)
    lm.save_pretrained(tmp_path / "v")
    back = AutoModelForImageClassification.from_pretrained(tmp_path / "v")
    assert all(torch.equal(a, b) for a, b in zip(lm.model.state_dict().values(), back.state_dict().values()))
    assert (tmp_path / "v" / "preprocessor_config.json").is_file()
    tm = load_model(tiny_timm_dir)
    tm.save_pretrained(tmp_path / "t")
    back = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(tm.model.state_dict().values(), back.state_dict().values()))


def test_nn_module_needs_preprocess():
    model = tiny_transformers("resnet")
    with pytest.raises(ConfigError, match="preprocess"):
        load_model(model)
    lm = load_model(model, preprocess=Preprocess(size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3))
    assert lm.num_labels == 4
    seq = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    with pytest.raises(ConfigError, match="num_labels"):
        load_model(seq, preprocess={"size": (4, 4), "mean": (0,) * 3, "std": (1,) * 3})
    assert load_model(seq, preprocess={"size": (4, 4), "mean": (0,) * 3, "std": (1,) * 3}, num_labels=5).library == "torch"


def test_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="could not be fetched|not found"):
        load_model("no-such-org/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(tmp_path / "f.txt")


def test_not_an_image_classifier(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         vocab_size=50)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="not an image classifier"):
        load_model(tmp_path / "bert")


def test_embedded_default_reads_size_from_the_image_processor():
    # ResNet configs have no image_size: the size must come from preprocessor_config.json (a SizeDict in
    # transformers >= 5), not from a 224 fallback
    import json

    from hf_mixmatch.models import DEFAULT_MODEL_DIR

    cfg = json.loads((DEFAULT_MODEL_DIR / "preprocessor_config.json").read_text())
    lm = load_model("default")
    assert lm.preprocess.input_size == (3, cfg["size"]["height"], cfg["size"]["width"]) == (3, 32, 32)
    own = lm.preprocess.to_dict()
    assert own["image_mean"] == cfg["image_mean"] and own["image_std"] == cfg["image_std"]
    assert lm.library == "transformers" and lm.num_labels == 10
