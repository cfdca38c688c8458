"""Fixtures shared by the test files (which never import one another): one torch thread, tiny pipelines."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """Run torch on one thread: the tests share a small machine, and one thread keeps their numbers repeatable.
    Use it per file with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shapes_pipe():
    """A tiny random ShapesDiTPipeline (`tests/pipelines.py`), the same weights every time."""
    from pipelines import shapes_pipeline

    return shapes_pipeline()
