"""bench/iterate.py: the paired comparisons it reports (rounds against the base, three rounds against one)."""

import math

import pytest
from bench_helpers import load_bench


def test_paired_differences_per_aspect_and_the_mean_of_the_three_with_their_standard_errors():
    bench = load_bench("iterate")
    base = {a: {"p1": 0.0, "p2": 0.5, "p3": 0.25} for a in bench.ASPECTS}
    tuned = {a: {"p1": 0.5, "p2": 0.5, "p3": 0.75} for a in bench.ASPECTS}
    tuned["spatial_relationship"] = {"p1": 0.0, "p2": 0.5, "p3": 0.25}  # no change on one aspect
    diffs = bench.paired(tuned, base)
    # binding: differences 0.5, 0, 0.5 -> mean 1/3, sample SD sqrt(1/12), SE sqrt(1/36) = 1/6
    assert diffs["attribute_binding"] == pytest.approx((1 / 3, 1 / 6))
    assert diffs["spatial_relationship"] == (0.0, 0.0)
    mean, se = diffs["mean of 3"]  # complex is reported but not part of the mean of the three reward aspects
    assert mean == pytest.approx((1 / 3 + 0 + 1 / 3) / 3)
    assert se == pytest.approx(math.sqrt(2 * (1 / 6) ** 2) / 3)
    assert bench.paired(base, base)["mean of 3"] == (0.0, 0.0)
