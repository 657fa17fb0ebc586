"""Racing the variants: evaluate less, keep the same front.

Every variant is evaluated on a seeded, growing sample of the split (the same images in the same order for
all, so comparisons are paired). After each round, variant ``a`` is dropped when some variant ``b`` with
equal or higher sparsity is more accurate *on the whole split* with confidence:

    LB(mean of d) > 0,   d_i = hit_b(i) - hit_a(i) in {-1, 0, 1} on the n images seen so far,

where LB is a lower confidence bound for the mean of ``d`` over the whole split (N images) from a sample
drawn without replacement: the larger of Serfling's Hoeffding bound (1974) and Bardenet & Maillard's
empirical Bernstein-Serfling bound (2015, Thm 3), each at half the error budget. The budget of one test is
``delta / (decision rounds x V x (V - 1))`` (Bonferroni over every ordered pair and round), so with
probability >= 1 - delta no variant of the whole-split front is ever dropped. Dominance is transitive, so a
dropped variant is off the front even when the one that beat it is dropped later. Survivors are evaluated on
the whole split; the front is chosen among them.

Without racing (``mode="full"``) the same code evaluates every variant once on the whole split, in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .evaluate import Hits

EVAL_MODES = ("full", "racing")
KAPPA = 7.0 / 3.0 + 3.0 / math.sqrt(2.0)  # Bardenet & Maillard (2015), Theorem 3


@dataclass(frozen=True)
class RaceConfig:
    """Round sizes ``first, first*growth, ...`` up to the whole split; ``delta``: family-wise error of all drops."""

    first: int = 256
    growth: float = 2.0
    delta: float = 0.01

    def __post_init__(self) -> None:
        if self.first < 2 or self.growth <= 1.0 or not 0.0 < self.delta < 1.0:
            raise ValueError(f"RaceConfig needs first >= 2, growth > 1, 0 < delta < 1, got {self}")


@dataclass
class Lane:
    """One variant in the race: what it scored on the images it saw, and what (if anything) beat it."""

    id: str
    sparsity: float = float("nan")
    hits: Hits | None = None
    dropped_by: str | None = None

    @property
    def samples(self) -> int:
        return 0 if self.hits is None else len(self.hits)


@dataclass
class RaceLog:
    mode: str
    rounds: list[int]
    delta: float | None
    lanes: dict[str, Lane] = field(default_factory=dict)

    @property
    def survivors(self) -> list[str]:
        return [k for k, lane in self.lanes.items() if lane.dropped_by is None]

    def to_dict(self) -> dict:
        seen = sum(lane.samples for lane in self.lanes.values())
        n_total = self.rounds[-1] if self.rounds else 0
        return {"mode": self.mode, "rounds": self.rounds, "delta": self.delta,
                "bound": None if self.mode == "full" else "max(Hoeffding-Serfling, empirical Bernstein-Serfling), "
                                                          "paired per-image top-1, Bonferroni over pairs x rounds",
                "images_evaluated": seen, "images_if_full": n_total * len(self.lanes),
                "dropped": sum(lane.dropped_by is not None for lane in self.lanes.values())}


def schedule(n_total: int, config: RaceConfig) -> list[int]:
    """Cumulative sample sizes of the rounds; the last is the whole split. A round that would leave less than
    half of the split unseen is not worth its overhead: small splits get one round (= full evaluation)."""
    sizes, n = [], config.first
    while n <= n_total / 2:
        sizes.append(n)
        n = math.ceil(n * config.growth)
    return sizes + [n_total]


def sample_order(n_total: int, seed: int) -> list[int]:
    """The seeded order in which every variant sees the split (identical on every process)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g).tolist()


def lower_bound(d: torch.Tensor, n_total: int, delta: float) -> float:
    """A (1 - delta) lower confidence bound on the whole-split mean of ``d`` (values in [-1, 1]) from its first
    ``n`` values, a uniform sample without replacement of the ``n_total`` split values."""
    n = int(d.numel())
    if n < 2:
        return -1.0
    d = d.double()
    mean = float(d.mean())
    f = (n - 1) / n_total
    # Serfling (1974): P(mean - mu >= t) <= exp(-2 n t^2 / ((1 - f) (b - a)^2)), b - a = 2
    t_hoeffding = 2.0 * math.sqrt(max(1.0 - f, 0.0) * math.log(2.0 / delta) / (2.0 * n))
    # Bardenet & Maillard (2015) Thm 3 (probability 1 - 5 delta0, here delta0 = delta / 10)
    rho = (1.0 - f) if n <= n_total / 2 else (1.0 - n / n_total) * (1.0 + 1.0 / n)
    log_term = math.log(10.0 / delta)
    sigma = float(d.std(unbiased=False))
    t_bernstein = sigma * math.sqrt(2.0 * max(rho, 0.0) * log_term / n) + KAPPA * 2.0 * log_term / n
    return mean - min(t_hoeffding, t_bernstein)


def race(
    ids: Sequence[str],
    measure: Callable[[str, Sequence[int]], tuple[float, Hits]],
    n_total: int,
    *,
    mode: str = "racing",
    config: RaceConfig = RaceConfig(),
    seed: int = 0,
    progress: bool = False,
) -> RaceLog:
    """Evaluate the variants ``ids`` with ``measure(id, indices) -> (sparsity, hits)`` until every survivor has
    seen all ``n_total`` images. ``mode="full"``: one round over the whole split, nothing dropped."""
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    rounds = schedule(n_total, config) if mode == "racing" else [n_total]
    order: Sequence[int] = sample_order(n_total, seed) if len(rounds) > 1 else range(n_total)
    lanes = {vid: Lane(vid) for vid in ids}
    pairs = len(lanes) * (len(lanes) - 1)
    per_test = config.delta / max(1, (len(rounds) - 1) * pairs)
    prev = 0
    bar = tqdm(desc="variants (images evaluated)", unit="img", leave=False, disable=not progress)
    for n in rounds:
        alive = [lane for lane in lanes.values() if lane.dropped_by is None]
        new = order[prev:n]
        for lane in alive:
            lane.sparsity, hits = measure(lane.id, new)
            lane.hits = hits if lane.hits is None else lane.hits.cat(hits)
            bar.update(len(new))
        prev = n
        if n < n_total:
            _drop_dominated(alive, n_total, per_test)
    bar.close()
    return RaceLog(mode=mode, rounds=rounds, delta=config.delta if mode == "racing" else None, lanes=lanes)


def _drop_dominated(alive: list[Lane], n_total: int, delta: float) -> None:
    """Mark each lane beaten with confidence by a lane of equal or higher sparsity (paired, same images)."""
    for a in alive:
        for b in alive:
            if b is a or b.sparsity < a.sparsity:
                continue
            d = b.hits.top1.to(torch.int8) - a.hits.top1.to(torch.int8)
            if lower_bound(d, n_total, delta) > 0.0:
                a.dropped_by = b.id
                break
