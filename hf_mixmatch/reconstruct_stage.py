"""The reconstruction stage of a run (``--reconstruct sparsegpt``): which one-shot variants are reconstructed,
measured where the front is chosen, and the front chosen again."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ConfigError
from .pareto import pareto_front
from .variant_eval import Measurer

GIB = 1 << 30


def settings_of(config):
    """The run's :class:`~hf_mixmatch.reconstruct.ReconstructSettings`."""
    from .reconstruct import ReconstructSettings

    return ReconstructSettings(batch_size=config.batch_size, target=config.reconstruct_target,
                               refit=config.reconstruct_refit)


def reconstructor(config, data, acc):
    """``apply(model, layers, sparsities, score=None)``: SparseGPT on the run's calibration images."""
    from .reconstruct import make_reconstructor

    return make_reconstructor(settings_of(config), data.calib.tensors[0], accelerator=acc)


def hessian_buffers(config) -> int:
    """How many ``(G, d, d)`` float64 matrices of one layer are alive at once at the peak: the Hessian, with the
    dense target also ``X_dense^T X``, and the two factorization buffers of ``inverse_cholesky`` (RD curves with
    SparseGPT distortion: the Hessian and those two)."""
    if config.reconstruct != "none":
        return 4 if config.reconstruct_target == "dense" else 3
    return 3 if config.ranges == "rd" and config.rd_distortion == "sparsegpt" else 0


def available_memory() -> int | None:
    """Bytes this process may still allocate: Linux's MemAvailable, capped by a cgroup limit (containers);
    None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            if cap != "max" and int(cap) < 1 << 60:
                found.append(int(cap) - int(Path(usage).read_text().strip()))
                break
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def memory_budget(device) -> tuple[int | None, int, str]:
    """``(bytes free, processes sharing them, what)`` where a layer's Hessians live: on a GPU its free memory, which
    its process has to itself (one process per GPU); on CPU the host's available memory, shared by every process
    this host runs (``LOCAL_WORLD_SIZE``: each builds and factors its own copy of the layer's Hessians)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free, 1, f"GPU memory ({device})"
    return available_memory(), max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))), "memory"


def check_memory(config, model, layers, accelerator=None) -> None:
    """Fail before any work when the largest layer's Hessians cannot fit in memory (a one-line error naming the
    layer and the way out), instead of being killed hours later half-way through reconstruction. Under several
    processes every one of them stops when any does (no process is left waiting for the others)."""
    from .activations import groups_of, weight_matrix

    buffers = hessian_buffers(config)
    if not buffers or not layers:  # the same on every process: no collective needed
        return
    sizes = []
    for layer in layers:
        module = model.get_submodule(layer.name)
        g = groups_of(module, layer)
        d = weight_matrix(module.weight, layer, g).shape[-1]
        sizes.append((g * d * d * 8 * buffers, d, g, layer.name))
    one, d, g, name = max(sizes)
    avail, procs, where = memory_budget(next(model.parameters()).device)
    message = None
    if avail is not None and one * procs > avail:
        what = "--reconstruct none" + (" and --rd-distortion magnitude" if _curves_reconstructed(config) else "")
        each = f" ({procs} processes on this machine, {one / GIB:.1f} GiB each)" if procs > 1 else ""
        fewer = ", fewer processes per machine" if procs > 1 else ""
        message = (f"layer {name!r} has {d:,} input features{f' in {g} groups' if g > 1 else ''}: its Hessians "
                   f"need about {one * procs / GIB:.1f} GiB{each}, {avail / GIB:.1f} GiB of {where} is "
                   f"available; run on a machine with more memory{fewer}, or use {what}")
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        message = next((m for m in gather_object([message]) if m), None)
    if message:
        raise ConfigError(message)


def allocation_key(v: dict, layers) -> tuple:
    """The per-layer sparsities of a variant: SparseGPT's result depends on them only (it picks its own mask)."""
    return tuple(round(v["target_layers"][layer.name], 12) for layer in layers)


def statistics_key(v: dict, layers) -> tuple | str:
    """Where a variant's BatchNorm re-estimation is cached (:class:`~hf_mixmatch.bn_recalibrate.BatchNormRecalibrator`):
    its reconstruction (one per allocation, whatever the signal) or its own masks (its id)."""
    return ("sparsegpt", allocation_key(v, layers)) if v.get("reconstructed") else v["id"]


def _curves_reconstructed(config) -> bool:
    """Do the run's curve strategies allocate against reconstruction-aware curves (what SparseGPT then pays)?"""
    return config.ranges == "rd" and config.rd_distortion == "sparsegpt"


