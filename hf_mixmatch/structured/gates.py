"""Soft / hard channel gates: forward pre-hooks that scale the channels each consumer layer reads.

Scaling a group's channels where they are *consumed* (the input of every conv/linear in the group) is
exactly what physically removing them does: a channel gated to 0 contributes nothing downstream, while
the rest of the network is untouched. So a model with gates 0 on removed units is the masked-dense
reference of the pruned model.
"""

from __future__ import annotations

import torch
from torch import nn

from .groups import GroupPlan


class GateHooks:
    """Install with ``with GateHooks(model, plan) as gates: gates.values = {group: tensor[size]}; model(x)``.

    ``values[g][u]`` multiplies unit ``u`` of group ``g``; groups missing from ``values`` are not gated.
    """

    def __init__(self, model: nn.Module, plan: GroupPlan):
        self.model = model
        self.plan = plan
        self.values: dict[int, torch.Tensor] = {}
        self._handles = []
        self._index: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        for g in plan.prunable:
            for c in g.consumers:
                self._index.setdefault(c.module, []).append(
                    (g.index, torch.tensor(c.chan, dtype=torch.long), torch.tensor(c.unit, dtype=torch.long)))

    def _hook(self, name: str, module: nn.Module):
        entries = self._index[name]
        linear = isinstance(module, nn.Linear)

        def pre(mod, args):
            x = args[0]
            n = x.shape[-1] if linear else x.shape[1]
            scale = None
            for gi, chan, unit in entries:
                vals = self.values.get(gi)
                if vals is None:
                    continue
                if scale is None:
                    scale = torch.ones(n, dtype=x.dtype, device=x.device)
                scale = scale.index_put((chan.to(x.device),), vals.to(x.dtype)[unit.to(vals.device)].to(x.device))
            if scale is None:
                return None
            if not linear:
                scale = scale.view(1, n, *([1] * (x.dim() - 2)))
            return (x * scale, *args[1:])

        return pre

    def __enter__(self) -> "GateHooks":
        for name in self._index:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(self._hook(name, module)))
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()


def masks_from_removed(plan: GroupPlan, removed: dict[int, list[int]]) -> dict[int, torch.Tensor]:
    """0/1 keep masks (float) per prunable group from the removed unit indices."""
    out = {}
    for g in plan.prunable:
        m = torch.ones(g.size)
        if removed.get(g.index):
            m[torch.tensor(removed[g.index], dtype=torch.long)] = 0.0
        out[g.index] = m
    return out
