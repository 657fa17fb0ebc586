"""scripts/racing_policies.py's lower bounds on a constructed population."""

import math

import torch

from _scripts import load_script

from hf_mixmatch import racing

policies = load_script("racing_policies")


def test_oracle_stops_a_dominated_variant_at_its_first_significant_image():
    n = 400
    gen = torch.Generator().manual_seed(0)
    b = torch.ones(n, dtype=torch.bool)  # the sparser variant is right everywhere
    a = torch.rand(n, generator=gen) > 0.2  # the denser one is wrong on ~20%: dominated
    c = torch.ones(n, dtype=torch.bool)  # as sparse as b and as accurate: a tie nothing can drop
    hits = {"a": (0.5, a), "b": (0.6, b), "c": (0.6, c)}
    clair, front_only = policies.oracle(hits, delta=0.01)
    # sign test, no losses: k * ln 2 >= ln(100) first holds at the 7th discordant image in the racing order
    order = racing.sample_order(n, 0)
    need = math.ceil(math.log(100) / math.log(2))
    discordant = [i for i, j in enumerate(order) if not a[j]]
    stop_a = discordant[need - 1] + 1
    assert clair == (stop_a + n + n) / (3 * n)
    assert front_only == 1 / 3  # the front keeps one of two exact ties (b, c); a is dominated


def test_oracle_never_drops_a_variant_without_a_dominator():
    n = 100
    hits = {"dense": (0.2, torch.ones(n, dtype=torch.bool)), "sparse": (0.9, torch.zeros(n, dtype=torch.bool))}
    clair, front_only = policies.oracle(hits)
    assert clair == 1.0 and front_only == 1.0


def test_clairvoyant_finite_population_bound_stops_where_beats_first_holds():
    """The vectorised oracle agrees with the library's scalar test, image by image (a near tie the sign test
    alone never separates: b is right on 12 more images than a, 60 discordant in all)."""
    n = 300
    order = racing.sample_order(n, 0)
    a = torch.zeros(n, dtype=torch.bool)
    b = torch.zeros(n, dtype=torch.bool)
    b[torch.tensor(order[::5][:36])] = True
    a[torch.tensor(order[1::5][:24])] = True
    hits = {"a": (0.5, a), "b": (0.6, b)}
    clair_sign, _ = policies.oracle(hits, delta=0.01)
    clair_fpc, _ = policies.oracle(hits, delta=0.01, fpc=True)
    idx = torch.tensor(order)
    stop = next(m for m in range(1, n + 1) if racing.beats(b[idx[:m]], a[idx[:m]], 0.01, n))
    assert stop < n and clair_sign == 1.0
    assert clair_fpc == (stop + n) / (2 * n)
