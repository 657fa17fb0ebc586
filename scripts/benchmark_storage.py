"""File size of compact storage vs dense safetensors at several unstructured sparsities.

Builds a ~5M-parameter model (a small ViT-like stack of Linear layers plus norms/biases, random
weights), zeroes the smallest-magnitude fraction of every >=2-D weight, saves it both ways and checks
the compact file restores the exact tensors. Prints a markdown table.

    OMP_NUM_THREADS=1 python scripts/benchmark_storage.py [--sparsities 0.5 0.7 0.9] [--dtype float32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from hf_mixmatch.storage import load_compact, save_compact


def build_state(seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """12 blocks of (qkv, proj, fc1, fc2) at width 192 + embed + head: ~5.4M parameters."""
    g = torch.Generator().manual_seed(seed)
    d, blocks = 192, 12
    state = {"patch_embed.weight": torch.randn(d, 3, 16, 16, generator=g), "patch_embed.bias": torch.randn(d, generator=g)}
    for i in range(blocks):
        for name, shape in (("qkv", (3 * d, d)), ("proj", (d, d)), ("fc1", (4 * d, d)), ("fc2", (d, 4 * d))):
            state[f"blocks.{i}.{name}.weight"] = torch.randn(*shape, generator=g)
            state[f"blocks.{i}.{name}.bias"] = torch.randn(shape[0], generator=g)
        state[f"blocks.{i}.norm.weight"] = torch.ones(d)
    state["head.weight"] = torch.randn(1000, d, generator=g)
    state["head.bias"] = torch.zeros(1000)
    return {k: v.to(dtype) for k, v in state.items()}


def prune(state: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    out = {}
    for k, w in state.items():
        if w.dim() >= 2:
            n = int(round(sparsity * w.numel()))
            w = w.clone()
            if n:
                idx = w.abs().reshape(-1).float().argsort()[:n]
                w.view(-1)[idx] = 0
        out[k] = w
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    base = build_state(args.seed, dtype)
    params = sum(t.numel() for t in base.values())
    prunable = sum(t.numel() for t in base.values() if t.dim() >= 2)
    print(f"model: {params / 1e6:.2f}M parameters ({prunable / 1e6:.2f}M in >=2-D weights), {args.dtype}\n")
    print("| sparsity (of >=2-D weights) | dense safetensors (MB) | compact (MB) | compact / dense | exact round trip |")
    print("|---:|---:|---:|---:|:---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.sparsities:
            state = prune(base, s)
            dense_p, compact_p = Path(tmp) / f"d{s}.safetensors", Path(tmp) / f"c{s}.safetensors"
            save_file(state, str(dense_p))
            save_compact(state, compact_p)
            back = load_compact(compact_p)
            exact = all(torch.equal(back[k].reshape(-1).view(torch.uint8), state[k].reshape(-1).view(torch.uint8))
                        for k in state)
            d, c = dense_p.stat().st_size, compact_p.stat().st_size
            print(f"| {s:.0%} | {d / 1e6:.2f} | {c / 1e6:.2f} | {c / d:.3f} | {'yes' if exact else 'NO'} |")


if __name__ == "__main__":
    main()
