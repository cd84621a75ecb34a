"""Shared fixtures. MindSpore's execution mode is process-global: tests that care set it explicitly."""
import numpy as np
import pytest

from ms_transfer.context import set_context



@pytest.fixture(params=["graph", "pynative"])
def ms_mode(request):
    """Run the test in both MindSpore execution modes."""
    set_context(request.param, "CPU")
    yield request.param
    set_context("pynative", "CPU")


@pytest.fixture
def rng():
    return np.random.RandomState(0)
