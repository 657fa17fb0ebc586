"""The structured zoo: every architecture of ``hf_mixmatch.structured.zoo.CASES`` either prunes (the pruned model
runs, matches the gated model on a batch it was not checked on, and reloads identically) or stops with a one-line
"not supported: <why>" that the zoo's data expects. Plus the guards: the time bound, Torch-Pruning failures,
refusing a pruned model that differs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hf_mixmatch.errors import StructuredUnsupported
from hf_mixmatch.models import logits
from hf_mixmatch.structured import find_attention, find_groups, prune_physical, try_structured
from hf_mixmatch.structured.gates import GateHooks, masks_from_removed
from hf_mixmatch.structured.verify import check_equivalent
from hf_mixmatch.structured.zoo import CASES, MAY_SUCCEED, TIMEOUT, UNSUPPORTED, build_case

_IDS = [c.name for c in CASES]


def _param(case):
    return pytest.param(case, id=case.name, marks=[pytest.mark.slow] if case.slow else [])


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_structured_zoo_case(case):
    model, x = build_case(case)
    dense = copy.deepcopy(model)
    if case.name in UNSUPPORTED:
        try:
            res = try_structured(model, x, timeout=TIMEOUT)
        except StructuredUnsupported as exc:
            msg = str(exc)
            assert msg.startswith("not supported: ") and "\n" not in msg and UNSUPPORTED[case.name] in msg
            return
        assert case.name in MAY_SUCCEED, f"{case.name} was expected to stop: {UNSUPPORTED[case.name]}"
    else:
        res = try_structured(model, x, timeout=TIMEOUT)
    assert res.params_pruned < res.params_dense and res.prunable >= 1
    assert res.reload_diff is not None
    # the caller's model is untouched
    for (n, p), q in zip(model.state_dict().items(), dense.state_dict().values()):
        assert torch.equal(p, q), n
    # independent of the batch try_structured checked: another batch size, other values
    x2 = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = logits(res.model.eval(), x2).double()
        with GateHooks(model, res.plan) as gates:
            gates.values = masks_from_removed(res.plan, res.removed)
            ref = logits(model, x2).double()
        full = logits(model, x2).double()
    assert got.shape == full.shape
    scale = ref.abs().max().item()
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * max(scale, 1.0))
    assert (full - ref).abs().max().item() > 1e-6 * max(scale, 1.0)  # the removal did change the function


def test_zoo_success_rate_and_variety():
    timm_real = {c.arch for c in CASES if c.library == "timm" and not c.arch.startswith("test_")}
    assert len(timm_real) >= 25
    assert sum(c.library == "transformers" for c in CASES) >= 15
    assert set(UNSUPPORTED) <= set(_IDS)
    assert 1 - len(UNSUPPORTED) / len(CASES) >= 0.9


@pytest.mark.parametrize("name,heads", [("test_vit", 2), ("hf_vit", 3), ("swin", 2), ("hf_swin", 2), ("pvt_v2", 1)])
def test_attention_sites_are_found_with_their_head_counts(name, heads):
    model, _ = build_case(next(c for c in CASES if c.name == name))
    sites = find_attention(model)
    assert sites and sites[0].num_heads == heads
    assert all(s.width == s.num_heads * s.head_dim for s in sites)


def test_fused_qkv_heads_removed_across_q_k_and_v():
    model, x = build_case(next(c for c in CASES if c.name == "vit"))
    plan = find_groups(model, x)
    heads = [g for g in plan.prunable if g.kind == "heads"]
    removed = {heads[0].index: [1]}
    pruned, part = prune_physical(model, plan, removed)
    attn, old = pruned.get_submodule(heads[0].root), model.get_submodule(heads[0].root)
    d = old.head_dim
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 2 * d and attn.proj.in_features == 2 * d
    keep = [c for c in range(3 * d) if not d <= c < 2 * d]
    rows = [j * 3 * d + c for j in range(3) for c in keep]  # head 1 goes from each of q, k and v
    assert torch.equal(attn.qkv.weight, old.qkv.weight[rows])
    assert torch.equal(attn.proj.weight, old.proj.weight[:, keep])
    assert part["heads"] == {heads[0].root: [0, 2]}
    check_equivalent(model, plan, removed, pruned, x)


def test_nfnet_gain_is_cut_with_its_output_channels():
    model, x = build_case(next(c for c in CASES if c.name == "test_nfnet"))
    plan = find_groups(model, x, components={"all": "*"})  # final_conv -> classifier: one component
    gained = [g for g in plan.prunable if any(pd.param.endswith(".weight") and
                                              hasattr(model.get_submodule(pd.param[:-7]), "gain") and pd.dim == 0
                                              for pd in g.dims)]
    assert gained
    g = gained[0]
    pruned, _ = prune_physical(model, plan, {g.index: [0]})
    conv = next(pd.param[:-7] for pd in g.dims if hasattr(model.get_submodule(pd.param[:-7]), "gain") and pd.dim == 0)
    old, new = model.get_submodule(conv), pruned.get_submodule(conv)
    assert new.gain.shape[0] == new.weight.shape[0] == old.weight.shape[0] - 1
    assert torch.equal(new.gain, old.gain[1:])
    check_equivalent(model, plan, {g.index: [0]}, pruned, x)


def test_discovery_time_bound_is_a_one_line_error():
    model, x = build_case(next(c for c in CASES if c.name == "test_resnet"))
    with pytest.raises(StructuredUnsupported, match=r"^not supported: group discovery took over 0.001 s") as info:
        find_groups(model, x, timeout=0.001)
    assert "\n" not in str(info.value)


def test_over_the_time_bound_heads_and_mlp_units_are_still_pruned():
    model, x = build_case(next(c for c in CASES if c.name == "test_vit2"))
    plan = find_groups(model, x, timeout=0.001)
    assert plan.graph is None and plan.fallback.startswith("group discovery took over 0.001 s")
    kinds = {g.kind for g in plan.prunable}
    assert kinds == {"heads", "units"}
    removed = {g.index: [0] for g in plan.prunable}
    pruned, part = prune_physical(model, plan, removed)
    assert part["history"] == [] and part["units"] and part["heads"]
    check_equivalent(model, plan, removed, pruned, x)
    mlp = next(g for g in plan.prunable if g.kind == "units")
    assert pruned.get_submodule(mlp.site.up).out_features == mlp.size - 1


class _Untraceable(nn.Module):
    """Runs in eval under no_grad, but its forward refuses the gradient pass Torch-Pruning traces with."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if torch.is_grad_enabled():
            raise RuntimeError("tracing not allowed\nsecond line")
        return self.fc(self.conv(x).mean((2, 3)))


