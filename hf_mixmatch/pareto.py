"""The accuracy-sparsity Pareto front."""

from __future__ import annotations


def pareto_front(points: list[dict], *, x: str = "sparsity", y: str = "accuracy", key: str = "id") -> list[str]:
    """Ids of the points no other point beats on both ``x`` and ``y`` (both maximized), by ascending ``x``.

    A point is dominated when another has x >= and y >= with at least one strictly greater. Exact
    duplicates are both kept off the front except the first (stable).
    """
    ordered = sorted(points, key=lambda p: (-p[x], -p[y]))
    front, best_y = [], float("-inf")
    for p in ordered:
        if p[y] > best_y:
            front.append(p[key])
            best_y = p[y]
    return list(reversed(front))
