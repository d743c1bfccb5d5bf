"""Histograms on the shared power-of-two grid (``manifests.grid_histogram``): parts counted
apart add up to exactly what numpy counts over all their values, on the finest grid that fits."""

from __future__ import annotations

import numpy as np
import pytest

from manifests.grid_histogram import (
    GRID_BINS,
    GridHistogram,
    column_grids,
    drawable,
    grid_exponent,
)


def _parts(rng: np.random.Generator, trial: int) -> list[np.ndarray]:
    scale = 10.0 ** rng.integers(-6, 9)
    parts = [
        rng.normal(rng.normal() * scale, scale * rng.random() + 1e-9, rng.integers(1, 400))
        for _ in range(rng.integers(1, 6))
    ]
    if trial % 5 == 0:  # a part of one value (all the same width, say)
        parts.append(np.full(3, parts[0][0]))
    if trial % 7 == 0:
        parts.append(np.zeros(2))
    if trial % 4 == 0:  # lone values far apart, each on the finest grid it has
        parts += [np.full(2, rng.normal() * scale), np.full(1, rng.normal() * scale * 1e6)]
    if trial % 3 == 0:  # integers: values fall on bin edges
        parts = [np.round(p) for p in parts]
    return parts


@pytest.mark.parametrize("seed", range(4))
def test_parts_add_up_to_numpy_over_all_values(seed):
    rng = np.random.default_rng(seed)
    for trial in range(60):
        parts = _parts(rng, trial)
        kept = [rng.random(len(p)) < 0.4 for p in parts]
        total = None
        for p, k in zip(parts, kept, strict=True):
            h = GridHistogram.from_json(GridHistogram.of(p, k).to_json())  # as through a footer
            total = h if total is None else total + h
        v, k = np.concatenate(parts), np.concatenate(kept)
        edges = total.edges()
        assert total.bins <= GRID_BINS
        assert total.kept.tolist() == np.histogram(v[k], edges)[0].tolist()
        assert total.other.tolist() == np.histogram(v[~k], edges)[0].tolist()
        # the finest grid the whole range fits: as if counted in one piece
        assert total.e == grid_exponent(float(v.min()), float(v.max()))
        one = GridHistogram.of(v, k)
        assert (one.e, one.i0, one.kept.tolist()) == (total.e, total.i0, total.kept.tolist())


def test_the_grid_is_the_finest_that_fits():
    for lo, hi in [(0.0, 1.0), (-3.0, 1000.0), (30.0, 64.0), (1e-9, 2e-9), (-1e308, 1e308)]:
        e = grid_exponent(lo, hi)
        span = int(np.floor(np.ldexp(hi, -e)) - np.floor(np.ldexp(lo, -e))) + 1
        finer = int(np.floor(np.ldexp(hi, 1 - e)) - np.floor(np.ldexp(lo, 1 - e))) + 1
        assert span <= GRID_BINS < finer, (lo, hi)
    assert grid_exponent(30, 64) == 0  # whole pixels: one bin a width


def test_coarsening_is_exact_for_negative_bins_and_long_shifts():
    h = GridHistogram(0, -5, np.array([1, 2, 3, 4, 5, 6]), np.zeros(6, dtype=np.int64))
    c = h.coarsen(1)  # bins -5..0 -> -3..0: [-6,-4) gets -5; [-4,-2) -4,-3; [-2,0) -2,-1; [0,2) 0
    assert (c.e, c.i0, c.kept.tolist()) == (1, -3, [1, 5, 9, 6])
    far = h.coarsen(200)  # past numpy's 63-bit shifts: all of it in bin -1 (and 0)
    assert (far.i0, far.kept.tolist()) == (-1, [15, 6])


def test_log_form_only_for_positive_columns():
    kept = np.array([True, False, True])
    assert set(column_grids(np.array([1.0, 10.0, 1000.0]), kept)) == {"lin", "log"}
    assert set(column_grids(np.array([0.0, 10.0, 1000.0]), kept)) == {"lin"}
    assert column_grids(np.array([np.nan, np.inf, -np.inf]), kept) == {}
    g = column_grids(np.array([1.0, np.nan, 1000.0]), kept)["log"]  # log2: 0 .. ~9.97
    assert g.kept.sum() == 2 and g.other.sum() == 0  # the NaN (not kept) is not counted


def test_a_lone_value_is_widened_to_draw():
    for x in (640.0, -3.5, 0.0, 1e-7):
        h = drawable(GridHistogram.of(np.full(4, x), np.ones(4, dtype=bool)))
        lo, hi = h.edges()
        assert h.kept.tolist() == [4]
        assert lo <= x < hi and hi - lo >= (abs(x) / 64 if x else 1)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"e": 0, "i0": 0, "kept": [1]},
        {"e": 0.5, "i0": 0, "kept": [1], "other": [0]},
        {"e": 0, "i0": 0, "kept": [1, 2], "other": [0]},
        {"e": 0, "i0": 0, "kept": [], "other": []},
        {"e": 0, "i0": 0, "kept": [1.5], "other": [0]},
        {"e": 0, "i0": 0, "kept": ["1"], "other": [0]},
        {"e": 0, "i0": 0, "kept": [[1]], "other": [0]},
        {"e": 0, "i0": 0, "kept": [2**62], "other": [0]},
        {"e": 0, "i0": 0, "kept": [-1], "other": [0]},
        {"e": 0, "i0": 0, "kept": [2**70], "other": [0]},
        {"e": 0, "i0": 2**61, "kept": [1], "other": [0]},
        {"e": 5000, "i0": 0, "kept": [1], "other": [0]},
        {"e": 0, "i0": 0, "kept": [1] * (GRID_BINS + 1), "other": [0] * (GRID_BINS + 1)},
    ],
)
def test_from_json_refuses_what_is_not_a_grid(bad):
    with pytest.raises(ValueError):
        GridHistogram.from_json(bad)