def test_torch_pruning_failure_becomes_not_supported():
    with pytest.raises(StructuredUnsupported) as info:
        find_groups(_Untraceable().eval(), torch.randn(1, 3, 8, 8))
    msg = str(info.value)
    assert msg.startswith("not supported: torch-pruning could not trace the model (RuntimeError: tracing not allowed")
    assert "\n" not in msg


def test_a_pruned_model_that_differs_is_refused():
    model, x = build_case(next(c for c in CASES if c.name == "test_resnet"))
    plan = find_groups(model, x)
    removed = {plan.prunable[0].index: [0]}
    pruned, _ = prune_physical(model, plan, removed)
    check_equivalent(model, plan, removed, pruned, x)
    with torch.no_grad():
        pruned.fc.bias.add_(1e-3)
    with pytest.raises(StructuredUnsupported, match="outputs differ from the gated model's"):
        check_equivalent(model, plan, removed, pruned, x)


def test_a_pruned_model_that_does_not_run_is_refused():
    model, x = build_case(next(c for c in CASES if c.name == "test_resnet"))
    plan = find_groups(model, x)
    removed = {plan.prunable[0].index: [0]}
    pruned, _ = prune_physical(model, plan, removed)
    pruned.fc = nn.Linear(3, 10)  # reads the wrong width
    with pytest.raises(StructuredUnsupported, match=r"^not supported: the physically pruned model does not run"):
        check_equivalent(model, plan, removed, pruned, x)


def test_cli_stops_with_one_line_and_saves_nothing_when_no_group_can_go(tmp_path, image_dataset, capsys):
    from transformers import BitConfig, BitForImageClassification, ViTImageProcessor

    from hf_mixmatch.cli import main

    torch.manual_seed(0)  # BiT: a GroupNorm on every channel group, so no channel can go alone
    model = BitForImageClassification(BitConfig(embedding_size=16, hidden_sizes=[16, 32, 48, 64],
                                                depths=[1, 1, 1, 1], num_groups=4, num_labels=4))
    model.save_pretrained(tmp_path / "m")
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(tmp_path / "m")
    out = tmp_path / "run"
    argv = ["structured", str(tmp_path / "m"), "--dataset", str(image_dataset), "--sparsity", "0.2",
            "--calib-samples", "8", "--eval-samples", "8", "--select-samples", "8", "--search", "grid",
            "--latency-runs", "1", "--output-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()  # progress bars of loading come first
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith("hf-mixmatch: error: not supported: no prunable group")
    assert "normalises across the channels" in last
    assert not (out / "model").exists() and not (out / "results.json").exists()


def test_zoo_script_writes_the_table_and_the_reasons(tmp_path):
    from _scripts import load_script

    script = load_script("structured_zoo")
    out = tmp_path / "zoo.md"
    assert script.main(["--only", "test_resnet", "hf_bit", "--out", str(out)]) == 0
    text = out.read_text()
    assert "**1 of 2 architectures succeed (50%)**" in text
    row = next(line for line in text.splitlines() if line.startswith("| test_resnet |"))
    assert "not supported" not in row and "→" in row
    assert "- **hf_bit**: no prunable group" in text
