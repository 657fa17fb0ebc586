"""The zoo as data: every image classifier the suite builds offline, from tiny configs and random weights.

Three groups:
- ``TRANSFORMERS``: one entry per model type of transformers' image-classification auto mapping (every class
  of a type with several, e.g. DeiT and DeiT-with-teacher), with the config overrides that make it tiny;
  ``TRANSFORMERS_SKIPPED`` lists the types that cannot be built or fed an image tensor, and why.
- ``TIMM_TEST``: timm's own ``test_*`` models (already tiny).
- ``TIMM``: real timm families at reduced size (kwargs shrink depth/width where the constructor allows).

``ROLE_TABLE`` is what each case's prunable inventory must hold: ``{role: count}`` for every role of
``KEY_ROLES`` (a key role it does not name: none). ``names`` pins layers: ``{regex on the layer name: role}``,
at least one layer matches and every matching layer has that role. ``never``: regexes no prunable layer
name may match (position/bias tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field

NUM_LABELS = 5


@dataclass(frozen=True)
class ZooCase:
    id: str
    library: str  # "transformers" | "timm"
    arch: str  # transformers class name, timm model name, or a timm class path ("timm.models.x.Class")
    kwargs: dict = field(default_factory=dict)  # config overrides (transformers) / create_model kwargs (timm)
    size: int = 32  # input resolution
    names: dict = field(default_factory=dict)
    never: tuple = ()
    slow: bool = False


VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
           patch_size=8)
SWIN = dict(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)
CLIP_TEXT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
CLIP_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                   patch_size=8)


def _t(cls: str, kwargs: dict, *, size: int = 32, names: dict | None = None, never: tuple = (),
       slow: bool = False, id: str | None = None) -> ZooCase:
    return ZooCase(id=id or cls.replace("ForImageClassification", "").lower(), library="transformers", arch=cls,
                   kwargs=kwargs, size=size, names=names or {}, never=never, slow=slow)


TRANSFORMERS: tuple[ZooCase, ...] = (
    _t("BeitForImageClassification", {**VIT, "use_relative_position_bias": True}),
    _t("BitForImageClassification", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                         num_groups=4)),
    _t("CLIPForImageClassification", dict(text_config=CLIP_TEXT, vision_config=CLIP_VISION),
       names={r"self_attn\.(q|k|v)_proj$": "attn_qkv", r"self_attn\.out_proj$": "attn_proj",
              r"embeddings\.patch_embedding$": "patch_embed"}),
    _t("ConvNextForImageClassification", dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
    _t("ConvNextV2ForImageClassification", dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
    _t("CvtForImageClassification", dict(embed_dim=[8, 16, 32], num_heads=[1, 1, 2], depth=[1, 2, 3],
                                         mlp_ratio=[2.0, 2.0, 2.0])),
    _t("Data2VecVisionForImageClassification", {**VIT, "use_relative_position_bias": True}),
    _t("DeiTForImageClassification", VIT),
    _t("DeiTForImageClassificationWithTeacher", VIT, id="deit_with_teacher",
       names={r"^(cls_classifier|distillation_classifier)$": "classifier"}),
    _t("Dinov2ForImageClassification", {**VIT, "patch_size": 8}),
    _t("Dinov2WithRegistersForImageClassification", {**VIT, "num_register_tokens": 2}),
    _t("DonutSwinForImageClassification", SWIN),
    _t("EfficientNetForImageClassification", dict(image_size=32, width_coefficient=0.25, depth_coefficient=0.25,
                                                  hidden_dim=320)),
    _t("FocalNetForImageClassification", dict(image_size=32, patch_size=4, embed_dim=16, hidden_sizes=[16, 32],
                                              depths=[1, 1])),
    _t("HGNetV2ForImageClassification", dict(embedding_size=8, depths=[1, 1], hidden_sizes=[16, 32],
                                             stem_channels=[3, 8, 8], stage_in_channels=[8, 16],
                                             stage_mid_channels=[8, 8], stage_out_channels=[16, 32],
                                             stage_num_blocks=[1, 1], stage_downsample=[False, True],
                                             stage_light_block=[False, True], stage_kernel_size=[3, 3],
                                             stage_numb_of_layers=[2, 2], stage_downsample_strides=[2, 2])),
    _t("HieraForImageClassification", dict(embed_dim=16, image_size=[32, 32], patch_size=[3, 3],
                                           patch_stride=[2, 2], patch_padding=[1, 1], depths=[1, 1],
                                           num_heads=[1, 2], masked_unit_size=[4, 4], query_stride=[2, 2],
                                           num_query_pool=1, masked_unit_attention=[True, False])),
    _t("IJepaForImageClassification", VIT),
    _t("LevitForImageClassification", dict(image_size=32, patch_size=16, hidden_sizes=[16, 32], num_attention_heads=[1, 2],
                                           depths=[1, 1], key_dim=[8, 8], drop_path_rate=0, mlp_ratio=[2, 2],
                                           attention_ratio=[2, 2],
                                           down_ops=[["Subsample", 8, 2, 4, 2, 2]]),
       names={r"^classifier\.linear$": "classifier", r"layers\.\d+\.(keys_values|queries)\.linear$": "patch_merging"}),
    _t("LevitForImageClassificationWithTeacher", dict(image_size=32, patch_size=16, hidden_sizes=[16, 32],
                                                      num_attention_heads=[1, 2], depths=[1, 1], key_dim=[8, 8],
                                                      drop_path_rate=0, mlp_ratio=[2, 2], attention_ratio=[2, 2],
                                                      down_ops=[["Subsample", 8, 2, 4, 2, 2]]), id="levit_with_teacher",
       names={r"^classifier(_distill)?\.linear$": "classifier"}),
    _t("MetaClip2ForImageClassification", dict(text_config=CLIP_TEXT, vision_config=CLIP_VISION),
       names={r"self_attn\.(q|k|v)_proj$": "attn_qkv"}),
    _t("MobileNetV1ForImageClassification", dict(image_size=32, depth_multiplier=0.25)),
    _t("MobileNetV2ForImageClassification", dict(image_size=32, depth_multiplier=0.25)),
    _t("MobileViTForImageClassification", dict(image_size=32, hidden_sizes=[16, 16, 16],
                                               neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32], num_attention_heads=2)),
    _t("MobileViTV2ForImageClassification", dict(image_size=64, width_multiplier=0.25, n_attn_blocks=[1, 1, 1]), size=64,
       names={r"attention\.qkv_proj\.": "attn_qkv", r"ffn\.conv1\.": "mlp_up"}),
    _t("PerceiverForImageClassificationLearned", dict(num_latents=8, d_latents=32, d_model=32,
                                                      num_self_attends_per_block=1, num_self_attention_heads=2,
                                                      num_cross_attention_heads=1, image_size=16),
       size=16, id="perceiver_learned"),
    _t("PerceiverForImageClassificationFourier", dict(num_latents=8, d_latents=32, d_model=16,
                                                      num_self_attends_per_block=1, num_self_attention_heads=2,
                                                      num_cross_attention_heads=1, image_size=16),
       size=16, id="perceiver_fourier"),
    _t("PerceiverForImageClassificationConvProcessing", dict(num_latents=8, d_latents=32, d_model=32,
                                                             num_self_attends_per_block=1,
                                                             num_self_attention_heads=2,
                                                             num_cross_attention_heads=1, image_size=16),
       size=16, id="perceiver_conv"),
    _t("PoolFormerForImageClassification", dict(depths=[1, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
                                                strides=[4, 2], padding=[2, 1], num_encoder_blocks=2)),
    _t("PPLCNetForImageClassification", dict(block_configs=[[[3, 8, 8, 1, False]], [[3, 8, 16, 2, False]],
                                                            [[3, 16, 16, 2, False]],
                                                            [[3, 16, 32, 2, False]], [[5, 32, 32, 2, True]]],
                                             stem_channels=8, class_expand=32)),
    _t("PvtForImageClassification", dict(image_size=32, num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[16, 32],
                                         patch_sizes=[4, 2], strides=[4, 2], num_attention_heads=[1, 2],
                                         sequence_reduction_ratios=[2, 1], mlp_ratios=[2, 2])),
    _t("PvtV2ForImageClassification", dict(image_size=32, num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[16, 32],
                                           patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
                                           sr_ratios=[2, 1], mlp_ratios=[2, 2]),
       names={r"patch_embedding\.proj$": "patch_embed", r"attention\.proj$": "attn_proj"}),
    _t("RegNetForImageClassification", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8)),
    _t("ResNetForImageClassification", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                            layer_type="basic")),
    _t("SegformerForImageClassification", dict(num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[16, 32],
                                               patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
                                               sr_ratios=[2, 1], mlp_ratios=[2, 2])),
    _t("SiglipForImageClassification", dict(text_config=CLIP_TEXT, vision_config=CLIP_VISION),
       names={r"self_attn\.(q|k|v)_proj$": "attn_qkv"}),
    _t("SwiftFormerForImageClassification", dict(image_size=32, depths=[1, 1, 1, 1], embed_dims=[8, 8, 16, 16]),
       names={r"^(head|dist_head)$": "classifier"}),
    _t("SwinForImageClassification", SWIN),
    _t("Swinv2ForImageClassification", SWIN, never=(r"continuous_position_bias_mlp|cpb_mlp",)),
    _t("TextNetForImageClassification", dict(stem_out_channels=8, hidden_sizes=[8, 8, 16, 16, 16],
                                             depths=[1, 1, 1, 1],
                                             conv_layer_kernel_sizes=[[[3, 3]], [[3, 3]], [[3, 3]], [[3, 3]]],
                                             conv_layer_strides=[[1], [2], [2], [2]], image_size=[32, 32])),
    _t("TimmWrapperForImageClassification", dict(architecture="resnet18", model_args={"layers": [1, 1, 1, 1]}),
       id="timm_wrapper"),
    _t("ViTForImageClassification", VIT),
    _t("ViTMSNForImageClassification", VIT),
)

# model type -> why it is not in the zoo
TRANSFORMERS_SKIPPED: dict[str, str] = {
    "dinat": "needs the `natten` package (neighborhood-attention kernels), not a dependency",
    "imagegpt": "takes colour-cluster token ids (input_ids), not an image tensor",
    "siglip2": "takes NaFlex patch sequences with pixel_attention_mask and spatial_shapes, not an image tensor",
    "shieldgemma2": "a vision-language policy model: classifies a text prompt + image with a Gemma-3 decoder",
}


def _timm(name: str, *, size: int = 32, names: dict | None = None, never: tuple = (),
          slow: bool = False, id: str | None = None, **kwargs) -> ZooCase:
    return ZooCase(id=id or name, library="timm", arch=name, kwargs=kwargs, size=size,
                   names=names or {}, never=never, slow=slow)


TIMM_TEST: tuple[ZooCase, ...] = (
    _timm("test_byobnet"),
    _timm("test_coatnet", img_size=64, size=64),
    _timm("test_convnext"),
    _timm("test_convnext2"),
    _timm("test_convnext3"),
    _timm("test_efficientnet"),
    _timm("test_efficientnet_evos"),
    _timm("test_efficientnet_gn"),
    _timm("test_efficientnet_ln"),
    _timm("test_mambaout"),
    _timm("test_maxvit", img_size=64, size=64),
    _timm("test_nfnet"),
    _timm("test_resnet"),
    _timm("test_vit"),
    _timm("test_vit2"),
    _timm("test_vit3", img_size=64, size=64),
    _timm("test_vit4"),
    _timm("test_vit_relpos", img_size=64, size=64,
       never=(r"rel_pos",)),
)

TIMM: tuple[ZooCase, ...] = (
    _timm("resnet18", layers=[1, 1, 1, 1], slow=True),
    _timm("efficientnet_b0", slow=True),
    _timm("mobilenetv3_small_050"),
    _timm("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)),
    _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
    _timm("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
          num_heads=2,
       names={r"^head(_dist)?$": "classifier"}),
    _timm("swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=16,
          depths=(1, 1), num_heads=(1, 2)),
    _timm("swinv2_cr_tiny_ns_224", img_size=32, patch_size=2, window_size=4, embed_dim=16,
          depths=(1, 1), num_heads=(1, 2), never=(r"meta_mlp",)),
    _timm("swinv2_tiny_window8_256", img_size=32, patch_size=2, window_size=4, embed_dim=16,
          depths=(1, 1), num_heads=(1, 2), never=(r"cpb_mlp",)),
    _timm("levit_128s", img_size=64, embed_dim=(16, 32, 48), key_dim=8, num_heads=(1, 2, 3),
          depth=(1, 1, 1), size=64,
       names={r"^head(_dist)?\.linear$": "classifier", r"downsample\.(attn_downsample|mlp)\.": "patch_merging"}),
    _timm("mobilevit_xxs", size=64),
    _timm("mobilevitv2_050", size=64,
       names={r"attn\.qkv_proj$": "attn_qkv"}),
    _timm("edgenext_xx_small", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), heads=(1, 1, 1, 1),
       never=(r"pos_embd",)),
    _timm("fastvit_t8", layers=(1, 1, 1, 1), embed_dims=(32, 32, 64, 64)),
    _timm("eva02_tiny_patch14_224", img_size=28, patch_size=14, embed_dim=32, depth=2,
          num_heads=2, size=28),
    _timm("coatnet_nano_rw_224", img_size=64, size=64, embed_dim=(16, 32, 64, 128), depths=(1, 1, 1, 1)),
    _timm("maxvit_nano_rw_256", img_size=64, size=64, embed_dim=(32, 64, 64, 128), depths=(1, 1, 1, 1)),
    _timm("regnetx_002"),
    _timm("ghostnet_050"),
    _timm("efficientvit_b0", size=64),
    _timm("nf_resnet26", channels=(16, 32, 64, 128), depths=(1, 1, 1, 1)),
    _timm("mambaout_femto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)),
    _timm("timm.models.mlp_mixer.MlpMixer", id="mixer", img_size=32, patch_size=8, embed_dim=32,
          num_blocks=2,
       names={r"mlp_tokens\.fc1$": "mlp_up", r"mlp_channels\.fc2$": "mlp_down"}),
    _timm("mobilenetv4_conv_small_050"),
    _timm("repvit_m0_9", size=64, embed_dim=(16, 32, 64, 128), depth=(1, 1, 1, 1),
       names={r"^head\.head(_dist)?\.l$": "classifier"}),
    _timm("tiny_vit_5m_224", size=64, depths=(1, 1, 1, 1),
          embed_dims=(8, 16, 32, 32), num_heads=(1, 1, 2, 2), window_sizes=(2, 2, 2, 2)),
    _timm("pvt_v2_b0", depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 1, 1, 1)),
    _timm("vgg11", mlp_ratio=0.0625, slow=True),
    _timm("densenet121", growth_rate=8, block_config=(1, 1, 1, 1)),
    _timm("hgnetv2_b0", slow=True),
    _timm("rdnet_tiny", size=64, num_init_features=16, growth_rates=(16, 16, 32, 32, 32, 32, 64),
          num_blocks_list=(1, 1, 1, 1, 1, 1, 1)),
    _timm("inception_next_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)),
    _timm("cait_xxs24_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
    _timm("xcit_nano_12_p16_224", img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2),
)

ZOO: tuple[ZooCase, ...] = TRANSFORMERS + TIMM_TEST + TIMM


def build(case: ZooCase):
    """The model of ``case`` with random weights, in eval mode."""
    import torch

    torch.manual_seed(0)
    if case.library == "timm":
        import timm

        if case.arch.startswith("timm.models."):  # a family whose registered names fix the sizes: its class
            import importlib

            module, cls = case.arch.rsplit(".", 1)
            kwargs = dict(case.kwargs)
            if "token_mixers" in kwargs:  # MetaFormer takes classes
                kwargs["token_mixers"] = [getattr(importlib.import_module(module), n) for n in kwargs["token_mixers"]]
            return getattr(importlib.import_module(module), cls)(num_classes=NUM_LABELS, **kwargs).eval()
        return timm.create_model(case.arch, pretrained=False, num_classes=NUM_LABELS, **case.kwargs).eval()
    import transformers

    cls = getattr(transformers, case.arch)
    config = cls.config_class(**{**case.kwargs, "num_labels": NUM_LABELS})
    return cls(config).eval()


KEY_ROLES = ("patch_embed", "attn_qkv", "attn_proj", "mlp_up", "mlp_down", "patch_merging", "classifier")

# case id -> {key role: count}. Read from each architecture's code: q/k/v count once per projection (fused
# qkv: one), an MLP one up + one down, every head of a distilled model is a classifier.
ROLE_TABLE: dict[str, dict[str, int]] = {
    'beit': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'bit': {'classifier': 1},
    'clip': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'convnext': {'patch_embed': 1, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'convnextv2': {'patch_embed': 1, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'cvt': {'patch_embed': 3, 'attn_qkv': 18, 'attn_proj': 6, 'mlp_up': 6, 'mlp_down': 6, 'classifier': 1},
    'data2vecvision': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'deit': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'deit_with_teacher': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 2},
    'dinov2': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'dinov2withregisters': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'donutswin': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'patch_merging': 1, 'classifier': 1},
    'efficientnet': {'classifier': 1},
    'focalnet': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'hgnetv2': {'classifier': 1},
    'hiera': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'ijepa': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'levit': {'patch_embed': 4, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 3, 'mlp_down': 3, 'patch_merging': 3, 'classifier': 1},
    'levit_with_teacher': {'patch_embed': 4, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 3, 'mlp_down': 3, 'patch_merging': 3, 'classifier': 2},
    'metaclip2': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'mobilenetv1': {'classifier': 1},
    'mobilenetv2': {'classifier': 1},
    'mobilevit': {'attn_qkv': 27, 'attn_proj': 9, 'mlp_up': 9, 'mlp_down': 9, 'classifier': 1},
    'mobilevitv2': {'attn_qkv': 3, 'attn_proj': 3, 'mlp_up': 3, 'mlp_down': 3, 'classifier': 1},
    'perceiver_learned': {'attn_qkv': 9, 'attn_proj': 3, 'mlp_up': 3, 'mlp_down': 3, 'classifier': 1},
    'perceiver_fourier': {'attn_qkv': 9, 'attn_proj': 3, 'mlp_up': 3, 'mlp_down': 3, 'classifier': 1},
    'perceiver_conv': {'attn_qkv': 9, 'attn_proj': 3, 'mlp_up': 3, 'mlp_down': 3, 'classifier': 1},
    'poolformer': {'patch_embed': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'pplcnet': {'classifier': 1},
    'pvt': {'patch_embed': 2, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'pvtv2': {'patch_embed': 2, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'regnet': {'classifier': 1},
    'resnet': {'classifier': 1},
    'segformer': {'patch_embed': 2, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'siglip': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},  # + SigLIP's pooling head, unused by the classifier
    'swiftformer': {'patch_embed': 2, 'attn_qkv': 8, 'attn_proj': 8, 'mlp_up': 4, 'mlp_down': 4, 'classifier': 2},
    'swin': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'patch_merging': 1, 'classifier': 1},
    'swinv2': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'patch_merging': 1, 'classifier': 1},
    'textnet': {'classifier': 1},
    'timm_wrapper': {'classifier': 1},
    'vit': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'vitmsn': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'test_byobnet': {'classifier': 1},
    'test_coatnet': {'attn_qkv': 3, 'attn_proj': 3, 'mlp_up': 3, 'mlp_down': 3, 'classifier': 1},
    'test_convnext': {'mlp_up': 9, 'mlp_down': 9, 'classifier': 1},
    'test_convnext2': {'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'test_convnext3': {'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'test_efficientnet': {'classifier': 1},
    'test_efficientnet_evos': {'classifier': 1},
    'test_efficientnet_gn': {'classifier': 1},
    'test_efficientnet_ln': {'classifier': 1},
    'test_mambaout': {'mlp_up': 6, 'mlp_down': 6, 'classifier': 1},
    'test_maxvit': {'attn_qkv': 8, 'attn_proj': 8, 'mlp_up': 8, 'mlp_down': 8, 'classifier': 1},
    'test_nfnet': {'classifier': 1},
    'test_resnet': {'classifier': 1},
    'test_vit': {'patch_embed': 1, 'attn_qkv': 6, 'attn_proj': 6, 'mlp_up': 6, 'mlp_down': 6, 'classifier': 1},
    'test_vit2': {'patch_embed': 1, 'attn_qkv': 8, 'attn_proj': 8, 'mlp_up': 8, 'mlp_down': 8, 'classifier': 1},
    'test_vit3': {'patch_embed': 1, 'attn_qkv': 11, 'attn_proj': 10, 'mlp_up': 10, 'mlp_down': 10, 'classifier': 1},
    'test_vit4': {'patch_embed': 1, 'attn_qkv': 9, 'attn_proj': 9, 'mlp_up': 9, 'mlp_down': 9, 'classifier': 1},
    'test_vit_relpos': {'patch_embed': 1, 'attn_qkv': 9, 'attn_proj': 9, 'mlp_up': 9, 'mlp_down': 9, 'classifier': 1},
    'resnet18': {'classifier': 1},
    'efficientnet_b0': {'classifier': 1},
    'mobilenetv3_small_050': {'classifier': 1},
    'convnext_atto': {'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'vit_tiny_patch16_224': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'deit_tiny_distilled_patch16_224': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 2},
    'swin_tiny_patch4_window7_224': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'patch_merging': 1, 'classifier': 1},
    'swinv2_cr_tiny_ns_224': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'patch_merging': 1, 'classifier': 1},
    'swinv2_tiny_window8_256': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'patch_merging': 1, 'classifier': 1},
    'levit_128s': {'attn_qkv': 3, 'attn_proj': 3, 'mlp_up': 3, 'mlp_down': 3, 'patch_merging': 10, 'classifier': 2},
    'mobilevit_xxs': {'attn_qkv': 9, 'attn_proj': 9, 'mlp_up': 9, 'mlp_down': 9, 'classifier': 1},
    'mobilevitv2_050': {'attn_qkv': 9, 'attn_proj': 9, 'mlp_up': 9, 'mlp_down': 9, 'classifier': 1},
    'edgenext_xx_small': {'attn_qkv': 3, 'attn_proj': 3, 'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'fastvit_t8': {'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'eva02_tiny_patch14_224': {'patch_embed': 1, 'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'coatnet_nano_rw_224': {'attn_qkv': 2, 'attn_proj': 2, 'mlp_up': 2, 'mlp_down': 2, 'classifier': 1},
    'maxvit_nano_rw_256': {'attn_qkv': 8, 'attn_proj': 8, 'mlp_up': 8, 'mlp_down': 8, 'classifier': 1},
    'regnetx_002': {'classifier': 1},
    'ghostnet_050': {'classifier': 1},
    'efficientvit_b0': {'attn_qkv': 4, 'attn_proj': 4, 'classifier': 1},
    'nf_resnet26': {'classifier': 1},
    'mambaout_femto': {'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'mixer': {'patch_embed': 1, 'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'mobilenetv4_conv_small_050': {'classifier': 1},
    'repvit_m0_9': {'classifier': 2},
    'tiny_vit_5m_224': {'patch_embed': 2, 'attn_qkv': 3, 'attn_proj': 3, 'mlp_up': 3, 'mlp_down': 3, 'classifier': 1},
    'pvt_v2_b0': {'patch_embed': 1, 'attn_qkv': 8, 'attn_proj': 4, 'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'vgg11': {'classifier': 1},
    'densenet121': {'classifier': 1},
    'hgnetv2_b0': {'classifier': 1},
    'rdnet_tiny': {'classifier': 1},
    'inception_next_atto': {'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'cait_xxs24_224': {'patch_embed': 1, 'attn_qkv': 8, 'attn_proj': 4, 'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
    'xcit_nano_12_p16_224': {'patch_embed': 4, 'attn_qkv': 8, 'attn_proj': 4, 'mlp_up': 4, 'mlp_down': 4, 'classifier': 1},
}
