"""The model's own preprocessing, on real non-square photos: every image-classification processor transformers
can build offline and timm's eval transform for several families (end to end: test_preprocessing_e2e.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_mixmatch.errors import ModelLoadError

ATOL = 1e-5

# model types of the image-classification auto mapping whose processors are left out, and why
EXCLUDED = {
    "imagegpt": "colour-quantises into token ids (needs a clusters table), no pixel tensor",
    "siglip2": "patchified pixel_values + attention mask, not an (N, C, H, W) batch (refused, see below)",
}


def photos():
    """scikit-learn's two 640x427 photos cut to several sizes and aspect ratios, one converted to grayscale."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    return [
        china,  # 640x427 (landscape)
        flower.transpose(Image.Transpose.ROTATE_90),  # 427x640 (portrait)
        flower.transpose(Image.Transpose.ROTATE_270).crop((40, 100, 340, 600)),  # 300x500
        china.crop((70, 200, 570, 320)),  # 500x120 (very wide)
        flower.crop((300, 150, 397, 211)).convert("L"),  # 97x61 grayscale
    ]


def _classification_processor_classes() -> tuple[list, dict]:
    """(class names to test, {model_type: why skipped}) walking transformers' auto mappings."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    names, skipped = [], {}
    for model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        mapping = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
        if not mapping:
            skipped[model_type] = "no image processor registered for this model type"
            continue
        if model_type in EXCLUDED:
            skipped[model_type] = EXCLUDED[model_type]
            continue
        # the class AutoImageProcessor (and so pipeline) picks: the fast torchvision one where it exists
        usable = [n for n in (mapping.get("torchvision"), mapping.get("pil"))
                  if n and hasattr(transformers, n) and not getattr(getattr(transformers, n), "is_dummy", False)]
        if not usable:
            skipped[model_type] = "needs a package that is not a dependency"
        elif usable[0] not in names:
            names.append(usable[0])
    return names, skipped


PROCESSOR_NAMES, SKIPPED = _classification_processor_classes()


def _default_processor(name: str):
    import transformers

    cls = getattr(transformers, name)
    if name == "TimmWrapperImageProcessor":  # its only required argument: a timm pretrained_cfg
        import timm

        cfg = timm.create_model("resnet50", pretrained=False, layers=(1, 1, 1, 1)).pretrained_cfg
        return cls(pretrained_cfg=cfg)
    return cls()


def _save(processor, folder):
    if type(processor).__name__ == "TimmWrapperImageProcessor":  # its config lives in the model's config.json
        from transformers import TimmWrapperConfig

        TimmWrapperConfig(architecture="resnet50", pretrained_cfg=processor.data_config).save_pretrained(folder)
    else:
        processor.save_pretrained(folder)


def _own_output(processor, images) -> torch.Tensor:
    """What the library itself feeds the model: one image at a time, as pipeline("image-classification") does
    (it opens every image as RGB)."""
    return torch.cat([processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"] for im in images])


def test_the_walk_covers_the_mapping():
    # the walk is not empty and skips only what it says, for stated reasons
    assert len(PROCESSOR_NAMES) >= 20
    assert {"ConvNextImageProcessor", "MobileViTImageProcessor", "EfficientNetImageProcessor", "LevitImageProcessor",
            "BitImageProcessor", "TimmWrapperImageProcessor"} <= set(PROCESSOR_NAMES)
    assert all(reason for reason in SKIPPED.values())


@pytest.mark.parametrize("name", PROCESSOR_NAMES)
def test_transformers_processor_matches_its_own_output(name, tmp_path):
    from hf_mixmatch.adapters.transformers import processor_transform

    images = photos()
    processor = _default_processor(name)
    _save(processor, tmp_path)  # through a folder, as load_model reads it
    transform = processor_transform(tmp_path)
    theirs = [_own_output(processor, [im]) for im in images]
    for im, own in zip(images, theirs):  # image by image: always the processor's own numbers
        assert torch.allclose(transform([im]), own, atol=ATOL, rtol=0)
    if len({t.shape for t in theirs}) > 1:  # the output size follows the input's: no batch, a clear error
        with pytest.raises(ModelLoadError, match="cannot be batched"):
            transform(images)
        return
    ours, theirs = transform(images), torch.cat(theirs)
    assert ours.shape == theirs.shape and ours.shape[0] == len(images) and ours.dtype == torch.float32
    assert torch.allclose(ours, theirs, atol=ATOL, rtol=0), (ours - theirs).abs().max()
    assert transform.input_size == tuple(ours.shape[1:])
    assert transform.key == processor_transform(tmp_path).key  # stable


def test_mobilevit_channel_flip_and_crop_pct_are_respected(tmp_path):
    from transformers import ConvNextImageProcessor, MobileViTImageProcessor

    from hf_mixmatch.adapters.transformers import ProcessorTransform
    from hf_mixmatch.models import Preprocess

    images = photos()[:2]
    flipped = ProcessorTransform(MobileViTImageProcessor())(images)
    plain = ProcessorTransform(MobileViTImageProcessor(do_flip_channel_order=False))(images)
    assert torch.allclose(flipped, plain.flip(1), atol=ATOL) and not torch.allclose(flipped, plain, atol=1e-2)
    # ConvNeXt below 384 px: resize the short side to 224 / crop_pct, then crop; a square resize differs
    proc = ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)
    own = ProcessorTransform(proc)(images)
    square = Preprocess(size=(224, 224), resize=(256, 256), mean=proc.image_mean, std=proc.image_std,
                        interpolation="bicubic")(images)
    assert own.shape == square.shape and (own - square).abs().mean() > 0.02


def test_processors_without_an_image_batch_are_refused():
    from transformers import Siglip2ImageProcessor

    from hf_mixmatch.adapters.transformers import ProcessorTransform

    with pytest.raises(ModelLoadError, match=r"not an image batch \(N, C, H, W\)"):
        ProcessorTransform(Siglip2ImageProcessor())(photos()[:1])


TIMM_FAMILIES = {  # real pretrained_cfg (crop_pct, interpolation, mean/std) at a reduced size
    "resnet50": dict(layers=(1, 1, 1, 1)),
    "convnext_tiny": dict(depths=(1, 1, 1, 1)),
    "deit_small_patch16_224": dict(depth=1),
    "efficientnet_b0": dict(),
    "swin_tiny_patch4_window7_224": dict(depths=(1, 1, 1, 1)),
    "vit_base_patch16_224": dict(depth=1),
    "mobilenetv3_large_100": dict(),
    "levit_128s": dict(),
}


def _timm_reference(model, images) -> torch.Tensor:
    from timm.data import create_transform, resolve_data_config

    t = create_transform(**resolve_data_config(model=model))
    return torch.stack([t(im.convert("RGB")) for im in images])


@pytest.mark.parametrize("arch", sorted(TIMM_FAMILIES))
def test_timm_eval_transform_matches(arch):
    import timm

    from hf_mixmatch.adapters import get_adapter

    model = timm.create_model(arch, pretrained=False, **TIMM_FAMILIES[arch])
    images = photos()
    transform = get_adapter("timm").transform(model, None)
    ours, theirs = transform(images), _timm_reference(model, images)
    assert ours.shape == (len(images), *transform.input_size) and torch.allclose(ours, theirs, atol=ATOL, rtol=0)
    assert transform.input_size == tuple(model.pretrained_cfg["input_size"])


def test_folder_without_processor_falls_back_with_a_warning(tmp_path):
    from conftest import tiny_transformers

    from hf_mixmatch.models import load_model

    tiny_transformers("vit").save_pretrained(tmp_path / "v")
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        loaded = load_model(tmp_path / "v")
    assert loaded.preprocess.input_size == (3, 16, 16)
    x = loaded.preprocess(photos()[3:])
    assert x.shape == (2, 3, 16, 16) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_manual_preprocess_is_a_transform():
    from hf_mixmatch.models import Preprocess, Transform

    pre = Preprocess(size=(8, 12), mean=(0.5,), std=(0.25,), channels=1, interpolation="nearest")
    x = pre(photos())
    assert isinstance(pre, Transform) and x.shape == (5, 1, 8, 12) and pre.input_size == (1, 8, 12)
    gray = np.asarray(photos()[4].resize((12, 8), 0), dtype=np.float32) / 255.0
    assert torch.allclose(x[4, 0], (torch.from_numpy(gray) - 0.5) / 0.25, atol=1e-6)
    assert pre.key != Preprocess(size=(8, 12), mean=(0.5,), std=(0.5,), channels=1).key
