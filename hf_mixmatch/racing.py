"""Racing the variants: evaluate less, keep the same front.

Every variant is evaluated on a seeded, growing sample of the split (the same images in the same order for
all, so comparisons are paired). After each round, variant ``a`` is dropped when a variant ``b`` with equal or
higher sparsity is more accurate *on the whole split* with confidence, by a one-sided sign test on the
images where exactly one of the two is right (McNemar's discordant pairs):

    wins = #{b right, a wrong},  losses = #{a right, b wrong},  k = wins + losses,  p = wins / k
    drop a  when  p > 1/2  and  k * KL(p || 1/2) >= ln(1 / delta_test)

Why it holds: the sample is drawn uniformly without replacement from the N images of the split, so given k,
the k discordant images seen are a uniform draw without replacement from the split's discordant images, and
``wins`` is hypergeometric. If ``b`` is not more accurate on the split, at most half of those favour ``b``, and
the Chernoff bound exp(-k KL(p || 1/2)) on the binomial tail also bounds the hypergeometric one (Hoeffding
1963, section 6). ``delta_test = delta / (decision rounds x P)``, P the number of ordered pairs (a, b) with
sparsity(b) >= sparsity(a), fixed by the allocations (Bonferroni over every test the race can make): with
probability >= 1 - delta no wrong drop happens, and since dominance is transitive no variant of the
whole-split front is ever dropped. Survivors are evaluated on the whole split; the front is chosen among them.

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


@dataclass(frozen=True)
class RaceConfig:
    """Round sizes ``first, first*growth, ...`` up to the whole split; ``delta``: family-wise error of all drops."""

    first: int = 256
    growth: float = 1.5
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
                "bound": None if self.mode == "full" else "sign test on discordant images (Chernoff-KL tail), "
                                                          "Bonferroni over pairs x rounds",
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


def _kl_half(p: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(1/2)) in nats."""
    return sum(x * math.log(2.0 * x) for x in (p, 1.0 - p) if x > 0.0)


def beats(b: torch.Tensor, a: torch.Tensor, delta: float) -> bool:
    """True when per-image correctness ``b`` is more accurate than ``a`` on the whole split with confidence
    ``1 - delta`` (sign test on the discordant images, Chernoff tail; see the module docstring)."""
    wins = int((b & ~a).sum())
    losses = int((a & ~b).sum())
    k = wins + losses
    return wins > losses and k * _kl_half(wins / k) >= math.log(1.0 / delta)


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
    per_test, prev = None, 0
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
            if per_test is None:  # sparsities are known after the first round, before any decision
                pairs = sum(a is not b and b.sparsity >= a.sparsity for a in alive for b in alive)
                per_test = config.delta / max(1, (len(rounds) - 1) * pairs)
            _drop_dominated(alive, per_test)
    bar.close()
    return RaceLog(mode=mode, rounds=rounds, delta=config.delta if mode == "racing" else None, lanes=lanes)


def _drop_dominated(alive: list[Lane], delta: float) -> None:
    """Mark each lane beaten with confidence by a lane of equal or higher sparsity (paired, same images)."""
    for a in alive:
        for b in alive:
            if b is a or b.sparsity < a.sparsity:
                continue
            if beats(b.hits.top1, a.hits.top1, delta):
                a.dropped_by = b.id
                break
