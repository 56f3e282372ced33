"""SweepConfig warns when a vector-valued axis looks like one per-feature vector written
as separate values (a sweep n times too large)."""

from __future__ import annotations

import warnings

import pytest

from bitjax.config import SweepConfig


def test_n_scalars_on_a_vector_axis_warn():
    values = tuple(0.9 ** i for i in range(8))
    with pytest.warns(UserWarning, match=r"importance=\(vector,\)"):
        cfg = SweepConfig(n_features=8, n_hidden=2, importance=values)
    assert len(cfg.importance) == 8  # still eight settings: the warning changes nothing
    with pytest.warns(UserWarning, match=r"feature_probability=\(vector,\)"):
        SweepConfig(n_features=8, n_hidden=2, feature_probability=values)


def test_vectors_and_other_counts_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SweepConfig(n_features=8, n_hidden=2, importance=(tuple(0.9 ** i for i in range(8)),))
        SweepConfig(n_features=8, n_hidden=2, importance=(1.0, 0.5))
        # Small models sweep n values on purpose (two probabilities at n = 2).
        SweepConfig(n_features=2, n_hidden=1, feature_probability=(1.0, 0.5))
