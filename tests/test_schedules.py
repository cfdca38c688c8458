"""The one cosine learning-rate schedule (`itercomp.schedules`), with worked numbers."""

from __future__ import annotations

import math

import pytest

from itercomp.schedules import cosine_factor


def test_warmup_then_cosine_to_zero():
    assert [cosine_factor(s, 10, warmup=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_factor(4, 10, warmup=4) == 1.0
    assert cosine_factor(7, 10, warmup=4) == pytest.approx(0.5)  # halfway through the decay
    assert cosine_factor(10, 10, warmup=4) == pytest.approx(0.0, abs=1e-12)
    assert cosine_factor(50, 10, warmup=4) == cosine_factor(10, 10, warmup=4)  # held after the end


def test_floor_and_no_warmup():
    assert cosine_factor(0, 100) == 1.0
    assert cosine_factor(25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_factor(100, 100, floor=0.1) == pytest.approx(0.1)
    assert cosine_factor(50, 100, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
