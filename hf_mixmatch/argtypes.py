"""argparse value types that refuse what a run could not use (``--seed -1``, ``--finetune-lr nan``, ...), so the
mistake is reported in one line before anything is loaded or written."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got '{text}'") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def int_at_least(low: int):
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {'> 0' if low == 1 else f'>= {low}'}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def float_in(low: float | None = None, high: float | None = None, *, open_low: bool = False):
    """A finite float in [low, high] (``open_low``: low excluded)."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if low is not None and (value < low or (open_low and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if open_low else '>='} {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_in(0.0, open_low=True)
non_negative_float = float_in(0.0)
fraction = float_in(0.0, 1.0)
