"""Fixtures shared by the test modules."""

import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def X():
    """Return scikit-learn's digits scaled to [0, 1], one copy per test module."""
    data, _ = load_digits(return_X_y=True)
    return data / 16.0
