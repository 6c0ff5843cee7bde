"""Greedy degradation scheduling (paper Algorithm 2, App. B).

Given candidate severities c_0 < ... < c_{G-1} and a distance d(i, j) between the degradations at
candidates i and j, choose `budget` interior candidates so that the largest distance between
consecutive chosen severities is small: start from {c_0, c_{G-1}}, then `budget` times take the
adjacent pair with the largest distance and insert the candidate j strictly between them that
minimises max(d(a, j), d(j, b)). The paper leaves the split rule open; this minimax rule is the
one under which the result is locally optimal (moving any one point raises the maximum), and
for a distance |f(b) - f(a)| with monotone f it inserts the point closest to the midpoint in f.

The chosen severities are then placed at equally spaced t = k / (budget + 1), which is how the
official blur table is laid out (102 rows at t = k/101).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from diracbench.errors import UserError

# distance(i, js) -> d(c_i, c_j) for every j in js (a 1-D integer array)
DistanceFn = Callable[[int, np.ndarray], np.ndarray]


@dataclass
class GreedyResult:
    indices: np.ndarray  # (budget + 2,) chosen candidate indices, ascending, first 0 and last G-1
    iterations: list[dict]  # one record per inserted point (and iteration 0 for the start)

    @property
    def max_distance(self) -> np.ndarray:
        return np.array([rec["max_distance"] for rec in self.iterations])


def greedy_schedule(n_candidates: int, budget: int, distance: DistanceFn) -> GreedyResult:
    """Run the greedy insertion; `budget` interior points out of `n_candidates` candidates."""
    if n_candidates < 2:
        raise UserError(f"the greedy scheduler needs at least 2 candidate severities (got {n_candidates})")
    if budget < 0 or budget > n_candidates - 2:
        raise UserError(f"schedule budget {budget} must lie between 0 and grid_size - 2 = {n_candidates - 2}; raise grid_size or lower budget")
    last = n_candidates - 1
    segments: dict[tuple[int, int], float] = {(0, last): float(_checked(distance(0, np.array([last])), 1)[0])}
    iterations = [{"iteration": 0, "max_distance": segments[(0, last)], "split_lo": -1, "split_hi": -1, "inserted": -1, "d_left": np.nan, "d_right": np.nan}]
    for it in range(1, budget + 1):
        splittable = [(d, seg) for seg, d in segments.items() if seg[1] - seg[0] > 1]
        # Largest distance first; among equal distances the leftmost interval (deterministic).
        d_ab, (a, b) = max(splittable, key=lambda item: (item[0], -item[1][0]))
        js = np.arange(a + 1, b)
        d_left = _checked(distance(a, js), len(js))
        d_right = _checked(distance(b, js), len(js))
        k = int(np.argmin(np.maximum(d_left, d_right)))  # first minimiser on ties
        j = int(js[k])
        del segments[(a, b)]
        segments[(a, j)] = float(d_left[k])
        segments[(j, b)] = float(d_right[k])
        iterations.append({"iteration": it, "max_distance": max(segments.values()), "split_lo": a, "split_hi": b, "inserted": j, "d_left": float(d_left[k]), "d_right": float(d_right[k])})
    points = sorted({p for seg in segments for p in seg})
    return GreedyResult(np.asarray(points, dtype=np.int64), iterations)


def _checked(values: np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (n,):
        raise ValueError(f"distance returned {values.shape[0]} values for {n} pairs")
    if not np.all(np.isfinite(values)):
        raise ValueError("distance returned non-finite values")
    return values


def schedule_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, value) rows: the chosen severities at equally spaced t in [0, 1]."""
    values = np.asarray(values, dtype=np.float64)
    t = np.arange(len(values), dtype=np.float64) / (len(values) - 1)
    return t, values
