"""Layer roles as data: ordered ``(regex on the module name, role, reason)`` rules, first match wins.

Covers transformers and timm naming across the vision classifiers of both libraries. A rule whose role
is :data:`EXCLUDED` removes the layer from the prunable inventory: those Linear/Conv layers compute
position or bias tables (Swin-v2's continuous position-bias MLP, relative-position MLPs, positional
encodings), which must never be pruned. Layers no rule names get a role from their structure in
:func:`hf_mixmatch.layers.list_prunable` (depthwise conv, first conv = stem, classifier by output size).
"""

from __future__ import annotations

from typing import NamedTuple

EXCLUDED = "excluded"


class RoleRule(NamedTuple):
    pattern: str  # re.search on the module name
    role: str  # one of layers.ROLES, or EXCLUDED
    reason: str


_ = r"(?:^|\.)"  # start of a name component
SUFFIX = r"(?:\.linear|\.conv|\.convolution)?"  # wrapper modules holding the actual layer
ATTN = r"(?:attn|attention|self_attn|xca|attn_pool|context_module\.main)"

RULES: tuple[RoleRule, ...] = (
    # ---- never prunable: they compute position/bias tables, not features
    RoleRule(_ + r"(cpb_mlp|continuous_position_bias_mlp|meta_mlp)(\.|$)", EXCLUDED,
             "Swin-v2 continuous position-bias MLP: builds the attention bias table"),
    RoleRule(_ + r"rel_pos\.", EXCLUDED, "relative-position MLP: builds the attention bias table"),
    RoleRule(_ + r"(pos_embed|pos_embd)\.token_projection$", EXCLUDED, "positional-encoding projection"),
    RoleRule(_ + r"positions_projection$", EXCLUDED, "positional-encoding projection (Perceiver)"),
    # ---- distillation heads: a second classifier head (DeiT-distilled, LeViT, SwiftFormer, RepViT)
    RoleRule(_ + r"(head_dist|dist_head|classifier_distill|distillation_classifier|cls_classifier)(\.|$)",
             "classifier", "classifier head (distilled two-head model)"),
    # ---- patch embeddings (plural and singular spellings)
    RoleRule(_ + r"patch_embed(dings?|ding)?(\.|$)", "patch_embed", "patch embedding"),
    RoleRule(_ + r"convolution_embeddings\.", "patch_embed", "convolutional token embedding (CvT)"),
    RoleRule(_ + r"stem\.proj$", "patch_embed", "patch embedding (MLP-Mixer stem)"),
    # ---- downsampling between stages (LeViT's attention/MLP downsample blocks included)
    RoleRule(_ + r"(downsample|downsampling_layer)\.reduction$", "patch_merging", "patch merging"),
    RoleRule(_ + r"downsample\.(attn_downsample|mlp)\.", "patch_merging", "LeViT downsample block"),
    RoleRule(_ + r"layers\.\d+\.(keys_values|queries|projection)\.linear$", "patch_merging",
             "LeViT attention-subsample block"),
    RoleRule(_ + r"(downsample|shortcut|downsampling_layer)(\.|$)", "downsample", "downsample / shortcut"),
    RoleRule(_ + r"network\.\d+\.proj$", "downsample", "SwiftFormer stage embedding (downsample)"),
    RoleRule(_ + r"(embedder|stem)(\.|$)", "stem", "stem"),
    # ---- attention: q/k/v (fused or split) and the output projection
    RoleRule(_ + ATTN + r"\.(qkv|qkv_proj|q|k|v|kv|q_proj|k_proj|v_proj|to_query|to_key)(\.ln)?" + SUFFIX + "$",
             "attn_qkv", "attention q/k/v projection"),
    RoleRule(_ + r"attention\.(attention|self)\.(query|key|value)$", "attn_qkv", "attention q/k/v projection"),
    RoleRule(_ + r"attention\.(query|key|value)$", "attn_qkv", "attention q/k/v projection"),
    RoleRule(_ + r"attention\.attention\.projection_(query|key|value)$", "attn_qkv", "attention q/k/v projection (CvT)"),
    RoleRule(_ + r"module\.queries_keys_values\.linear$", "attn_qkv", "attention q/k/v projection (LeViT)"),
    RoleRule(_ + r"modulation\.projection_in$", "attn_qkv", "focal modulation: query/context/gates projection"),
    RoleRule(_ + ATTN + r"\.(proj|o_proj|out_proj|final)(\.ln)?" + SUFFIX + "$", "attn_proj",
             "attention output projection"),
    RoleRule(_ + r"attention\.output\.dense$", "attn_proj", "attention output projection"),
    RoleRule(_ + r"module\.projection\.linear$", "attn_proj", "attention output projection (LeViT)"),
    RoleRule(_ + r"modulation\.projection_out$", "attn_proj", "focal modulation output projection"),
    # ---- MLP / feed-forward: up and down projections
    RoleRule(_ + r"(mlp|mlp_tokens|mlp_channels|ffn|linear)\.(fc1|dense1|conv1|ln1)" + SUFFIX + "$", "mlp_up",
             "MLP up projection"),
    RoleRule(_ + r"(mlp|mlp_tokens|mlp_channels|ffn|linear)\.(fc2|dense2|conv2|ln2)" + SUFFIX + "$", "mlp_down",
             "MLP down projection"),
    RoleRule(_ + r"module\.linear_up\.linear$", "mlp_up", "MLP up projection (LeViT)"),
    RoleRule(_ + r"module\.linear_down\.linear$", "mlp_down", "MLP down projection (LeViT)"),
    RoleRule(_ + r"intermediate\.dense$", "mlp_up", "MLP up projection"),
    RoleRule(_ + r"output\.conv1$", "mlp_up", "MLP up projection (PoolFormer)"),
    RoleRule(_ + r"blocks\.\d+\.fc1$", "mlp_up", "gated MLP up projection (MambaOut)"),
    RoleRule(_ + r"pwconv1$", "mlp_up", "MLP up projection (ConvNeXt)"),
    RoleRule(_ + r"output\.dense$", "mlp_down", "MLP down projection"),
    RoleRule(_ + r"output\.conv2$", "mlp_down", "MLP down projection (PoolFormer)"),
    RoleRule(_ + r"blocks\.\d+\.fc2$", "mlp_down", "gated MLP down projection (MambaOut)"),
    RoleRule(_ + r"pwconv2$", "mlp_down", "MLP down projection (ConvNeXt)"),
)

# A Linear whose output size is the label count and whose name has one of these components is a classifier
# head (besides the one timm's get_classifier() or the last such Linear names): the second head of distilled
# models, heads wrapped as head.l / classifier.linear / classifier.1.
CLASSIFIER_NAME = r"(?:^|\.)(head\w*|\w*classifier\w*|dist_head|fc\d?|final_layer)(?:\.|$)"
