"""Top-1 / top-5 accuracy at throughput, exact across processes.

- Batches are read whole (``dataset.get_batch(indices)``, or tensor slices of a ``TensorDataset``), never
  collated sample by sample; evaluation has its own batch size, chosen for throughput (``"auto"``).
- Forward passes run under ``torch.no_grad()`` (not ``inference_mode``: inference tensors cached inside a
  model break later gradient passes) and the run's precision (``precision.autocast``).
- Per-image correctness (:class:`Hits`) is returned in sample order: racing pairs variants image by image.
  Across processes each one takes a contiguous block of the requested images and the blocks are gathered
  back in order with the padding dropped (``gather_for_metrics`` semantics), so N processes = 1 process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import TensorDataset, default_collate
from tqdm.auto import tqdm

from .models import logits as default_forward
from .precision import autocast, to_device, wants_channels_last

EVAL_BATCH_CANDIDATES = (64, 128, 256, 512)
DEFAULT_EVAL_BATCH_SIZE = 256  # for callers that evaluate once and do not probe


@dataclass
class Hits:
    """Per-image correctness in sample order: ``top1[i]`` / ``top5[i]`` (None: fewer than 5 classes)."""

    top1: torch.Tensor
    top5: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.top1.numel())

    def cat(self, other: "Hits") -> "Hits":
        top5 = None if self.top5 is None or other.top5 is None else torch.cat([self.top5, other.top5])
        return Hits(torch.cat([self.top1, other.top1]), top5)

    def metrics(self) -> dict[str, float | int | None]:
        """``{"accuracy": top-1, "top5": top-5 or None, "samples": n}``."""
        n = len(self)
        if n == 0:
            return {"accuracy": 0.0, "top5": None, "samples": 0}
        top5 = None if self.top5 is None else float(self.top5.float().mean())
        return {"accuracy": float(self.top1.float().mean()), "top5": top5, "samples": n}


def read_batch(dataset, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(X[N,C,H,W], Y[N])``: ``dataset.get_batch`` when it has one, tensor slices of a
    ``TensorDataset`` (a view for a contiguous ``range``), else the default collate of single samples."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    if isinstance(dataset, TensorDataset):
        if isinstance(indices, range) and indices.step == 1:
            return tuple(t[indices.start : indices.stop] for t in dataset.tensors)  # type: ignore[return-value]
        idx = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long)
        return tuple(t[idx] for t in dataset.tensors)  # type: ignore[return-value]
    return default_collate([dataset[int(i)] for i in indices])


def batch_iter(dataset, indices: Sequence[int] | None, batch_size: int):
    """Yield ``(X, Y)`` batches of ``batch_size`` over ``indices`` (default: the whole dataset, in order)."""
    indices = range(len(dataset)) if indices is None else indices
    for s in range(0, len(indices), batch_size):
        yield read_batch(dataset, indices[s : s + batch_size])


class BatchSizeProbe:
    """Batch size and input layout for one pass, timed on its first batches. With more than one ``layouts``
    (NHWC inputs for a convolutional model on the CPU: faster for most, slower for some), the smallest size is
    first timed in each layout over ``LAYOUT_IMAGES`` images after an untimed warm-up batch, and the faster
    layout is kept; the other layouts are timed on *replayed* batches (the first images again, their results
    discarded), so a split of two batches still gets its layout measured. Then each larger candidate size gets
    one untimed warm-up batch (a new shape builds new kernels) and is timed over ``PROBE_IMAGES`` images or one
    batch; probing stops once a size is >25% slower per image than the best so far. The fastest per image is
    used. A short batch is not a measurement (small splits probe less)."""

    PROBE_IMAGES = 256
    LAYOUT_IMAGES = 64

    def __init__(self, candidates: Sequence[int] = EVAL_BATCH_CANDIDATES, layouts: Sequence[bool] = (False,)):
        cands = sorted({int(c) for c in candidates})
        self.smallest, self.layouts = cands[0], tuple(dict.fromkeys(layouts))
        self.per_image: dict[tuple[int, bool], float] = {}
        self._sum: dict[tuple[int, bool], list[float]] = {}
        if len(self.layouts) > 1:
            self._sizes_left = cands[1:]
            self.plan = [(self.smallest, t, lay) for lay in (*self.layouts[1:], self.layouts[0])
                         for t in self._passes(self.smallest, self.LAYOUT_IMAGES)]
            self._replays = len(self.plan) - len(self._passes(self.smallest, self.LAYOUT_IMAGES))
        else:
            self._sizes_left, self._replays = [], 0
            self.plan = self._size_plan(cands, self.layouts[0])

    def _passes(self, size: int, images: int) -> tuple[bool, ...]:
        return (False, *[True] * max(1, math.ceil(images / size)))

    def _size_plan(self, sizes: Sequence[int], layout: bool) -> list[tuple[int, bool, bool]]:
        return [(c, t, layout) for c in sizes for t in self._passes(c, self.PROBE_IMAGES)]

    @property
    def best(self) -> tuple[int, bool]:
        """(batch size, NHWC inputs) of the fastest per image measured so far."""
        return min(self.per_image, key=self.per_image.get) if self.per_image else (self.smallest, self.layouts[0])

    @property
    def choice(self) -> int:
        return self.best[0]

    @property
    def channels_last(self) -> bool:
        return self.best[1]

    def next(self) -> tuple[int, bool]:
        return self.plan[0][::2] if self.plan else self.best

    @property
    def replay(self) -> bool:
        """Is the next batch a replay (timed only: the images are evaluated again by a later batch)?"""
        return self._replays > 0 and bool(self.plan)

    def record(self, size: int, n: int, seconds: float) -> None:
        if not self.plan:
            return
        _, timed, nhwc = self.plan.pop(0)
        self._replays = max(0, self._replays - 1)
        if n < size:  # the split ends here
            if (self.smallest, self.layouts[0]) not in self.per_image:  # layouts not compared: use the first
                self.per_image = {k: v for k, v in self.per_image.items() if k[1] == self.layouts[0]}
            self.plan, self._sizes_left, self._replays = [], [], 0
            return
        if not timed:
            return
        acc = self._sum.setdefault((size, nhwc), [0.0, 0])
        acc[0] += seconds
        acc[1] += n
        if self.plan and self.plan[0] == (size, True, nhwc):
            return  # more batches of this size to time
        self.per_image[(size, nhwc)] = acc[0] / acc[1]
        layouts_done = not self._sizes_left and not any(e[0] == self.smallest for e in self.plan)
        if layouts_done and self.per_image[(size, nhwc)] > 1.25 * min(self.per_image.values()):
            self.plan = []  # larger sizes are not worth trying
        if not self.plan and self._sizes_left:
            self.plan, self._sizes_left = self._size_plan(self._sizes_left, self.channels_last), []


class _Fixed:
    replay = False

    def __init__(self, size: int, channels_last: bool):
        self.size, self.channels_last = int(size), bool(channels_last)

    def next(self) -> tuple[int, bool]:
        return self.size, self.channels_last

    def record(self, size: int, n: int, seconds: float) -> None:
        pass


def _shards(n: int, world: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` blocks of ``ceil(n / world)`` positions, one per process."""
    m = math.ceil(n / world) if n else 0
    return [(min(r * m, n), min((r + 1) * m, n)) for r in range(world)]