def candidates(unique: list[dict], config, layers) -> list[str]:
    """The variants to reconstruct, in order:

    1. the one-shot rule (:func:`reconstruct.reconstruction_candidates`: the first ``reconstruct_depth``
       non-dominated layers by masked accuracy, among the variants racing kept);
    2. with reconstruction-aware curves, every curve-strategy variant, raced out or not: those allocations are
       built for reconstruction (least SparseGPT distortion at their sparsity), so their *masked* accuracy,
       which rule 1 and racing judge by, says little about them (on the Fashion-MNIST ResNet, RD's allocation
       at 95% sparsity masks to 52–57% but reconstructs to 87%);
    3. every variant whose allocation equals one of those: SparseGPT ignores the signal, so it is the same model
       at no extra solve, and a masked twin must not compete against its own reconstruction on selection noise.
    """
    from .reconstruct import reconstruction_candidates
    from .strategies import CURVE_STRATEGIES

    out = reconstruction_candidates([v for v in unique if not v.get("dropped_by")], config.reconstruct_depth)
    if _curves_reconstructed(config):
        out += [v["id"] for v in unique if v.get("strategy") in CURVE_STRATEGIES and v["id"] not in out]
    keys = {allocation_key(v, layers) for v in unique if v["id"] in out}
    return out + [v["id"] for v in unique if v["id"] not in out and allocation_key(v, layers) in keys]


def reconstruct_candidates(config, measurer: Measurer, layers, scores, variants, unique,
                            data) -> tuple[dict, list[str]]:
    """Reconstruct the one-shot candidates (their masked numbers kept under ``"masked"``) and choose the front again.

    Like the one-shot variants, candidates are measured on the selection data (``data.select``, else the
    evaluation split); the front is chosen there, and with separate selection data every front variant is then
    measured on the whole evaluation split (its selection numbers kept under ``"select"``)."""
    from tqdm.auto import tqdm

    acc = measurer.accelerator
    select = getattr(data, "select", None)
    chooser = select if select is not None else data.eval
    chooser_split = (data.select_split or "select") if select is not None else data.eval_split
    for v in unique:  # back to the selection basis: the front is chosen there
        if "select" in v:
            v.update(v.pop("select"))
    cands = candidates(unique, config, layers)
    apply = reconstructor(config, data, acc)
    by_id = {v["id"]: v for v in unique}
    done: dict[tuple, dict] = {}  # SparseGPT picks its own mask: one allocation, one result whatever the signal
    for vid in tqdm(cands, desc="reconstructing", unit="variant", disable=not (config.progress and acc.is_main_process)):
        v = by_id[vid]
        key = allocation_key(v, layers)
        if key not in done:
            done[key] = measurer.measure(v["target_layers"], None, chooser, apply=apply, key=("sparsegpt", key))
        m = done[key]
        # the masked numbers (and a racing verdict on them) move under "masked": the reconstruction is measured
        # on the whole selection data and competes for the front afresh
        v["masked"] = {k: v.pop(k) if k == "dropped_by" else v[k]
                       for k in ("accuracy", "top5", "sparsity", "samples", "split", "dropped_by") if k in v}
        v.update(accuracy=m["accuracy"], top5=m["top5"], sparsity=m["sparsity"], layers=m["layers"],
                 samples=m["samples"], split=chooser_split, reconstructed=True,
                 **{k: m[k] for k in ("bn_recalibrated",) if k in m})
    front = pareto_front([v for v in unique if not v.get("dropped_by")])
    if select is not None:
        for vid in front:
            v = by_id[vid]
            full = (measurer.measure(v["target_layers"], None, data.eval, apply=apply, key=statistics_key(v, layers))
                    if v.get("reconstructed")
                    else measurer.measure(v["target_layers"], scores[v["signal"]], data.eval, key=vid))
            v["select"] = {k: v[k] for k in ("accuracy", "top5", "samples", "split")}
            v.update(accuracy=full["accuracy"], top5=full["top5"], samples=full["samples"], split=data.eval_split)
    keys = ("accuracy", "top5", "sparsity", "layers", "masked", "reconstructed", "samples", "split", "select",
            "dropped_by", "bn_recalibrated")
    for v in variants:  # strategies that gave the same masks share the numbers
        src = by_id.get(v.get("same_as"))
        if src is not None:
            v.update({k: src[k] for k in keys if k in src})
            for k in set(keys) - set(src):
                v.pop(k, None)
    info = {"method": config.reconstruct, "settings": settings_of(config).to_dict(),
            "rule": f"one-shot variants on the first {config.reconstruct_depth} non-dominated layers "
                    f"(chosen on `{chooser_split}`)" + (", the curve strategies' variants" if _curves_reconstructed(config)
                                                        else "") + ", and every variant with the allocation of one",
            "candidates": cands, "reconstructions": len(done)}
    return info, front
