"""Mask-exact fine-tuning of a pruned model with Accelerate.

The masks are the nonzero pattern of the prunable weights when fine-tuning starts. Pruned weights
stay exactly zero: their gradients are masked before every AdamW step *and* the masks are re-applied
after it (the authors' code re-applied them before the step, so pruned weights drifted off zero).
Early stopping on validation accuracy (patience counted in evaluations); the best weights are
restored; at the end every pruned weight is checked to be exactly zero.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import ConfigError, SparsityMismatchError
from .layers import LayerInfo, get_weight
from .masks import apply_sparsities, measure_sparsity
from .outdir import record, record_dir

__all__ = ["FinetuneResult", "Finetuner", "finetune", "verify_masks"]


@dataclass
class FinetuneResult:
    steps: int  # optimizer steps taken
    best_val_accuracy: float
    history: list[dict] = field(default_factory=list)  # [{"step", "val_accuracy", "train_loss"}]
    initial_val_accuracy: float | None = None
    stopped_early: bool = False
    best_step: int = 0  # the step whose weights were restored (0: the starting weights)

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "best_val_accuracy": self.best_val_accuracy,
            "history": list(self.history),
            "initial_val_accuracy": self.initial_val_accuracy,
            "stopped_early": self.stopped_early,
            "best_step": self.best_step,
        }


def _default_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def verify_masks(model: nn.Module, layers: list[LayerInfo], masks: dict[str, torch.Tensor]) -> None:
    """Raise :class:`SparsityMismatchError` if any weight outside its keep-mask is nonzero."""
    bad = {}
    for layer in layers:
        weight = get_weight(model, layer).detach()
        mask = masks[layer.name].to(weight.device)
        n_bad = int(((weight != 0) & ~mask).sum())
        if n_bad:
            bad[layer.name] = n_bad
    if bad:
        raise SparsityMismatchError(
            f"pruned weights became nonzero after fine-tuning in {len(bad)} layer(s) {dict(list(bad.items())[:3])}; "
            "this is a bug in hf_mixmatch.finetune, please report it"
        )


@torch.no_grad()
def _accuracy(model, loader, accelerator, forward) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long)
    total = 0
    for x, y in loader:
        pred = forward(model, x).argmax(dim=-1)
        pred, y = accelerator.gather_for_metrics((pred, y))
        correct += (pred == y).sum().cpu()
        total += len(y)
    return float(correct) / max(total, 1)


def _apply_masks(params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.mul_(masks[name])


def finetune(
    model: nn.Module,
    layers: list[LayerInfo],
    train_dataset: Dataset,
    val_dataset: Dataset,
    *,
    accelerator=None,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 5e-5,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    patience: int = 3,
    eval_every: int | None = None,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``model`` in place keeping its pruned weights exactly zero.

    ``steps`` (optimizer steps) wins over ``epochs``; neither: one epoch. Validation accuracy is
    measured before training and every ``eval_every`` steps (default: once per epoch, and at the
    end); training stops after ``patience`` evaluations without improvement and the best weights
    (possibly the starting ones) are restored.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if steps is not None and steps < 0 or epochs is not None and epochs < 0:
        raise ConfigError("steps and epochs must be >= 0")
    if lr <= 0 or batch_size < 1 or patience < 1:
        raise ConfigError(f"need lr > 0, batch_size >= 1 and patience >= 1 (got lr={lr}, batch_size={batch_size}, patience={patience})")
    if len(train_dataset) == 0 or len(val_dataset) == 0:
        raise ConfigError("fine-tuning needs non-empty train and validation datasets")
    forward = forward or _default_forward
    accelerator = accelerator or Accelerator()

    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True, generator=gen)
    val_loader = DataLoader(val_dataset, batch_size=batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    base = accelerator.unwrap_model(model)

    params = {layer.name: get_weight(base, layer) for layer in layers}
    masks = {name: (p.detach() != 0) for name, p in params.items()}
    fmasks = {name: m.to(p.dtype) for (name, p), m in zip(params.items(), masks.values())}

    per_epoch = len(train_loader)
    total_steps = steps if steps is not None else (epochs if epochs is not None else 1) * per_epoch
    eval_every = eval_every or per_epoch
    if eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got {eval_every}")

    initial = _accuracy(model, val_loader, accelerator, forward)
    best_acc, best_step = initial, 0
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in base.state_dict().items()})
    history = [{"step": 0, "val_accuracy": initial, "train_loss": math.nan}]
    bad_evals, step, stopped = 0, 0, False
    running, seen = 0.0, 0

    bar = tqdm(total=total_steps, desc="fine-tuning", disable=not (progress and accelerator.is_main_process))
    while step < total_steps and not stopped:
        model.train()
        for x, y in train_loader:
            logits = forward(model, x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            for name, p in params.items():
                if p.grad is not None:
                    p.grad.mul_(fmasks[name])
            optimizer.step()
            _apply_masks(params, fmasks)
            step += 1
            running += float(loss.detach())
            seen += 1
            bar.update(1)
            if step % eval_every == 0 or step == total_steps:
                acc = _accuracy(model, val_loader, accelerator, forward)
                history.append({"step": step, "val_accuracy": acc, "train_loss": running / max(seen, 1)})
                running, seen = 0.0, 0
                bar.set_postfix(val_acc=f"{acc:.4f}")
                if acc > best_acc:
                    best_acc, best_step, bad_evals = acc, step, 0
                    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in base.state_dict().items()})
                else:
                    bad_evals += 1
                    if bad_evals >= patience:
                        stopped = True
                model.train()
            if step >= total_steps or stopped:
                break
    bar.close()

    base.load_state_dict(best_state)
    verify_masks(base, layers, masks)
    return FinetuneResult(steps=step, best_val_accuracy=best_acc, history=history, initial_val_accuracy=initial, stopped_early=stopped, best_step=best_step)


# ------------------------------------------------------------------------------------ the run's stage


class Finetuner:
    """Fine-tunes one allocation at a time with masks kept exact, then puts every parameter back. A Mix-and-Match
    variant's fine-tuned weights are written to its folder as soon as they are measured (none kept in memory)."""

    def __init__(self, config, model, layers, data, acc, eval_batch_size: int = 256,
                 precision: str = "fp32"):
        self.config, self.model, self.layers, self.acc, self.data = config, model, layers, acc, data
        from torch.utils.data import Subset

        n = len(data.train)
        n_val = max(1, n // 10)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed)).tolist()  # class-mixed val
        self.train = Subset(data.train, order[n_val:])
        self.val = Subset(data.train, order[:n_val])
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.eval_data, self.eval_batch_size, self.precision = data.eval, eval_batch_size, precision
        self.saved: dict[str, Path] = {}  # variant id -> folder holding its fine-tuned weights
        self.recalibrate = None  # BatchNorm re-estimation after pruning (set by the pipeline)

    def restore(self) -> None:
        self.model.load_state_dict(self.state)

    def __call__(self, item: dict, scores: dict, folder: Path | None = None, loaded=None) -> dict:
        from .evaluate import evaluate
        from .reconstruct_stage import reconstructor, statistics_key
        from .saving import save_variant

        rank_by = item.get("rank_by") or item["signal"]
        if item.get("reconstructed"):
            reconstructor(self.config, self.data, self.acc)(self.model, self.layers, item["target_layers"])
        else:
            apply_sparsities(self.model, self.layers, item["target_layers"], scores[rank_by])
        if self.recalibrate is not None:  # start from the statistics the one-shot numbers were measured with
            self.recalibrate(self.model, statistics_key(item, self.layers))
        res = finetune(self.model, self.layers, self.train, self.val, accelerator=self.acc,
                       steps=self.config.finetune_steps, epochs=self.config.finetune_epochs, lr=self.config.finetune_lr,
                       patience=self.config.finetune_patience, batch_size=self.config.finetune_batch_size,
                       seed=self.config.seed, progress=False)
        self.acc.free_memory()  # drop the optimizer state the accelerator holds before the next item
        overall, _ = measure_sparsity(self.model, self.layers)
        metrics = evaluate(self.model, self.eval_data, batch_size=self.eval_batch_size, accelerator=self.acc,
                           precision=self.precision)
        if folder is not None and loaded is not None and self.acc.is_main_process:
            out = folder.parent.parent
            record_dir(out, "variants")
            record(out, f"variants/{folder.name}")
            save_variant(loaded, folder, recipe={"finetune": "measured; recipe pending"}, storage=self.config.storage)
            self.saved[item["id"]] = folder
        self.restore()
        return {"accuracy": metrics["accuracy"], "top5": metrics["top5"], "sparsity_after": overall,
                "steps": res.steps, "best_step": res.best_step, "stopped_early": res.stopped_early,
                "best_val_accuracy": res.best_val_accuracy, "initial_val_accuracy": res.initial_val_accuracy,
                "lr": self.config.finetune_lr}
