"""Claims are numbers or they are refused: the checks every reader of a card or recipe applies."""

from __future__ import annotations

import math

from .errors import ClaimError

# claim -> inclusive range; the shares are fractions of weights / of correct predictions
RANGES = {"sparsity": (0.0, 1.0), "accuracy": (0.0, 1.0), "top5": (0.0, 1.0), "dense_accuracy": (0.0, 1.0)}


def claim_number(value, name: str, where: str) -> float:
    """``value`` as a float within ``RANGES[name]``; :class:`ClaimError` naming the fix otherwise."""
    low, high = RANGES.get(name, (-math.inf, math.inf))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ClaimError(f"{where}: its {name} claim {value!r} is not a number: the card or recipe is damaged; "
                             "re-download or re-export it") from None
    else:
        number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ClaimError(f"{where}: its {name} claim {value!r} is not a number in [{low:g}, {high:g}]: the card or "
                         "recipe is damaged or untrue; re-download or re-export it")
    return number


def check_claims(claims: dict, where: str) -> dict:
    """``claims`` with every known numeric claim validated and turned into a float (None stays None)."""
    out = dict(claims)
    for name in RANGES:
        if out.get(name) is not None:
            out[name] = claim_number(out[name], name, where)
    return out
