"""The structured-pruning zoo: architectures (as data) built offline with random weights at reduced size.

Each case names a library, an architecture and the constructor arguments that make it small; ``build_case``
returns the model and an example batch. The zoo test (``tests/test_structured_zoo.py``) and the table script
(``scripts/structured_zoo.py``) both walk :data:`CASES` through :func:`hf_mixmatch.structured.try_structured`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ZooCase:
    """One architecture: ``library`` is ``timm`` or ``transformers``; ``kwargs`` make it small."""

    name: str
    library: str
    arch: str
    kwargs: dict = field(default_factory=dict)
    size: int = 32  # input height = width
    slow: bool = False
    model_class: str = ""  # transformers: the class to build when the auto mapping lists several


def _t(name, arch, size=32, slow=False, **kw):
    return ZooCase(name, "timm", arch, kw, size, slow)


def _hf(name, model_type, size=32, slow=False, model_class="", **kw):
    return ZooCase(name, "transformers", model_type, kw, size, slow, model_class)


_VIT = dict(embed_dim=48, depth=2, num_heads=3)

CASES: list[ZooCase] = [
    # timm's own test models
    *[_t(n, n, size=s) for n, s in (
        ("test_byobnet", 32), ("test_convnext", 32), ("test_convnext2", 32), ("test_convnext3", 32),
        ("test_efficientnet", 32), ("test_efficientnet_evos", 32), ("test_efficientnet_gn", 32),
        ("test_efficientnet_ln", 32), ("test_mambaout", 32), ("test_nfnet", 32), ("test_resnet", 32),
        ("test_vit", 32), ("test_vit2", 32), ("test_vit4", 32))],
    _t("test_vit3", "test_vit3", img_size=32),
    _t("test_vit_relpos", "test_vit_relpos", img_size=32),
    _t("test_coatnet", "test_coatnet", img_size=64, size=64, slow=True),
    _t("test_maxvit", "test_maxvit", img_size=64, size=64, slow=True),
    # real timm families at reduced size
    _t("resnet", "resnet18", channels=(8, 16, 24, 32)),
    _t("resnext", "resnext26ts", size=32),
    _t("regnet", "regnetx_002"),
    _t("efficientnet", "tinynet_e"),
    _t("lcnet", "lcnet_050"),
    _t("mnasnet", "mnasnet_small"),
    _t("mobilenetv3", "mobilenetv3_small_050"),
    _t("mobilenetv2", "mobilenetv2_050"),
    _t("ghostnet", "ghostnet_050"),
    _t("convnext", "convnext_atto", dims=(16, 32, 48, 64), depths=(1, 1, 1, 1)),
    _t("vit", "vit_tiny_patch16_224", img_size=32, patch_size=8, **_VIT),
    _t("deit_distilled", "deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, **_VIT),
    _t("eva", "eva02_tiny_patch14_224", img_size=28, patch_size=7, embed_dim=48, depth=2, num_heads=3, size=28),
    _t("beit", "beit_base_patch16_224", img_size=32, patch_size=8, **_VIT),
    _t("swin", "swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=24,
       depths=(1, 1), num_heads=(2, 4)),
    _t("swinv2", "swinv2_tiny_window8_256", img_size=32, patch_size=2, window_size=4, embed_dim=24,
       depths=(1, 1), num_heads=(2, 4)),
    _t("mixer", "mixer_s32_224", img_size=64, size=64, slow=True),  # timm fixes its width and depth
    _t("levit", "levit_128s", img_size=64, size=64, slow=True),
    _t("mobilevit", "mobilevit_xxs", size=64),
    _t("mobilevitv2", "mobilevitv2_050", size=64),
    _t("edgenext", "edgenext_xx_small", size=64),
    _t("fastvit", "fastvit_t8", size=64, slow=True),
    _t("nfnet", "nf_resnet26"),
    _t("dpn", "dpn48b"),
    _t("densenet", "densenet121", growth_rate=8, block_config=(2, 2, 2, 2)),
    _t("repvgg", "repvgg_a0"),
    _t("pvt_v2", "pvt_v2_b0", size=64),
    _t("poolformer", "poolformer_s12", size=32),
    _t("efficientvit", "efficientvit_b0", size=64, slow=True),
    _t("mambaout", "mambaout_femto", size=32),
    _t("cait", "cait_xxs24_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3),
    # transformers image classifiers from tiny configs
    _hf("hf_vit", "vit", image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=64),
    _hf("hf_deit", "deit", model_class="DeiTForImageClassification", image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=3, intermediate_size=64),
    _hf("hf_beit", "beit", image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=3, intermediate_size=64),
    _hf("hf_data2vec_vision", "data2vec-vision", image_size=32, patch_size=8, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=3, intermediate_size=64),
    _hf("hf_dinov2", "dinov2", image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=3, mlp_ratio=2),
    _hf("hf_swin", "swin", image_size=32, patch_size=2, window_size=4, embed_dim=24, depths=[1, 1],
        num_heads=[2, 4]),
    _hf("hf_swinv2", "swinv2", image_size=32, patch_size=2, window_size=4, embed_dim=24, depths=[1, 1],
        num_heads=[2, 4]),
    _hf("hf_convnext", "convnext", hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1]),
    _hf("hf_convnextv2", "convnextv2", hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1]),
    _hf("hf_resnet", "resnet", embedding_size=16, hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1]),
    _hf("hf_regnet", "regnet", embedding_size=16, hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1],
        groups_width=8),
    _hf("hf_mobilenet_v2", "mobilenet_v2", depth_multiplier=0.25, image_size=32),
    _hf("hf_mobilevit", "mobilevit", image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 64],
        size=64),
    _hf("hf_efficientnet", "efficientnet", width_coefficient=0.25, depth_coefficient=0.25, image_size=32,
        hidden_dim=320),
    _hf("hf_pvt_v2", "pvt_v2", hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4],
        size=64),
    _hf("hf_segformer", "segformer", hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
        num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=32, size=64),
    _hf("hf_levit", "levit", model_class="LevitForImageClassification", image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[2, 3, 4],
        depths=[1, 1, 1], key_dim=[8, 8, 8], size=64, slow=True),
    _hf("hf_poolformer", "poolformer", hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1]),
    _hf("hf_focalnet", "focalnet", image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], slow=True),
    _hf("hf_cvt", "cvt", embed_dim=[16, 32, 48], num_heads=[1, 2, 3], depth=[1, 2, 3], size=64)  # depth[i] > i: transformers indexes drop-path rates by stage,
]


def build_case(case: ZooCase, *, batch: int = 2, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The case's model (eval mode, random weights, 10 classes) and a seeded example batch.

    Every parameter gets seeded noise on top of its initialisation, so zero-initialised heads and
    layer scales do not make outputs constant (a check of constant outputs proves nothing)."""
    torch.manual_seed(seed)
    if case.library == "timm":
        from .reference import timm_model

        model = timm_model(case.arch, num_classes=10, **case.kwargs)
    else:
        import transformers

        config = transformers.AutoConfig.for_model(case.arch, num_labels=10, **case.kwargs)
        if case.model_class:
            model = getattr(transformers, case.model_class)(config)
        else:
            model = transformers.AutoModelForImageClassification.from_config(config)
    with torch.no_grad():  # random init leaves some heads / scales at 0 or 1: give every weight its own value
        gen = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    example = torch.randn(batch, 3, case.size, case.size, generator=torch.Generator().manual_seed(seed))
    return model.eval(), example
