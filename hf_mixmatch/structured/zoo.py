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
_HF_VIT = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=64)
_HF_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)

CASES: list[ZooCase] = [
    # timm's own test models
    *[_t(n, n, size=s) for n, s in (
        ("test_byobnet", 32), ("test_convnext", 32), ("test_convnext2", 32), ("test_convnext3", 32),
        ("test_efficientnet", 32), ("test_efficientnet_evos", 32), ("test_efficientnet_gn", 32),
        ("test_efficientnet_ln", 32), ("test_mambaout", 32), ("test_nfnet", 32), ("test_resnet", 32),
        ("test_vit", 32), ("test_vit2", 32), ("test_vit4", 32))],
    _t("test_vit3", "test_vit3", img_size=32),
    _t("test_vit_relpos", "test_vit_relpos", img_size=32, slow=True),
    _t("test_coatnet", "test_coatnet", img_size=64, size=64, slow=True),
    _t("test_maxvit", "test_maxvit", img_size=64, size=64, slow=True),
    # real timm families at reduced size
    _t("resnet", "resnet18", channels=(8, 16, 24, 32)),
    _t("resnext", "resnext26ts", size=32, slow=True),
    _t("regnet", "regnetx_002", slow=True),
    _t("efficientnet", "tinynet_e"),
    _t("lcnet", "lcnet_050"),
    _t("mnasnet", "mnasnet_small"),
    _t("mobilenetv3", "mobilenetv3_small_050"),
    _t("mobilenetv2", "mobilenetv2_050"),
    _t("ghostnet", "ghostnet_050", slow=True),
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
    _t("mobilevitv2", "mobilevitv2_050", size=64, slow=True),
    _t("edgenext", "edgenext_xx_small", size=64),
    _t("fastvit", "fastvit_t8", size=64, slow=True),
    _t("nfnet", "nf_resnet26"),
    _t("dpn", "dpn48b", slow=True),
    _t("densenet", "densenet121", growth_rate=8, block_config=(2, 2, 2, 2)),
    _t("repvgg", "repvgg_a0"),
    _t("pvt_v2", "pvt_v2_b0", size=64),
    _t("poolformer", "poolformer_s12", size=32),
    _t("efficientvit", "efficientvit_b0", size=64, slow=True),
    _t("mambaout", "mambaout_femto", size=32, slow=True),
    _t("cait", "cait_xxs24_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3),
    _t("rexnet", "rexnet_100", slow=True),
    _t("xcit", "xcit_nano_12_p16_224", img_size=32, depth=2),
    _t("pit", "pit_ti_224", img_size=64, size=64),
    _t("twins", "twins_pcpvt_small", depths=(1, 1, 1, 1), size=64),
    _t("seresnet", "seresnet18"),
    _t("res2net", "res2net50_14w_8s", slow=True),
    _t("resnetv2", "resnetv2_50", layers=(1, 1, 1, 1)),
    _t("convmixer", "convmixer_768_32", slow=True),
    _t("hgnetv2", "hgnetv2_b0"),
    _t("inception_next", "inception_next_atto"),
    _t("repghost", "repghostnet_050"),
    _t("coat", "coat_lite_tiny", img_size=64, size=64, slow=True),
    _t("volo", "volo_d1_224", img_size=64, size=64, slow=True),
    _t("davit", "davit_tiny", depths=(1, 1, 1, 1), size=64, slow=True),
    _t("gcvit", "gcvit_xxtiny", img_size=64, size=64, slow=True),
    _t("visformer", "visformer_tiny", img_size=64, size=64, slow=True),
    _t("cspnet", "cspresnet50", slow=True),
    _t("vovnet", "ese_vovnet19b_dw"),
    _t("hrnet", "hrnet_w18_small", size=64),
    _t("dla", "dla34"),
    _t("sequencer", "sequencer2d_s", img_size=64, size=64, slow=True),
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
    # not built: dinat (needs the natten package), imagegpt (reads token ids, not pixels), timm_wrapper (wraps a
    # timm checkpoint from the Hub), siglip2 and shieldgemma2 (need extra inputs besides pixel_values)
    _hf("hf_bit", "bit", embedding_size=16, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_groups=4),
    _hf("hf_clip", "clip", vision_config=dict(image_size=32, patch_size=8, **_HF_VIT), text_config=_HF_TEXT),
    _hf("hf_siglip", "siglip", vision_config=dict(image_size=32, patch_size=8, **_HF_VIT), text_config=_HF_TEXT),
    _hf("hf_metaclip_2", "metaclip_2", vision_config=dict(image_size=32, patch_size=8, **_HF_VIT),
        text_config=_HF_TEXT),
    _hf("hf_dinov2_registers", "dinov2_with_registers", image_size=32, patch_size=8, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=3, mlp_ratio=2),
    _hf("hf_donut_swin", "donut-swin", image_size=32, patch_size=2, window_size=4, embed_dim=24, depths=[1, 1],
        num_heads=[2, 4]),
    _hf("hf_hgnet_v2", "hgnet_v2", stem_channels=[3, 8, 16], stage_in_channels=[16, 16, 32, 48],
        stage_mid_channels=[8, 16, 16, 32], stage_out_channels=[16, 32, 48, 64], stage_num_blocks=[1, 1, 1, 1],
        hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1]),
    _hf("hf_hiera", "hiera", image_size=[64, 64], embed_dim=16, num_heads=[1, 2, 4, 8], depths=[1, 1, 1, 1], size=64),
    _hf("hf_ijepa", "ijepa", image_size=32, patch_size=8, **_HF_VIT),
    _hf("hf_vit_msn", "vit_msn", image_size=32, patch_size=8, **_HF_VIT),
    _hf("hf_mobilenet_v1", "mobilenet_v1", depth_multiplier=0.25, image_size=32),
    _hf("hf_mobilevitv2", "mobilevitv2", image_size=64, width_multiplier=0.5, size=64, slow=True),
    _hf("hf_pp_lcnet", "pp_lcnet", scale=0.25),
    _hf("hf_pvt", "pvt", image_size=64, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
        num_attention_heads=[1, 2, 2, 4], size=64),
    _hf("hf_swiftformer", "swiftformer", depths=[1, 1, 1, 1], embed_dims=[16, 24, 32, 48], size=64),
    _hf("hf_textnet", "textnet"),
    _hf("hf_cvt", "cvt", embed_dim=[16, 32, 48], num_heads=[1, 2, 3], depth=[1, 2, 3], size=64)  # depth[i] > i: transformers indexes drop-path rates by stage,
]


