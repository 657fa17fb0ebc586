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
1963, section 6).

That bound ignores that the split is finite: once a large part of it has been seen, the unseen rest can
change little. A second test uses it (finite-population correction). With n of the N images seen, K the
split's discordant images (unknown): (1) an upper confidence limit K_up from the seen discordant fraction
(Chernoff-KL on the lower tail of k, which is hypergeometric given K, hence dominated as above), capped by
k + N - n; (2) Serfling's inequality (1974) for the draw of k of the K discordant images,

    P(wins/k >= 1/2 + t) <= exp(-2 k t^2 / (1 - (k - 1) / K)),   increasing in K, so evaluated at K_up.

``b`` beats ``a`` when the sign test holds at delta_test / 2 or both parts of the second test hold at
delta_test / 4 each (union bound: at most delta_test in all), or when wins - losses > N - n (certain: the
unseen images cannot turn it). ``delta_test = delta / (decision rounds x P)``, P the number of ordered pairs
(a, b) with sparsity(b) >= sparsity(a), fixed by the allocations (Bonferroni over every test the race can
make): with probability >= 1 - delta no wrong drop happens, and since dominance is transitive no variant of the
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
    """Round sizes ``first, first*growth, ...`` while at most ``last`` of the split, then the whole split;
    ``delta``: family-wise error of all drops."""

    first: int = 256
    growth: float = 1.5
    delta: float = 0.01
    last: float = 0.75

    def __post_init__(self) -> None:
        if self.first < 2 or self.growth <= 1.0 or not 0.0 < self.delta < 1.0 or not 0.0 < self.last < 1.0:
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
                "bound": None if self.mode == "full" else "sign test on discordant images (Chernoff-KL tail) or "
                                                          "its finite-population form (Serfling), Bonferroni over "
                                                          "pairs x rounds",
                "images_evaluated": seen, "images_if_full": n_total * len(self.lanes),
                "dropped": sum(lane.dropped_by is not None for lane in self.lanes.values())}


def schedule(n_total: int, config: RaceConfig) -> list[int]:
    """Cumulative sample sizes of the rounds; the last is the whole split. Partial rounds cover at most
    ``config.last`` of the split, and a split under twice the first round gets one round (= full evaluation):
    a first round that leaves less than half of the split unseen is not worth its overhead."""
    if config.first > n_total / 2:
        return [n_total]
    sizes, n = [], config.first
    while n <= n_total * config.last:
        sizes.append(n)
        n = math.ceil(n * config.growth)
    return sizes + [n_total]


def sample_order(n_total: int, seed: int) -> list[int]:
    """The seeded order in which every variant sees the split (identical on every process)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g).tolist()


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats, elementwise."""
    return torch.xlogy(p, p / q) + torch.xlogy(1.0 - p, (1.0 - p) / (1.0 - q))


def kl_upper(p_hat: torch.Tensor, n: torch.Tensor | int, log_term: float) -> torch.Tensor:
    """The largest q >= p_hat with n * KL(p_hat || q) <= log_term, elementwise: an upper confidence limit on a
    fraction (Chernoff-KL on the lower tail of its estimate, level exp(-log_term))."""
    p_hat = torch.as_tensor(p_hat, dtype=torch.float64)
    lo, hi = p_hat.clone(), torch.ones_like(p_hat)
    for _ in range(50):
        mid = (lo + hi) / 2
        out = n * _kl(p_hat, mid) > log_term
        lo, hi = torch.where(out, lo, mid), torch.where(out, mid, hi)
    return hi


def significant(wins, losses, n, n_total: int | None, delta: float) -> torch.Tensor:
    """Elementwise: do ``wins`` (images only b got right) against ``losses`` (only a), among ``n`` images drawn
    without replacement from a split of ``n_total``, show that b is more accurate than a on the whole split with
    confidence ``1 - delta``? ``n_total=None``: the sign test alone at ``delta`` (see the module docstring)."""
    w = torch.as_tensor(wins, dtype=torch.float64)
    l = torch.as_tensor(losses, dtype=torch.float64)
    k = w + l
    t = w / k.clamp(min=1.0) - 0.5
    sign = k * _kl(t + 0.5, torch.tensor(0.5, dtype=torch.float64))
    if n_total is None:
        return (w > l) & (sign >= math.log(1.0 / delta))
    n = torch.as_tensor(n, dtype=torch.float64)
    log4 = math.log(4.0 / delta)
    k_up = torch.floor(kl_upper(k / n, n, log4) * n_total).minimum(k + n_total - n).maximum(k)
    serfling = 2.0 * k * t * t / (1.0 - (k - 1.0) / k_up.clamp(min=1.0))
    certain = w - l > n_total - n  # the unseen images cannot turn it
    return (w > l) & (certain | (sign >= math.log(2.0 / delta)) | (serfling >= log4))


def beats(b: torch.Tensor, a: torch.Tensor, delta: float, n_total: int | None = None) -> bool:
    """True when per-image correctness ``b`` is more accurate than ``a`` on the whole split with confidence
    ``1 - delta``. ``n_total``: the size of the split the images were drawn from without replacement (enables
    the finite-population test); None: the sign test alone."""
    return bool(significant(int((b & ~a).sum()), int((a & ~b).sum()), len(a), n_total, delta))


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
            _drop_dominated(alive, per_test, n_total)
    bar.close()
    return RaceLog(mode=mode, rounds=rounds, delta=config.delta if mode == "racing" else None, lanes=lanes)


def dominators(hits: torch.Tensor, sparsity: Sequence[float], n_total: int | None, delta: float) -> list[int | None]:
    """For each row of ``hits`` (variants x images, per-image correctness on the same images), the first
    variant of equal or higher sparsity that beats it with confidence (:func:`significant`), or None. Every
    pair is tested at once."""
    h = hits.to(torch.float64)
    wins = h @ (1.0 - h).T  # [b, a]: images only b got right
    sp = torch.as_tensor(list(sparsity), dtype=torch.float64)
    eligible = (sp[:, None] >= sp[None, :]) & ~torch.eye(len(sp), dtype=torch.bool)
    beaten = significant(wins, wins.T, h.shape[1], n_total, delta) & eligible
    first = [beaten[:, j].nonzero() for j in range(len(sp))]
    return [int(f[0]) if len(f) else None for f in first]


def _drop_dominated(alive: list[Lane], delta: float, n_total: int) -> None:
    """Mark each lane beaten with confidence by a lane of equal or higher sparsity (paired, same images): the
    first such lane in race order is recorded."""
    hits = torch.stack([lane.hits.top1 for lane in alive])
    for a, by in zip(alive, dominators(hits, [lane.sparsity for lane in alive], n_total, delta)):
        if by is not None:
            a.dropped_by = alive[by].id
