"""Top-1 / top-5 accuracy on decoded tensors, split across processes with Accelerate."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from .models import logits as default_forward


def make_loader(dataset: TensorDataset, *, batch_size: int, accelerator=None) -> DataLoader:
    """An evaluation loader; with an accelerator it is sharded across processes."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return accelerator.prepare_data_loader(loader) if accelerator is not None else loader


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: TensorDataset | DataLoader,
    *,
    batch_size: int = 64,
    accelerator=None,
    forward: Callable = default_forward,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, float | None]:
    """``{"accuracy": top-1, "top5": top-5 or None (fewer than 5 classes), "samples": n}``."""
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size=batch_size, accelerator=accelerator)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct1 = correct5 = seen = 0
    has_top5 = None
    is_main = accelerator is None or accelerator.is_main_process
    for x, y in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not (progress and is_main)):
        out = forward(model, x.to(device))
        n_cls = out.shape[-1]
        k = min(5, n_cls)
        top = out.topk(k, dim=-1).indices
        y = y.to(device)
        if accelerator is not None:
            top, y = accelerator.gather_for_metrics((top, y))
        hit = top == y.unsqueeze(-1)
        correct1 += int(hit[:, 0].sum())
        correct5 += int(hit.any(dim=-1).sum())
        seen += int(y.numel())
        has_top5 = n_cls >= 5
    model.train(was_training)
    if seen == 0:
        return {"accuracy": 0.0, "top5": None, "samples": 0}
    return {"accuracy": correct1 / seen, "top5": (correct5 / seen) if has_top5 else None, "samples": seen}