TIMEOUT = 20.0  # seconds of group discovery per case in the zoo test and table

# Expected "not supported" outcomes (case -> part of the one-line reason). A case bounded by TIMEOUT may also
# succeed on a faster machine; every other case must succeed.
UNSUPPORTED = {
    "hf_mobilevitv2": "took over",
    "visformer": "took over",
    "eva": "no group can be removed without breaking the model",
    "nfnet": "no prunable group",
    "mambaout": "no group can be removed without breaking the model",
    "hf_convnextv2": "no group can be removed without breaking the model",
    "hf_bit": "normalises across the channels",
}
# outcomes that may differ elsewhere: the time bound on a faster machine; PP-LCNet once models.logits reads
# its output
MAY_SUCCEED = {name for name, why in UNSUPPORTED.items() if why == "took over"}


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
        if case.model_class:  # as in a saved checkpoint's config.json, which names its class
            config.architectures = [case.model_class]
            model = getattr(transformers, case.model_class)(config)
        else:
            model = transformers.AutoModelForImageClassification.from_config(config)
    with torch.no_grad():  # random init leaves some heads / scales at 0 or 1: give every weight its own value
        gen = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    example = torch.randn(batch, 3, case.size, case.size, generator=torch.Generator().manual_seed(seed))
    return model.eval(), example