@torch.no_grad()
def _local_hits(model, dataset, indices, sizes, *, device, precision, forward, progress, desc):
    """``(n, 2)`` int32 rows [top-1 hit, top-5 hit] for ``indices`` on this process and the k of top-k
    (None without images); ``sizes`` gives each batch's size and layout and is told how long it took."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time  # CPU: robust to a busy machine
    rows, pos, k = [], 0, None
    with tqdm(total=len(indices), desc=desc, unit="img", leave=False, disable=not progress) as bar:
        while pos < len(indices):
            size, channels_last = sizes.next()
            replay = sizes.replay
            chunk = indices[pos : pos + size]
            t0 = clock()
            x, y = read_batch(dataset, chunk)
            with autocast(precision, device):
                out = forward(model, to_device(x, device, channels_last=channels_last))
            k = min(5, out.shape[-1])
            hit = out.topk(k, dim=-1).indices == y.to(device, non_blocking=True).view(-1, 1)
            rows.append(torch.stack([hit[:, 0], hit.any(dim=-1) if k == 5 else hit[:, 0]], dim=1).to(torch.int32))
            if getattr(sizes, "plan", None) and device.type == "cuda":  # this batch is timed
                torch.cuda.synchronize(device)
            sizes.record(size, len(chunk), clock() - t0)
            if replay:  # a layout timed on these images: they are evaluated by the next batch
                rows.pop()
                continue
            pos += len(chunk)
            bar.update(len(chunk))
    if not rows:
        return torch.zeros(0, 2, dtype=torch.int32, device=device), k
    return torch.cat(rows), k


def predict_hits(
    model: torch.nn.Module,
    dataset,
    indices: Sequence[int] | None = None,
    *,
    batch_size: int | BatchSizeProbe = DEFAULT_EVAL_BATCH_SIZE,
    accelerator=None,
    precision: str = "fp32",
    forward: Callable = default_forward,
    progress: bool = False,
    desc: str = "evaluate",
    channels_last: bool | None = None,
) -> Hits:
    """Per-image correctness of ``model`` on ``dataset[indices]`` (default: all, in order). ``channels_last``:
    feed NHWC batches (None: on CUDA for a convolutional model, :func:`precision.wants_channels_last`)."""
    indices = range(len(dataset)) if indices is None else indices
    n = len(indices)
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    start, stop = _shards(n, world)[rank]
    device = next(model.parameters()).device
    if not isinstance(batch_size, BatchSizeProbe):
        nhwc = wants_channels_last(model, device) if channels_last is None else channels_last
        batch_size = _Fixed(batch_size, nhwc)
    sizes = batch_size
    was_training = model.training
    model.eval()
    is_main = accelerator is None or accelerator.is_main_process
    try:
        local, k = _local_hits(model, dataset, indices[start:stop], sizes, device=device, precision=precision,
                               forward=forward, progress=progress and is_main, desc=desc)
    finally:
        model.train(was_training)
    has_top5 = -1 if k is None else int(k == 5)
    if world > 1:
        m = math.ceil(n / world)
        padded = torch.zeros(m + 1, 2, dtype=torch.int32, device=device)
        padded[: len(local)] = local
        padded[m, 0] = has_top5 + 1  # 0: this process saw no image, 1: < 5 classes, 2: top-5 defined
        gathered = accelerator.gather(padded).view(world, m + 1, 2).cpu()
        has_top5 = int(gathered[:, m, 0].max()) - 1
        local = torch.cat([gathered[r, : b - a] for r, (a, b) in enumerate(_shards(n, world))])
    local = local.cpu().bool()
    return Hits(local[:, 0].clone(), local[:, 1].clone() if has_top5 == 1 else None)


def evaluate(
    model: torch.nn.Module,
    dataset,
    *,
    batch_size: int | BatchSizeProbe = DEFAULT_EVAL_BATCH_SIZE,
    indices: Sequence[int] | None = None,
    accelerator=None,
    precision: str = "fp32",
    forward: Callable = default_forward,
    progress: bool = False,
    desc: str = "evaluate",
    channels_last: bool | None = None,
) -> dict[str, float | int | None]:
    """``{"accuracy": top-1, "top5": top-5 or None (fewer than 5 classes), "samples": n}``."""
    return predict_hits(model, dataset, indices, batch_size=batch_size, accelerator=accelerator, precision=precision,
                        forward=forward, progress=progress, desc=desc, channels_last=channels_last).metrics()


def agree_batch_size(probe: BatchSizeProbe, accelerator=None) -> tuple[int, bool]:
    """The probe's (batch size, NHWC inputs) on the main process, shared with every process (so all run the
    same batches)."""
    choice = [probe.best]
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(choice, from_process=0)
    return int(choice[0][0]), bool(choice[0][1])
